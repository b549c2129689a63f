"""CorrDrop (spatial SCD and channel CCD): properties from docs/methods/corrdrop_spatial.md and corrdrop_channel.md."""

from __future__ import annotations

import math

import pytest
import torch

import dropkit
from dropkit.methods.corrdrop import (
    CorrDropChannel,
    CorrDropSpatial,
    correlation_scores,
    corrdrop_channel,
    corrdrop_spatial,
)
from helpers.props import (
    assert_compiles_fullgraph,
    assert_eval_identity,
    assert_keeps_dtype_and_format,
    binomial_tolerance,
    positive_input,
    seeded,
)


class TestCorrelationScores:
    def test_orthogonal_units_score_zero(self):
        units = torch.eye(5).unsqueeze(0) * 3.0
        assert torch.allclose(correlation_scores(units), torch.zeros(1, 5), atol=1e-6)

    def test_identical_units_score_u_minus_one_over_u(self):
        units = torch.randn(1, 1, 7).expand(2, 4, 7)
        assert torch.allclose(correlation_scores(units), torch.full((2, 4), 3 / 4), atol=1e-6)

    def test_abs_cosine_mean_including_zero_diagonal(self):
        a = torch.randn(3, 6, 5, generator=seeded(1))
        an = a / a.norm(dim=2, keepdim=True)
        expected = ((an @ an.transpose(1, 2)).abs() - torch.eye(6)).abs().sum(2) / 6
        assert torch.allclose(correlation_scores(a), expected, atol=1e-5)

    def test_zero_unit_scores_zero_without_nan(self):
        units = torch.ones(1, 3, 4)
        units[0, 1] = 0
        f = correlation_scores(units)
        assert torch.isfinite(f).all() and f[0, 1] == 0
        assert f[0, 0].item() == pytest.approx(1 / 3, abs=1e-6)


class TestSpatial:
    def test_mask_constant_on_tiles_and_shared_by_channels(self):
        x = positive_input((6, 5, 12, 17))
        y = corrdrop_spatial(x, 0.4, block_size=4, rescale=False, generator=seeded(2))
        keep = (y != 0)
        assert (keep == keep[:, :1]).all()
        tiles = keep[:, 0]
        padded = torch.nn.functional.pad(tiles.float(), (0, 20 - 17, 0, 0))  # 17 → 5 tiles of 4 (last cropped)
        blocks = padded.view(6, 3, 4, 5, 4)
        first = blocks[:, :, :1, :, :1]
        valid = torch.ones(1, 3, 4, 5, 4, dtype=torch.bool)
        valid[..., 4, 1:] = False  # the cropped columns
        assert ((blocks == first) | ~valid).all()

    def test_drop_fraction_matches_p_on_divisible_maps(self):
        # H, W divisible by k: eq. 10 gives p' = p on the pooled grid.
        x = positive_input((2000, 2, 10, 10), seed=3)
        y = corrdrop_spatial(x, 0.3, block_size=5, rescale=False, generator=seeded(3))
        dropped = (y[:, 0] == 0).float().mean().item()
        assert abs(dropped - 0.3) < binomial_tolerance(2000 * 4, 0.3)

    def test_rate_adjustment_eq10_on_ragged_maps(self):
        h = w = 16
        k = 5  # H' = W' = 4, p' = p/25 · 256/16
        x = positive_input((3000, 2, h, w), seed=4)
        y = corrdrop_spatial(x, 0.25, block_size=k, rescale=False, generator=seeded(4))
        dropped_units = (y[:, 0, ::k, ::k] == 0).float().mean().item()
        expected = 0.25 / k**2 * (h * w) / 16
        assert abs(dropped_units - expected) < binomial_tolerance(3000 * 16, expected)

    def test_rescale_is_numel_over_sum_of_batch_mask(self):
        x = positive_input((8, 3, 10, 10), seed=5)
        y = corrdrop_spatial(x, 0.3, block_size=3, generator=seeded(5))
        keep = (y[:, :1] != 0).float()
        scale = keep.numel() / keep.sum()
        assert torch.allclose(y, x * keep * scale, rtol=1e-6)
        unscaled = corrdrop_spatial(x, 0.3, block_size=3, rescale=False, generator=seeded(5))
        assert torch.equal(unscaled != 0, y != 0)

    def test_refuses_huge_correlation_matrix(self):
        x = torch.rand(1, 2, 64, 64)
        with pytest.raises(ValueError, match="block_size ≥ 2"):
            corrdrop_spatial(x, 0.1, block_size=1)
        assert corrdrop_spatial(x, 0.1, block_size=2).shape == x.shape

    def test_block_larger_than_map_and_tiny_maps(self):
        for shape, k in [((2, 3, 3, 4), 5), ((3, 2, 1, 7), 3), ((2, 2, 1, 2), 4)]:
            x = positive_input(shape)
            y = corrdrop_spatial(x, 0.5, block_size=k, generator=seeded(6))
            assert y.shape == x.shape and torch.isfinite(y).all()

    def test_no_state_mutation(self):
        m = CorrDropSpatial(block_size=7)
        m(positive_input((2, 3, 4, 4)))
        assert m.block_size == 7 and m.p == 0.2


