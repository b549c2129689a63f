"""Weighted Channel Dropout: properties from docs/methods/weighted_channel_dropout.md."""

from __future__ import annotations

import pytest
import torch

import dropkit
from dropkit.methods.weighted_channel_dropout import WeightedChannelDropout, weighted_channel_dropout
from helpers.props import (
    assert_compiles_fullgraph,
    assert_eval_identity,
    assert_keeps_dtype_and_format,
    binomial_tolerance,
    positive_input,
    seeded,
)


def _kept_channels(y: torch.Tensor) -> torch.Tensor:
    """(N, C) bool: channel has any non-zero value."""
    return y.flatten(2).ne(0).any(dim=2)


class TestSelection:
    def test_wrs_keeps_exactly_round_ratio_channels_when_rng_keeps_all(self):
        x = positive_input((16, 20, 4, 5))
        for ratio, expected in [(0.8, 16), (0.5, 10), (0.33, 7), (0.01, 1)]:
            y = weighted_channel_dropout(x, 0.0, wrs_ratio=ratio, generator=seeded(1))
            assert (_kept_channels(y).sum(dim=1) == expected).all()

    def test_kept_channels_are_scaled_copies_and_dropped_are_zero(self):
        x = positive_input((8, 12, 3, 3))
        y = weighted_channel_dropout(x, 0.3, wrs_ratio=0.7, generator=seeded(2))
        kept = _kept_channels(y)
        ratio = y / x  # x > 0 everywhere
        # one α per sample, the same for every kept channel and position
        for n in range(x.shape[0]):
            r = ratio[n][kept[n]]
            assert torch.allclose(r, r.flatten()[0].expand_as(r), rtol=1e-6)
            assert (y[n][~kept[n]] == 0).all()

    def test_alpha_preserves_total_gap_mass_per_sample(self):
        x = positive_input((10, 16, 4, 4))
        y = weighted_channel_dropout(x, 0.4, wrs_ratio=0.6, generator=seeded(3))
        assert torch.allclose(y.mean(dim=(2, 3)).sum(1), x.mean(dim=(2, 3)).sum(1), rtol=1e-5)

    def test_keep_probability_increases_with_score(self):
        c = 8
        scores = torch.arange(1, c + 1, dtype=torch.float32)  # channel c has GAP score c + 1
        x = scores.view(1, c, 1, 1).expand(4000, c, 2, 2).contiguous()
        y = weighted_channel_dropout(x, 0.0, wrs_ratio=0.5, generator=seeded(4))
        freq = _kept_channels(y).float().mean(0)
        assert (freq[1:] - freq[:-1] > 0).all(), freq
        assert freq.sum().item() == pytest.approx(4.0)  # exactly 4 of 8 per sample

    def test_equal_scores_give_keep_probability_ratio_times_q(self):
        x = torch.ones(3000, 10, 2, 2)
        y = weighted_channel_dropout(x, 0.5, wrs_ratio=0.8, generator=seeded(5))
        rate = _kept_channels(y).float().mean().item()
        assert abs(rate - 0.8 * 0.5) < binomial_tolerance(30000, 0.4)
        # every channel equally likely under equal scores
        per_channel = _kept_channels(y).float().mean(0)
        assert (per_channel - 0.4).abs().max() < binomial_tolerance(3000, 0.4)

    def test_wrs_ratio_one_is_channel_dropout_with_keep_q(self):
        x = positive_input((2000, 8, 2, 2))
        y = weighted_channel_dropout(x, 0.25, wrs_ratio=1.0, generator=seeded(6))
        rate = _kept_channels(y).float().mean().item()
        assert abs(rate - 0.75) < binomial_tolerance(16000, 0.75)

    def test_ratio_one_and_p_zero_is_identity(self):
        x = positive_input((2, 4, 3, 3))
        assert weighted_channel_dropout(x, 0.0, wrs_ratio=1.0) is x

    def test_pure_wrs_module_is_active_at_p_zero(self):
        m = WeightedChannelDropout(p=0.0, wrs_ratio=0.5)
        assert m.active
        y = m(positive_input((4, 10, 2, 2)))
        assert (_kept_channels(y).sum(1) == 5).all()
        m.wrs_ratio = 1.0
        assert not m.active


