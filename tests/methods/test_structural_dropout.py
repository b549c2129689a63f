"""Structural Dropout (eval widths, cut distribution, per-batch cut, gradient, seeding)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dropkit
from dropkit.methods.structural_dropout import StructuralDropout, structural_dropout
from helpers.props import assert_compiles_fullgraph, assert_eval_identity, binomial_tolerance


def _widths(layer: StructuralDropout, x: torch.Tensor, calls: int) -> torch.Tensor:
    out = []
    for _ in range(calls):
        layer(x)
        out.append(int(layer.last_width))
    return torch.tensor(out)


def test_eval_identity_and_eval_width() -> None:
    x = torch.randn(3, 8)
    layer = StructuralDropout(0.5)
    assert_eval_identity(layer, x)
    layer.eval_size = 3
    layer.eval()
    out = layer(x)
    assert torch.allclose(out[:, :3], x[:, :3] * 8 / 3) and torch.equal(out[:, 3:], torch.zeros(3, 5))
    narrow = StructuralDropout(0.5, eval_size=3, zero_pad=False).eval()
    assert torch.allclose(narrow(x), x[:, :3] * 8 / 3)
    layer.eval_size = 8
    assert torch.equal(layer(x), x)


def test_p_zero_is_identity_without_rng() -> None:
    layer = StructuralDropout(0.0)
    x = torch.randn(4, 6)
    state = torch.get_rng_state()
    assert torch.equal(layer(x), x)
    assert torch.equal(torch.get_rng_state(), state)


def test_p_one_always_cuts_and_values_are_the_scaled_prefix() -> None:
    torch.manual_seed(0)
    layer = StructuralDropout(1.0, lower_bound=2)
    x = torch.randn(5, 10)
    for _ in range(50):
        out = layer(x)
        c = int(layer.last_width)
        assert 2 <= c <= 9
        assert torch.allclose(out[:, :c], x[:, :c] * 10 / c) and torch.equal(out[:, c:], torch.zeros(5, 10 - c))
    truncating = StructuralDropout(1.0, zero_pad=False)
    for _ in range(20):
        out = truncating(x)
        c = out.shape[1]
        assert 1 <= c <= 9 and torch.allclose(out, x[:, :c] * 10 / c)


def test_cut_is_uniform_on_the_range_and_full_width_has_probability_1_minus_p() -> None:
    torch.manual_seed(1)
    h, p, calls = 9, 0.6, 6000
    widths = _widths(StructuralDropout(p), torch.ones(2, h), calls)
    full = float((widths == h).float().mean())
    assert abs(full - (1 - p)) < binomial_tolerance(calls, 1 - p)
    cuts = widths[widths < h]
    counts = torch.bincount(cuts, minlength=h)[1:h].double()
    expected = cuts.numel() / (h - 1)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 26.1  # χ²(7 dof) 0.999 quantile 24.3; a small margin


def test_lower_bound_and_step_restrict_the_cuts() -> None:
    torch.manual_seed(2)
    widths = _widths(StructuralDropout(1.0, lower_bound=3, step=4), torch.ones(1, 16), 400)
    assert set(widths.tolist()) == {3, 7, 11, 15}
    with pytest.raises(ValueError, match="lower_bound"):  # no cut left (the reference's randrange raises too)
        StructuralDropout(1.0, lower_bound=16)(torch.ones(2, 16))


def test_one_cut_per_batch_on_features_and_channels() -> None:
    torch.manual_seed(3)
    layer = StructuralDropout(1.0)
    for x in (torch.ones(32, 12), torch.ones(16, 12, 3, 3)):
        for _ in range(10):
            out = layer(x)
            kept = (out != 0).flatten(2) if x.ndim == 4 else (out != 0).unsqueeze(-1)
            per_row = kept.all(-1).sum(1)  # number of kept features/channels per sample
            assert torch.all(per_row == per_row[0]) and int(per_row[0]) == int(layer.last_width)


def test_seeding_and_generator_reproduce_the_cut_sequence() -> None:
    x = torch.ones(2, 20)
    torch.manual_seed(7)
    a = _widths(StructuralDropout(0.7), x, 30)
    torch.manual_seed(7)
    b = _widths(StructuralDropout(0.7), x, 30)
    assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(_widths(StructuralDropout(0.7, generator=g1), x, 30),
                       _widths(StructuralDropout(0.7, generator=g2), x, 30))


def test_weights_beyond_the_cut_get_zero_gradient() -> None:
    torch.manual_seed(4)
    lin = nn.Linear(5, 12)
    layer = StructuralDropout(1.0)
    out = layer(lin(torch.randn(8, 5)))
    c = int(layer.last_width)
    out.pow(2).sum().backward()
    assert torch.equal(lin.weight.grad[c:], torch.zeros(12 - c, 5))
    assert lin.weight.grad[:c].abs().sum() > 0


def test_gradcheck_at_a_fixed_cut() -> None:
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: structural_dropout(t, training=False, eval_size=4)[0], (x,))


def test_eval_size_survives_state_dict() -> None:
    layer = StructuralDropout(0.5, eval_size=5)
    layer(torch.randn(2, 9))
    fresh = StructuralDropout(0.5)
    fresh.load_state_dict(layer.state_dict())
    assert fresh.eval_size == 5 and fresh.num_features == 9
    with pytest.raises(ValueError, match=r"\[1, 9\]"):
        fresh.eval_size = 10


def test_disabled_layer_is_identity_in_training() -> None:
    layer = StructuralDropout(1.0, eval_size=2)
    layer.enabled = False
    x = torch.randn(3, 7)
    assert torch.equal(layer(x), x)


def test_bf16_channels_last_and_compile() -> None:
    torch.manual_seed(5)
    layer = StructuralDropout(1.0)
    x = torch.randn(4, 8, 5, 5)
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16
    assert layer(x.contiguous(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)
    assert_compiles_fullgraph(layer, x)
    layer.eval_size = 3
    layer.eval()
    assert_compiles_fullgraph(layer, x)


def test_registered_card() -> None:
    card = dropkit.get_card("structural_dropout")
    assert card.kind == "stateful" and card.family == "structural" and card.taxonomy["unit"] == "prefix"
    assert card.defaults["p"] == 0.5 and card.defaults["lower_bound"] == 1
    assert isinstance(dropkit.create("structural_dropout", p=1.0), StructuralDropout)


@pytest.mark.parametrize("kwargs, error", [
    ({"p": 1.2}, ValueError), ({"lower_bound": 0}, ValueError), ({"step": 0}, ValueError),
    ({"eval_size": 0}, ValueError), ({"eval_size": 9, "num_features": 8}, ValueError), ({"eval_size": 2.5}, TypeError),
    ({"dim": 0}, ValueError), ({"zero_pad": "yes"}, TypeError),
])
def test_bad_arguments(kwargs, error) -> None:
    with pytest.raises(error):
        StructuralDropout(**kwargs)


def test_bad_inputs() -> None:
    layer = StructuralDropout(0.5)
    with pytest.raises(ValueError, match="dim"):
        layer(torch.randn(5))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 3, dtype=torch.long))
    layer(torch.randn(2, 6))
    with pytest.raises(ValueError, match="expects 6"):
        layer(torch.randn(2, 7))


class TestAxisAndRanges:
    """The feature axis is the producer's; eval_size and lower_bound must fit the inferred width."""

    def test_attach_after_conv_refuses_a_spatial_dim(self):
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        dropkit.attach(model, "structural_dropout", at="0", dim=-1, p=1.0)
        with pytest.raises(ValueError, match="dim=-1"):
            model(torch.rand(2, 3, 8, 8))  # W = 8 = C: before, the width axis was cut silently

    def test_attach_after_linear_on_tokens_refuses_dim_1(self):
        model = nn.Sequential(nn.Linear(6, 4))
        dropkit.attach(model, "structural_dropout", at="0", p=1.0)
        with pytest.raises(ValueError, match="dim=1"):
            model(torch.rand(2, 4, 6))  # (B, T, C) with T = C = 4
        ok = nn.Sequential(nn.Linear(6, 4))
        dropkit.attach(ok, "structural_dropout", at="0", p=1.0, dim=-1)
        assert ok(torch.rand(2, 4, 6)).shape == (2, 4, 4)

    def test_explicit_producer(self):
        with pytest.raises(ValueError, match="producer"):
            StructuralDropout(producer="rnn")
        layer = StructuralDropout(1.0, producer="linear")
        assert layer(torch.rand(3, 5)).shape == (3, 5)  # (N, H): axis 1 is the last axis

    def test_slim_refuses_the_wrong_axis(self):
        from dropkit.slim import slim

        conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), StructuralDropout(dim=-1), nn.Flatten(), nn.Linear(64, 2))
        conv.train()(torch.rand(2, 1, 4, 4))
        with pytest.raises(ValueError, match="axis 1"):
            slim(conv.eval(), 2)
        tokens = nn.Sequential(nn.Linear(6, 4), StructuralDropout(), nn.Linear(4, 2))
        tokens.train()(torch.rand(2, 4, 6))
        with pytest.raises(ValueError, match="dim=-1"):
            slim(tokens.eval(), 2)

    def test_eval_size_above_the_inferred_width_is_refused(self):
        layer = StructuralDropout(0.5, eval_size=12)
        with pytest.raises(ValueError, match="eval_size"):
            layer(torch.rand(2, 8))

    def test_lower_bound_at_or_above_the_width_is_refused(self):
        for lower_bound in (8, 20):
            with pytest.raises(ValueError, match="lower_bound"):
                StructuralDropout(1.0, lower_bound=lower_bound)(torch.rand(2, 8))
            with pytest.raises(ValueError, match="lower_bound"):
                structural_dropout(torch.rand(2, 8), 1.0, lower_bound=lower_bound)
            with pytest.raises(ValueError, match="lower_bound"):
                StructuralDropout(1.0, lower_bound=lower_bound, num_features=8)
        with pytest.raises(ValueError, match="lower_bound"):
            structural_dropout(torch.rand(2, 8), 1.0, lower_bound=0)
