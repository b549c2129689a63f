"""Neuron-Specific Dropout (docs/methods/ns_dropout.md properties, plus the protocol's bad-input cases)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dropkit
from dropkit.methods.ns_dropout import NSDropout, ns_dropout_mask
from dropkit.protocol import feed_validation, supervise
from helpers.props import assert_compiles_fullgraph


def _update(layer: NSDropout, x, y, xv, yv) -> torch.Tensor:
    """One protocol round on a bare layer: validation batch, then the supervised training forward."""
    layer.train()
    feed_validation(layer, xv, yv)
    with supervise(layer, y):
        return layer(x)


def _designed(h: int = 10, far: dict[int, float] | None = None):
    """Train and validation batches whose per-class means agree except on the units in ``far``."""
    torch.manual_seed(0)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    base = torch.randn(3, h)
    x = base[y].clone()
    xv = base[y].clone()
    for j, shift in (far or {}).items():
        x[:, j] += shift
    return x, y, xv, y.clone()


@pytest.mark.parametrize("p, h", [(0.2, 20), (0.25, 16), (0.29, 100), (0.5, 7), (0.05, 10)])
def test_exactly_floor_p_h_units_dropped(p: float, h: int) -> None:
    torch.manual_seed(1)
    layer = NSDropout(p)
    _update(layer, torch.randn(32, h), torch.randint(0, 4, (32,)), torch.randn(16, h), torch.randint(0, 4, (16,)))
    expected = int(p * h + 1e-9)
    assert int((layer.mask == 0).sum()) == expected
    assert int(layer.num_updates) == 1


def test_dropped_units_are_the_k_largest_discrepancies() -> None:
    x, y, xv, yv = _designed(10, far={3: 5.0, 7: 3.0, 1: 1.0})
    layer = NSDropout(0.2)  # k = 2
    _update(layer, x, y, xv, yv)
    assert torch.equal((layer.mask == 0).nonzero().flatten(), torch.tensor([3, 7]))
    single = NSDropout(0.1)  # k = 1: the one far-off unit
    _update(single, x, y, xv, yv)
    assert torch.equal((single.mask == 0).nonzero().flatten(), torch.tensor([3]))


def test_ties_go_to_the_lower_index() -> None:
    x, y, xv, yv = _designed(8, far={6: 2.0, 2: 2.0, 4: 2.0})
    layer = NSDropout(0.25)  # k = 2 among three equal discrepancies
    _update(layer, x, y, xv, yv)
    assert torch.equal((layer.mask == 0).nonzero().flatten(), torch.tensor([2, 4]))


def test_sample_to_val_mean_distance_matches_hand_computation() -> None:
    torch.manual_seed(2)
    x, y = torch.randn(12, 6), torch.tensor([0, 1, 2] * 4)
    xv, yv = torch.randn(9, 6), torch.tensor([0, 1, 2] * 3)
    val_means = torch.stack([xv[yv == c].mean(0) for c in range(3)])
    d = (x - val_means[y]).abs().mean(0)
    mask = ns_dropout_mask(x, y, xv, yv, p=0.34, distance="sample_to_val_mean")
    assert torch.equal((mask == 0).nonzero().flatten().sort().values, d.topk(2).indices.sort().values)
    # the class-mean reading of the same data
    tr_means = torch.stack([x[y == c].mean(0) for c in range(3)])
    d2 = (tr_means - val_means).abs().sum(0)
    mask2 = ns_dropout_mask(x, y, xv, yv, p=0.34)
    assert torch.equal((mask2 == 0).nonzero().flatten().sort().values, d2.topk(2).indices.sort().values)


def test_deterministic_and_rng_untouched() -> None:
    torch.manual_seed(3)
    x, y = torch.randn(20, 12), torch.randint(0, 3, (20,))
    xv, yv = torch.randn(10, 12), torch.randint(0, 3, (10,))
    state = torch.get_rng_state()
    a, b = NSDropout(0.25), NSDropout(0.25)
    out_a = _update(a, x, y, xv, yv)
    out_b = _update(b, x, y, xv, yv)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.mask, b.mask) and torch.equal(out_a, out_b)


def test_eval_keeps_the_last_training_mask_and_validation_in_eval_does_not_change_it() -> None:
    x, y, xv, yv = _designed(10, far={5: 4.0})
    layer = NSDropout(0.1)
    _update(layer, x, y, xv, yv)
    mask = layer.mask.clone()
    layer.eval()
    z = torch.randn(4, 10)
    assert torch.equal(layer(z), z * mask)
    feed_validation(layer, torch.randn(6, 10) * 10, yv)  # eval: a validation pass alone never changes the mask
    assert torch.equal(layer(z), z * mask)
    assert torch.equal(layer.mask, mask)


def test_before_any_update_the_layer_is_the_identity() -> None:
    z = torch.randn(3, 5)
    layer = NSDropout(0.4)
    assert torch.equal(layer(z), z)
    layer.eval()
    assert torch.equal(layer(z), z)


def test_gradient_is_the_mask_and_none_reaches_validation_inputs() -> None:
    x, y, xv, yv = _designed(10, far={2: 4.0, 8: 3.0})
    layer = NSDropout(0.2)
    _update(layer, x, y, xv, yv)
    xg = torch.randn(5, 10, requires_grad=True)
    layer(xg).sum().backward()
    assert torch.equal(xg.grad, layer.mask.expand(5, 10))
    xv_g = xv.clone().requires_grad_(True)
    layer.train()
    feed_validation(layer, xv_g, yv)
    assert xv_g.grad is None and layer._val_stats is not None
    assert not layer._val_stats[0].requires_grad


def test_training_forward_without_validation_or_outside_supervise_keeps_the_mask() -> None:
    x, y, xv, yv = _designed(10, far={4: 4.0})
    layer = NSDropout(0.1)
    _update(layer, x, y, xv, yv)
    mask = layer.mask.clone()
    with supervise(layer, y):  # no fresh validation batch: the statistics were consumed
        layer(x + torch.randn_like(x))
    layer(torch.randn(6, 10))  # no protocol at all: falls back to the stored mask
    assert torch.equal(layer.mask, mask) and int(layer.num_updates) == 1


def test_strict_mode_refuses_training_outside_the_protocol() -> None:
    layer = NSDropout(0.1, strict=True)
    with pytest.raises(RuntimeError, match="supervise"):
        layer(torch.randn(4, 10))
    layer.eval()
    layer(torch.randn(4, 10))  # eval needs no labels


def test_no_shared_class_keeps_the_mask_and_counts_it() -> None:
    layer = NSDropout(0.2)
    x, y, xv, yv = _designed(10, far={0: 5.0, 9: 5.0})
    _update(layer, x, y, xv, yv)
    mask = layer.mask.clone()
    _update(layer, torch.randn(4, 10), torch.tensor([0, 0, 1, 1]), torch.randn(3, 10), torch.tensor([2, 2, 3]))
    assert torch.equal(layer.mask, mask)
    assert int(layer.num_skipped) == 1 and int(layer.num_updates) == 1


def test_a_batch_with_one_class_uses_that_class() -> None:
    torch.manual_seed(4)
    x, xv = torch.zeros(5, 6), torch.zeros(3, 6)
    x[:, 2] = 3.0
    layer = NSDropout(0.2)  # k = 1
    _update(layer, x, torch.full((5,), 1), xv, torch.full((3,), 1))
    assert torch.equal((layer.mask == 0).nonzero().flatten(), torch.tensor([2]))


def test_classes_missing_from_validation_are_ignored() -> None:
    """Unit 1 differs only on class 2, which the validation batch lacks: unit 4 (off on class 0) is dropped."""
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    x = torch.zeros(6, 6)
    x[y == 2, 1] = 50.0
    x[y == 0, 4] = 1.0
    xv, yv = torch.zeros(4, 6), torch.tensor([0, 0, 1, 1])
    layer = NSDropout(1 / 6)
    _update(layer, x, y, xv, yv)
    assert torch.equal((layer.mask == 0).nonzero().flatten(), torch.tensor([4]))


def test_class_frequency_weighting_and_squared_distance_change_the_choice() -> None:
    y = torch.tensor([0] * 9 + [1])
    x = torch.zeros(10, 4)
    x[y == 0, 0] = 1.0     # small shift on the frequent class
    x[y == 1, 1] = 3.0     # large shift on the rare class
    xv, yv = torch.zeros(4, 4), torch.tensor([0, 0, 1, 1])
    uniform = ns_dropout_mask(x, y, xv, yv, p=0.25)
    freq = ns_dropout_mask(x, y, xv, yv, p=0.25, class_weighting="frequency")
    assert uniform[1] == 0 and freq[0] == 0
    x2 = torch.zeros(4, 4)
    x2[:, 0] = torch.tensor([2.0, 2.0, 0.0, 0.0])  # abs: 2 + 0, squared: 4 + 0
    x2[:, 2] = torch.tensor([1.5, 1.5, 1.5, 1.5])  # abs: 3,     squared: 4.5
    y2 = torch.tensor([0, 0, 1, 1])
    assert ns_dropout_mask(x2, y2, xv, yv, p=0.25)[2] == 0
    assert ns_dropout_mask(x2, y2, xv, yv, p=0.25, squared=True)[2] == 0
    x2[:, 0] = torch.tensor([2.5, 2.5, 0.0, 0.0])  # abs 2.5 < 3 but squared 6.25 > 4.5
    assert ns_dropout_mask(x2, y2, xv, yv, p=0.25)[2] == 0
    assert ns_dropout_mask(x2, y2, xv, yv, p=0.25, squared=True)[0] == 0


def test_rescale_option() -> None:
    x, y, xv, yv = _designed(10, far={1: 2.0, 2: 2.0})
    layer = NSDropout(0.2, rescale=True)
    _update(layer, x, y, xv, yv)
    z = torch.randn(3, 10)
    assert torch.allclose(layer(z), z * layer.mask * (10 / 8))


def test_conv_features_drop_whole_channels_by_spatial_mean() -> None:
    torch.manual_seed(5)
    y = torch.tensor([0, 1, 0, 1])
    x = torch.randn(4, 6, 5, 5)
    xv = x.clone()
    x[:, 3] += 2.0
    layer = NSDropout(1 / 6)
    out = _update(layer, x, y, xv, y)
    assert torch.equal((layer.mask == 0).nonzero().flatten(), torch.tensor([3]))
    assert torch.equal(out[:, 3], torch.zeros(4, 5, 5)) and torch.equal(out[:, :3], x[:, :3])


def test_state_dict_round_trip_including_a_lazy_layer() -> None:
    x, y, xv, yv = _designed(10, far={6: 3.0, 0: 2.0})
    layer = NSDropout(0.2)
    _update(layer, x, y, xv, yv)
    fresh = NSDropout(0.2)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh.mask, layer.mask)
    assert int(fresh.num_updates) == 1 and int(fresh.mask_changes) == 2
    fresh.eval()
    z = torch.randn(2, 10)
    assert torch.equal(fresh(z), z * layer.mask)


def test_mask_changes_are_counted() -> None:
    layer = NSDropout(0.1)
    x, y, xv, yv = _designed(10, far={2: 3.0})
    _update(layer, x, y, xv, yv)
    x2, y2, xv2, yv2 = _designed(10, far={7: 3.0})
    _update(layer, x2, y2, xv2, yv2)
    assert int(layer.last_mask_changes) == 2 and int(layer.mask_changes) == 3


def test_bf16_channels_last_and_compile() -> None:
    torch.manual_seed(6)
    layer = NSDropout(0.25, num_classes=3)
    x = torch.randn(6, 8, 4, 4)
    _update(layer, x, torch.randint(0, 3, (6,)), torch.randn(6, 8, 4, 4), torch.randint(0, 3, (6,)))
    out = layer(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    xc = x.contiguous(memory_format=torch.channels_last)
    assert layer(xc).is_contiguous(memory_format=torch.channels_last)
    assert_compiles_fullgraph(layer, x)
    layer.eval()
    assert_compiles_fullgraph(layer, x)


def test_num_classes_given_avoids_inference_and_matches() -> None:
    torch.manual_seed(7)
    x, y = torch.randn(12, 9), torch.randint(0, 4, (12,))
    xv, yv = torch.randn(8, 9), torch.randint(0, 4, (8,))
    assert torch.equal(ns_dropout_mask(x, y, xv, yv, 0.3), ns_dropout_mask(x, y, xv, yv, 0.3, num_classes=6))


def test_registered_card() -> None:
    card = dropkit.get_card("ns_dropout")
    assert card.kind == "stateful" and card.family == "aware" and card.defaults["p"] == 0.2
    assert isinstance(dropkit.create("ns_dropout", p=0.3), NSDropout)


@pytest.mark.parametrize("kwargs, error", [
    ({"p": 1.5}, ValueError), ({"distance": "cosine"}, ValueError), ({"class_weighting": "x"}, ValueError),
    ({"dim": 0}, ValueError), ({"dim": 1.0}, TypeError), ({"num_classes": 0}, ValueError),
    ({"rescale": 1}, TypeError), ({"num_features": 0}, ValueError),
])
def test_bad_arguments(kwargs, error) -> None:
    with pytest.raises(error):
        NSDropout(**kwargs)


def test_bad_inputs() -> None:
    layer = NSDropout(0.2)
    with pytest.raises(ValueError, match="at least 2-D"):
        layer(torch.randn(5))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 3, dtype=torch.long))
    layer(torch.randn(2, 10))
    with pytest.raises(ValueError, match="10"):
        layer(torch.randn(2, 11))
    with pytest.raises(ValueError, match="targets"):
        with supervise(layer, torch.tensor([0, 1, 2])):
            layer(torch.randn(2, 10))
    with pytest.raises(ValueError, match="non-negative"):
        feed_validation(layer, torch.randn(2, 10), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="dim"):
        NSDropout(0.2, dim=3)(torch.randn(2, 10))
