"""CorrDrop (spatial SCD and channel CCD): properties from spec §5(e) with resolutions.md A2's equations."""

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
from props import (
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
        for shape, k in [((2, 3, 3, 4), 5), ((1, 1, 1, 1), 5), ((3, 2, 1, 7), 3)]:
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

    @pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 5, 1, 1), (2, 3, 4, 9)])
    def test_shapes(self, shape):
        x = positive_input(shape)
        y = corrdrop_channel(x, 0.5, generator=seeded(11))
        assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("cls", [CorrDropSpatial, CorrDropChannel])
class TestModules:
    def test_card(self, cls):
        card = dropkit.get_card(cls.method_name)
        assert card.family == "guided" and card.kind == "activation"
        assert dict(card.schedule) == {"type": "linear_ramp", "param": "p"}
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