class TestChannel:
    def test_whole_channels_dropped(self):
        x = positive_input((8, 16, 5, 7), seed=7)
        y = corrdrop_channel(x, 0.5, rescale=False, generator=seeded(7))
        zero = (y == 0).flatten(2)
        assert (zero.all(2) | ~zero.any(2)).all()
        assert torch.equal(y[~zero.all(2)], x[~zero.all(2)])

    def test_drop_fraction_matches_p(self):
        x = positive_input((1000, 12, 3, 3), seed=8)
        y = corrdrop_channel(x, 0.2, rescale=False, generator=seeded(8))
        dropped = (y.flatten(2) == 0).all(2).float().mean().item()
        assert abs(dropped - 0.2) < binomial_tolerance(12000, 0.2)

    def test_rescale_keeps_expected_sum(self):
        x = torch.ones(400, 16, 2, 2)
        y = corrdrop_channel(x, 0.3, generator=seeded(9))
        assert y.sum().item() == pytest.approx(x.sum().item(), rel=1e-5)

    @pytest.mark.parametrize("mapping", ["softmax", "minmax"])
    def test_correlated_channels_dropped_less_often(self, mapping):
        # channels 0-2 identical (F = 1/2), channel 3 orthogonal to them (F = 0): U = 4 makes the effect visible.
        base = torch.zeros(4, 2, 2)
        base[:3, 0, 0] = 1.0
        base[3, 1, 1] = 1.0
        x = base.expand(6000, 4, 2, 2).contiguous()
        y = corrdrop_channel(x, 0.5, mapping=mapping, rescale=False, generator=seeded(10))
        dropped = (y.flatten(2) == 0).all(2).float().mean(0)
        tol = 2 * binomial_tolerance(6000, 0.5)
        assert dropped[:3].mean() + tol < dropped[3]

    def test_refuses_more_channels_than_max_units(self):
        with pytest.raises(ValueError, match="max_units"):
            corrdrop_channel(torch.rand(1, 9, 2, 2), 0.1, max_units=8)

    @pytest.mark.parametrize("shape", [(1, 2, 1, 1), (1, 5, 1, 1), (2, 3, 4, 9)])
    def test_shapes(self, shape):
        x = positive_input(shape)
        y = corrdrop_channel(x, 0.5, generator=seeded(11))
        assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("cls", [CorrDropSpatial, CorrDropChannel])
