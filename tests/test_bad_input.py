"""A bad-input matrix over the public API: every case gets a clear error naming the argument, or a finite output
of the right shape. NaN/Inf inputs may pass NaN through (as ``nn.Dropout`` does) but must not reach the other
samples of the batch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import dropkit
from dropkit.attach import dropkit_layers

ACTIVATION = [c.name for c in dropkit.methods(kind="activation")]
SEED = 0


def _x(shape, seed=SEED, dtype=torch.float32):
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) + 0.1).to(dtype)


def _layer(name, **params):
    return dropkit.create(name, **params).train()


def _assert_ok(y, x):
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y.float()).all()


def _accepted_or_named(fn, x, *names):
    """Run ``fn(x)``: a finite output of x's shape, or a ValueError/TypeError whose message names one of ``names``."""
    try:
        y = fn(x)
    except (ValueError, TypeError) as err:
        assert any(n in str(err) for n in names), f"unclear error: {err}"
        return None
    _assert_ok(y, x)
    return y


# -- the drop rate -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ACTIVATION)
@pytest.mark.parametrize("p, err", [(1.5, ValueError), (-0.1, ValueError), (math.nan, ValueError),
                                    ("abc", TypeError), (None, TypeError)])
def test_bad_p_is_refused_naming_p(name, p, err):
    if p is None and name == "channel_dropblock":
        pytest.skip("p=None means the metric's official default there")
    with pytest.raises(err, match=r"\bp\b"):
        dropkit.create(name, p=p)


# -- the input tensor ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ACTIVATION)
@pytest.mark.parametrize("shape", [(16,), (2, 4, 3, 3, 3, 3)], ids=["1-D", "6-D"])
def test_wrong_ndim(name, shape):
    """Methods defined on (N, C, H, W) refuse other ranks naming the shape; element-wise ones may accept them."""
    _accepted_or_named(_layer(name), _x(shape), "shape", "-D", "ndim", "dim")


@pytest.mark.parametrize("name", ACTIVATION)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_integer_and_bool_tensors_are_refused(name, dtype):
    with pytest.raises(TypeError, match="float"):
        _layer(name)(torch.ones(2, 8, 6, 6, dtype=dtype))


@pytest.mark.parametrize("name", ACTIVATION)
@pytest.mark.parametrize("shape", [(0, 8, 6, 6), (1, 8, 6, 6), (3, 8, 5, 9), (2, 8, 2, 2)],
                         ids=["empty-batch", "batch-of-1", "h-ne-w", "2x2"])
def test_degenerate_shapes(name, shape):
    x = _x(shape)
    _assert_ok(_layer(name)(x), x)


@pytest.mark.parametrize("name", ACTIVATION)
def test_one_by_one_maps(name):
    _accepted_or_named(_layer(name), _x((3, 8, 1, 1)), "1×1", "map", "H", "size")


@pytest.mark.parametrize("name", ACTIVATION)
@pytest.mark.parametrize("kind", ["zeros", "constant-channels"])
def test_all_zero_and_constant_channels(name, kind):
    x = torch.zeros(3, 8, 6, 6) if kind == "zeros" else torch.arange(8.0).view(1, 8, 1, 1).expand(3, 8, 6, 6).clone()
    _assert_ok(_layer(name)(x), x)


@pytest.mark.parametrize("name", ACTIVATION)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(name, dtype):
    x = _x((3, 8, 6, 6), dtype=dtype)
    _assert_ok(_layer(name)(x), x)


@pytest.mark.parametrize("name", ACTIVATION)
@pytest.mark.parametrize("layout", ["channels_last", "non-contiguous"])
def test_layouts(name, layout):
    x = _x((3, 8, 6, 6))
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = _x((3, 8, 6, 12))[..., ::2]
        assert not x.is_contiguous()
    _assert_ok(_layer(name)(x), x)


@pytest.mark.parametrize("name", ACTIVATION)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_sample_does_not_contaminate_the_others(name, bad):
    x = _x((4, 8, 6, 6))
    x[1, 2, 3, 3] = bad
    y = _layer(name)(x)
    assert y.shape == x.shape
    assert torch.isfinite(y[[0, 2, 3]]).all()


# -- block sizes ---------------------------------------------------------------------------------------------
BLOCKY = [n for n in ("dropblock", "corrdrop_spatial", "cutout") if n in ACTIVATION]


@pytest.mark.parametrize("name", BLOCKY)
@pytest.mark.parametrize("size", [0, -3, 2.5])
def test_bad_block_sizes_are_refused(name, size):
    key = "size" if name == "cutout" else "block_size"
    with pytest.raises((ValueError, TypeError), match=key):
        dropkit.create(name, **{key: size})