class TestDegenerate:
    def test_all_zero_input_gives_zero_without_nan(self):
        x = torch.zeros(3, 6, 4, 4)
        y = weighted_channel_dropout(x, 0.2, generator=seeded(7))
        assert torch.equal(y, x)

    def test_zero_sample_next_to_normal_sample(self):
        x = positive_input((2, 6, 3, 3))
        x[0] = 0
        y = weighted_channel_dropout(x, 0.2, generator=seeded(8))
        assert torch.isfinite(y).all() and (y[0] == 0).all()
        assert torch.allclose(y[1].mean(dim=(1, 2)).sum(), x[1].mean(dim=(1, 2)).sum(), rtol=1e-5)

    def test_negative_inputs_stay_finite(self):
        x = torch.randn(4, 8, 5, 3, generator=seeded(9))
        assert torch.isfinite(weighted_channel_dropout(x, 0.1, generator=seeded(9))).all()

    def test_p_one_drops_everything(self):
        x = positive_input((2, 5, 2, 2))
        assert (weighted_channel_dropout(x, 1.0) == 0).all()

    @pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 7, 1, 1), (2, 3, 5, 9), (3, 4, 6), (2, 4, 2, 3, 3)])
    def test_shapes(self, shape):
        x = positive_input(shape)
        y = weighted_channel_dropout(x, 0.1, generator=seeded(10))
        assert y.shape == x.shape and torch.isfinite(y).all()


class TestModule:
    def test_registered_card(self):
        card = dropkit.get_card("weighted_channel_dropout")
        assert card.family == "guided" and card.kind == "activation"
        assert card.defaults["p"] == 0.1 and card.defaults["wrs_ratio"] == 0.8
        assert card.taxonomy["unit"] == "channel"

    def test_eval_identity(self):
        assert_eval_identity(WeightedChannelDropout(), positive_input((2, 8, 3, 3)))

    def test_generator_determinism(self):
        x = positive_input((4, 16, 3, 3))
        a = WeightedChannelDropout(generator=seeded(11))(x)
        b = WeightedChannelDropout(generator=seeded(11))(x)
        assert torch.equal(a, b)
        torch.manual_seed(5)
        c = WeightedChannelDropout()(x)
        torch.manual_seed(5)
        assert torch.equal(c, WeightedChannelDropout()(x))

    def test_gradient_is_the_multiplier(self):
        x = positive_input((4, 10, 3, 3)).requires_grad_()
        y = WeightedChannelDropout(p=0.3, wrs_ratio=0.6, generator=seeded(12))(x)
        y.sum().backward()
        assert torch.allclose(x.grad, (y / x).detach(), rtol=1e-6)

    def test_compile_dtype_format(self):
        x = positive_input((2, 8, 4, 4))
        assert_compiles_fullgraph(WeightedChannelDropout(), x)
        assert_keeps_dtype_and_format(WeightedChannelDropout(), x)

    def test_disabled_is_identity(self):
        m = WeightedChannelDropout()
        m.enabled = False
        x = positive_input((2, 4, 2, 2))
        assert m(x) is x


class TestBadArguments:
    @pytest.mark.parametrize("kwargs, err", [
        ({"p": 1.5}, ValueError), ({"p": -0.1}, ValueError), ({"p": "a"}, TypeError),
        ({"wrs_ratio": 0.0}, ValueError), ({"wrs_ratio": 1.2}, ValueError), ({"wrs_ratio": None}, TypeError),
        ({"generator": 3}, TypeError),
    ])
    def test_constructor(self, kwargs, err):
        with pytest.raises(err, match="weighted_channel_dropout"):
            WeightedChannelDropout(**kwargs)

    def test_inputs(self):
        with pytest.raises(TypeError, match="floating"):
            weighted_channel_dropout(torch.ones(2, 3, 4, 4, dtype=torch.long))
        with pytest.raises(ValueError, match="3-D or 4-D or 5-D"):
            weighted_channel_dropout(torch.ones(2, 3))
        with pytest.raises(TypeError):
            weighted_channel_dropout([1.0])

    def test_create_rejects_unknown_parameter(self):
        with pytest.raises(ValueError, match="q"):
            dropkit.create("weighted_channel_dropout", q=0.9)