class TestModules:
    def test_card(self, cls):
        card = dropkit.get_card(cls.method_name)
        assert card.family == "guided" and card.kind == "activation"
        assert dict(card.schedule) == {"type": "linear_ramp", "param": "p", "steps": 200}
        assert card.defaults["p"] == 0.2 and card.taxonomy["theta"] == "p(θ|x)+time"

    def test_eval_and_p_zero_identity(self, cls):
        x = positive_input((2, 4, 10, 10))
        assert_eval_identity(cls(), x)
        assert cls(p=0.0)(x) is x

    def test_all_zero_input(self, cls):
        x = torch.zeros(3, 4, 10, 10)
        y = cls(generator=seeded(12))(x)
        assert torch.equal(y, x)

    def test_determinism(self, cls):
        x = positive_input((4, 6, 10, 10))
        assert torch.equal(cls(generator=seeded(13))(x), cls(generator=seeded(13))(x))

    def test_gradient_is_mask_times_scale(self, cls):
        x = positive_input((4, 6, 10, 10)).requires_grad_()
        y = cls(p=0.4, generator=seeded(14))(x)
        y.sum().backward()
        assert torch.allclose(x.grad, (y / x).detach(), rtol=1e-6)

    def test_compile_dtype_format(self, cls):
        x = positive_input((2, 4, 10, 10))
        assert_compiles_fullgraph(cls(), x)
        assert_keeps_dtype_and_format(cls(), x)

    def test_bad_arguments(self, cls):
        with pytest.raises(ValueError, match=cls.method_name):
            cls(p=1.2)
        with pytest.raises(ValueError, match="mapping"):
            cls(mapping="linear")
        with pytest.raises(TypeError, match="rescale"):
            cls(rescale=1)
        with pytest.raises(ValueError, match="max_units"):
            cls(max_units=0)
        with pytest.raises(ValueError, match="4-D"):
            cls()(torch.rand(2, 3, 4))
        with pytest.raises(TypeError, match="floating"):
            cls()(torch.ones(2, 3, 4, 4, dtype=torch.int64))


def test_spatial_block_size_validation():
    with pytest.raises(ValueError, match="block_size"):
        CorrDropSpatial(block_size=0)
    with pytest.raises(TypeError, match="block_size"):
        CorrDropSpatial(block_size=2.5)
    assert math.isclose(CorrDropSpatial().p, 0.2)