@pytest.mark.parametrize("name", BLOCKY)
def test_oversized_blocks(name):
    key = "size" if name == "cutout" else "block_size"
    x = _x((3, 8, 6, 6))
    _accepted_or_named(_layer(name, **{key: 50}), x, key)


# -- registry and attach -------------------------------------------------------------------------------------
def test_unknown_method_is_refused_naming_it():
    with pytest.raises(ValueError, match="dropoutt"):
        dropkit.create("dropoutt")


@pytest.mark.parametrize("name", ["dropout", "dropblock", "focused_dropout", "corrdrop_channel"])
def test_unknown_parameter_is_refused_naming_it(name):
    with pytest.raises((TypeError, ValueError), match="blok_size"):
        dropkit.create(name, blok_size=3)


def _mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_attach_to_a_missing_name():
    with pytest.raises(ValueError, match="'3'"):
        dropkit.attach(_mlp(), "dropout", at="3")


@pytest.mark.parametrize("at", [None, 1, 2.5, [1], ["0", None]])
def test_attach_at_of_the_wrong_type_names_at(at):
    with pytest.raises(TypeError, match="`at`"):
        dropkit.attach(_mlp(), "dropout", at=at)


def test_attach_twice_and_remove_twice():
    model = _mlp()
    before = [n for n, _ in model.named_modules()]
    first = dropkit.attach(model, "dropout", at="0")
    second = dropkit.attach(model, "dropout", at="0")
    assert len(dropkit_layers(model)) == 2
    assert model(torch.rand(3, 4)).shape == (3, 2)
    second.remove()
    second.remove()  # idempotent
    first.remove()
    first.remove()
    assert [n for n, _ in model.named_modules()] == before


def test_mc_dropout_of_a_name():
    with pytest.raises(TypeError, match="model"):
        dropkit.mc_dropout("model")


# -- methods with labels or a wrapped layer (edge inputs that crashed deep in torch) -------------------------
def _ns_model(num_classes=None):
    model = nn.Sequential(nn.Linear(4, 6), dropkit.create("ns_dropout", num_classes=num_classes)).train()
    dropkit.feed_validation(model, _x((6, 4)), torch.tensor([0, 1, 0, 1, 0, 1]))
    return model


@pytest.mark.parametrize("num_classes", [None, 2])
def test_ns_dropout_empty_batch_under_supervise(num_classes):
    model = _ns_model(num_classes)
    with dropkit.supervise(model, torch.zeros(0, dtype=torch.long)):
        y = model(torch.rand(0, 4))
    assert y.shape == (0, 6)
    assert int(model[1].num_updates) == 0


def test_ns_dropout_label_out_of_range_names_the_targets():
    model = _ns_model(2)
    with pytest.raises(ValueError, match="targets"):
        with dropkit.supervise(model, torch.tensor([0, 1, 5, 1])):
            model(torch.rand(4, 4))
    with pytest.raises(ValueError, match="validation labels"):
        dropkit.feed_validation(model, _x((3, 4)), torch.tensor([0, 7, 1]))


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("layer, shape", [(nn.Linear(4, 3), (0, 4)), (nn.Conv2d(3, 4, 3), (0, 3, 8, 8)),
                                          (nn.Linear(4, 3), (4,))], ids=["linear-empty", "conv-empty", "linear-1d"])
def test_dropconnect_empty_and_unbatched(per_sample, layer, shape):
    wrapped = dropkit.create("dropconnect", layer=layer, per_sample=per_sample).train()
    x = torch.rand(shape)
    assert wrapped(x).shape == layer(x).shape


@pytest.mark.parametrize("per_sample", [False, True])
def test_dropconnect_conv_accepts_unbatched_input_like_its_layer(per_sample):
    conv = nn.Conv2d(3, 4, 3)
    wrapped = dropkit.create("dropconnect", layer=conv, per_sample=per_sample, p=0.5,
                             generator=torch.Generator().manual_seed(1)).train()
    x = torch.rand(3, 8, 8)
    y = wrapped(x)
    assert y.shape == conv(x).shape == (4, 6, 6) and torch.isfinite(y).all()


@pytest.mark.parametrize("layer, shape", [(nn.Linear(4, 3), (2, 5)), (nn.Conv2d(3, 4, 3), (2, 5, 8, 8)),
                                          (nn.Conv2d(3, 4, 3), (2, 3, 8))])
def test_dropconnect_wrong_shape_names_x(layer, shape):
    with pytest.raises(ValueError, match="x must be"):
        dropkit.create("dropconnect", layer=layer).train()(torch.rand(shape))
