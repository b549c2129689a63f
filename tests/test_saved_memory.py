"""Memory kept for backward: at most one byte per element for every method, and (almost) nothing with
``recompute=True``, whose mask is rebuilt in backward bit for bit. Byte counts are exact (saved-tensor hooks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dropkit
from dropkit.methods.spectral_dropout import hard_threshold
from dropkit.saved_memory import saved_bytes, saved_bytes_per_input_byte, training_step_saved_bytes
from helpers.props import assert_compiles_fullgraph

ACTIVATION_METHODS = [c.name for c in dropkit.methods(kind="activation")]
RECOMPUTABLE = ("dropout", "gaussian_dropout", "dropblock")
# The CPU generator's state (Mersenne Twister) is 5056 bytes, CUDA's 16: all a recomputed mask keeps, plus 0-d scalars.
STATE_BYTES = torch.default_generator.get_state().numel()


def _x(shape=(4, 16, 12, 12), seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ACTIVATION_METHODS)
def test_every_method_keeps_at_most_one_byte_per_element(name):
    layer = dropkit.create(name).train()
    x = _x()
    # One byte per element (a bool mask) plus small per-channel/per-sample tensors.
    assert saved_bytes(layer, x) <= x.numel() + 4 * 1024, f"{name} keeps a float-sized mask for backward"


@pytest.mark.parametrize("name", RECOMPUTABLE)
def test_recompute_keeps_nothing_of_activation_size(name):
    x = _x((8, 32, 16, 16))  # 256 KiB of float32
    layer = dropkit.create(name, recompute=True).train()
    assert saved_bytes(layer, x) <= STATE_BYTES + 256
    stored = saved_bytes_per_input_byte(dropkit.create(name, recompute=False).train(), x)
    assert 0.24 <= stored <= 1.0  # the stored path does keep a mask: the counter sees it


@pytest.mark.parametrize("name, kwargs", [
    ("dropout", {"p": 0.3}),
    ("gaussian_dropout", {"p": 0.4}),
    ("dropblock", {"algorithm": "sparse", "block_size": 3}),
    ("dropblock", {"algorithm": "dense", "block_size": 3}),
    ("dropblock", {"share_channels": True, "block_size": (2, 3)}),
    ("dropblock", {"scale_by_keep": False, "block_size": 3}),
])
@pytest.mark.parametrize("explicit_generator", [False, True])
def test_recompute_gives_bit_identical_output_and_gradient(name, kwargs, explicit_generator):
    x = _x()
    grad = _x(seed=1)
    results = []
    for recompute in (False, True):
        generator = torch.Generator().manual_seed(7) if explicit_generator else None
        torch.manual_seed(11)
        layer = dropkit.create(name, generator=generator, recompute=recompute, **kwargs).train()
        xi = x.clone().requires_grad_()
        y = layer(xi)
        y.backward(grad)
        results.append((y.detach(), xi.grad))
    (y0, g0), (y1, g1) = results
    assert torch.equal(y0, y1)
    assert torch.equal(g0, g1)
    assert not torch.equal(y0, x)  # something was dropped or perturbed: the comparison is not vacuous


def test_recompute_3d_dropblock_and_bf16():
    x = _x((2, 4, 6, 8, 8)).to(torch.bfloat16)
    results = []
    for recompute in (False, True):
        torch.manual_seed(3)
        xi = x.clone().requires_grad_()
        y = dropkit.dropblock(xi, 0.2, 3, recompute=recompute)
        y.float().sum().backward()
        results.append((y.detach(), xi.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_recompute_does_not_advance_the_generator_twice():
    # Backward replays from a private generator: the caller's generator moves by one draw per forward only.
    g_a, g_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x = _x().requires_grad_()
    dropkit.dropout(x, 0.5, generator=g_a, recompute=True).sum().backward()
    dropkit.dropout(x.detach(), 0.5, generator=g_b)
    assert torch.equal(g_a.get_state(), g_b.get_state())


@pytest.mark.parametrize("name", RECOMPUTABLE)
def test_recompute_compiles_fullgraph_and_matches_eager(name):
    torch._dynamo.reset()
    layer = dropkit.create(name, recompute=True).train()
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    for batch in (3, 5):  # a second batch size: dynamic shapes must trace too
        x = _x((batch, 8, 10, 10))
        outs = []
        for fn in (compiled, layer):
            torch.manual_seed(batch)
            xi = x.clone().requires_grad_()
            y = fn(xi)
            y.sum().backward()
            outs.append((y.detach(), xi.grad))
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert_compiles_fullgraph(dropkit.create(name, recompute=True).train(), _x())


@pytest.mark.parametrize("name", RECOMPUTABLE)
@pytest.mark.parametrize("bad", [1, "yes", None])
def test_recompute_must_be_bool(name, bad):
    with pytest.raises(TypeError, match="recompute"):
        dropkit.create(name, recompute=bad)


def test_gaussian_dropout_recomputes_by_default():
    assert dropkit.create("gaussian_dropout").recompute is True


def test_hard_threshold_matches_hardshrink_and_keeps_a_bool_mask():
    coef = _x((64, 33))
    grad = _x((64, 33), seed=2)
    a, b = coef.clone().requires_grad_(), coef.clone().requires_grad_()
    ya, yb = hard_threshold(a, 0.5), F.hardshrink(b, 0.5)
    ya.backward(grad)
    yb.backward(grad)
    assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)
    assert saved_bytes(lambda t: hard_threshold(t, 0.5), coef) == coef.numel()


def test_training_step_saved_bytes_counts_activations_not_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3))
    x = torch.randn(5, 10)
    # Linear 1 keeps the input (5×10), ReLU its output (5×20), Linear 2 the same output: one storage.
    assert training_step_saved_bytes(model, x) == (5 * 10 + 5 * 20) * 4


def test_keep_fraction_scale_counts_a_bool_mask_like_its_float_copy():
    from dropkit.masks import keep_fraction_scale

    keep = torch.rand(3, 5, 7, 9, generator=torch.Generator().manual_seed(4)) < 0.8
    assert torch.equal(keep_fraction_scale(keep), keep_fraction_scale(keep.float()))
    assert keep_fraction_scale(torch.zeros(4, dtype=torch.bool)).item() == 0.0  # all dropped: 0, not inf


def test_two_recomputed_draws_on_one_input_stay_distinct_under_aot_autograd():
    # AOT autograd merges calls with equal arguments; two dropout layers on one tensor must still draw two masks,
    # and each gradient must use its own.
    def two_layers(x):
        return dropkit.dropout(x, 0.5, recompute=True), dropkit.dropout(x, 0.5, recompute=True)

    torch._dynamo.reset()
    x = _x((16, 32)).requires_grad_()
    a, b = torch.compile(two_layers, fullgraph=True, backend="aot_eager")(x)
    assert not torch.equal(a, b)
    (2 * a + b).sum().backward()
    torch.testing.assert_close(x.grad, ((2 * a + b) / x).detach())