class TestFastPaths:
    """The reorganised scores and channel mask against straightforward references written here."""

    @pytest.mark.parametrize("shape", [(3, 64, 16), (2, 16, 64), (4, 7, 3)])
    def test_scores_match_normalised_gram_reference(self, shape):
        a = torch.randn(shape, generator=seeded(40))
        a[0, 1] = 0.0  # a zero unit
        a[1, 2] = a[1, 3] * 4.0  # parallel units
        norm = (a.pow(2).sum(2, keepdim=True) + 1e-8).sqrt()
        cos = ((a / norm) @ (a / norm).transpose(1, 2)).abs()
        expected = (cos.sum(2) - cos.diagonal(dim1=1, dim2=2)) / shape[1]
        torch.testing.assert_close(correlation_scores(a), expected, rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize("rescale", [True, False])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_channel_mask_matches_reference(self, rescale, dtype):
        from dropkit.masks import keep_fraction_scale
        from dropkit.methods.corrdrop import _protection_probability, _sample_drop

        x = torch.randn(6, 12, 5, 5, generator=seeded(41)).to(dtype)
        for p in (0.2, 0.9):
            y = corrdrop_channel(x, p, rescale=rescale, generator=seeded(42))
            scores = correlation_scores(x.flatten(2))
            drop = _sample_drop(_protection_probability(scores, "softmax"), p, seeded(42))
            keep = (~drop).to(dtype).view(6, 12, 1, 1)
            if rescale:
                keep = keep * keep_fraction_scale(keep, dtype)
            assert torch.equal(y, x * keep)


class TestSmallMapsAndRates:
    """A block as large as the map, the realised rate on ragged maps, one-unit inputs, sample independence."""

    @pytest.mark.parametrize("hw, k", [(8, 9), (5, 5), (6, 7), (2, 5), (3, 3)])
    def test_block_covering_the_map_still_drops(self, hw, k):
        # Before: a single pooled unit, always shielded by softmax = 1, so the layer was the identity.
        x = positive_input((400, 4, hw, hw), seed=hw)
        y = corrdrop_spatial(x, 0.3, block_size=k, rescale=False, generator=seeded(k))
        dropped = (y[:, 0] == 0).float().mean().item()
        assert dropped > 0.05

    def test_official_default_block_on_cifar_stage(self):
        # k = 9 on an 8×8 map: shrunk to 7 (2×2 pooled units), so the unit rate is eq. 10's p' = p·64/(49·4).
        x = positive_input((3000, 4, 8, 8), seed=31)
        y = corrdrop_spatial(x, 0.2, block_size=9, rescale=False, generator=seeded(31))
        units = (y[:, 0, ::7, ::7] == 0).float().mean().item()
        expected = 0.2 * 64 / (49 * 4)
        assert abs(units - expected) < binomial_tolerance(3000 * 4, expected)
        assert CorrDropSpatial(block_size=9).block_size == 9

    @pytest.mark.parametrize("correction", [False, True])
    def test_realised_position_rate_ragged_map(self, correction):
        # 8×8 with k = 5: p' = 0.2·64/(25·4) = 0.128 of the positions; corrected: 0.2.
        from dropkit.methods.corrdrop import realised_spatial_rate

        expected = realised_spatial_rate(0.2, 8, 8, 5, rate_correction=correction)
        assert expected == pytest.approx(0.2 if correction else 0.128)
        x = positive_input((4000, 3, 8, 8), seed=32)
        y = corrdrop_spatial(x, 0.2, block_size=5, rescale=False, rate_correction=correction, generator=seeded(32))
        dropped = (y[:, 0] == 0).float().mean().item()
        # positions of one sample are correlated (blocks): the tolerance is on the 4 units per sample
        assert abs(dropped - expected) < binomial_tolerance(4000 * 4, expected)

    def test_rate_correction_is_a_module_option(self):
        with pytest.raises(TypeError, match="rate_correction"):
            CorrDropSpatial(rate_correction="yes")
        assert "rate_correction=True" in repr(CorrDropSpatial(rate_correction=True))

    def test_one_unit_refused_with_softmax(self):
        with pytest.raises(ValueError, match="C = 1"):
            corrdrop_channel(positive_input((4, 1, 5, 5)), 0.3)
        with pytest.raises(ValueError, match="1×1"):
            corrdrop_spatial(positive_input((4, 3, 1, 1)), 0.3)
        # minmax has no such fixed point: the single channel is dropped at rate p
        x = positive_input((2000, 1, 3, 3), seed=33)
        y = corrdrop_channel(x, 0.3, mapping="minmax", rescale=False, generator=seeded(33))
        dropped = (y.flatten(1) == 0).all(1).float().mean().item()
        assert abs(dropped - 0.3) < binomial_tolerance(2000, 0.3)

    @pytest.mark.parametrize("fn", [corrdrop_spatial, corrdrop_channel])
    @pytest.mark.parametrize("bad", [math.nan, math.inf])
    def test_non_finite_sample_does_not_change_other_masks(self, fn, bad):
        x = positive_input((6, 8, 10, 10), seed=34)
        poisoned = x.clone()
        poisoned[2, 3, 4, 4] = bad
        clean = fn(x, 0.4, rescale=False, generator=seeded(35))
        dirty = fn(poisoned, 0.4, rescale=False, generator=seeded(35))
        others = [0, 1, 3, 4, 5]
        assert torch.equal(clean[others] == 0, dirty[others] == 0)
        assert torch.equal(clean[others], dirty[others])
        assert (dirty[2] == 0).any()  # the poisoned sample is still regularized

    def test_expected_drop_rate_is_per_sample(self):
        # p̂ = p·U/(U − Σ protect) per sample: each sample's expected dropped fraction is p, whatever the others.
        from dropkit.methods.corrdrop import _sample_drop

        protect = torch.tensor([[0.9, 0.05, 0.05, 0.0], [0.25, 0.25, 0.25, 0.25]]).repeat(5000, 1)
        drop = _sample_drop(protect, 0.3, seeded(36)).float()
        for row in (0, 1):
            rate = drop[row::2].mean().item()
            assert abs(rate - 0.3) < binomial_tolerance(5000 * 4, 0.3)


def test_card_ramp_runs_over_the_papers_200_steps():
    from torch import nn

    for name in ("corrdrop_spatial", "corrdrop_channel"):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), dropkit.create(name, p=0.2))
        ramp = dropkit.schedule.from_card(dropkit.get_card(name), model, total_steps=10_000)
        assert isinstance(ramp, dropkit.schedule.LinearRamp) and ramp.n_steps == 200
        for _ in range(101):
            ramp.step()
        assert model[1].p == pytest.approx(0.1)
        for _ in range(200):
            ramp.step()
        assert model[1].p == pytest.approx(0.2)
