"""Property tests of the random family: dropout, gaussian_dropout, spatial_dropout, dropblock, drop_path."""

import math

import pytest
import torch

import dropkit
from dropkit.masks import block_seed_rate, sample_block_keep_mask
from props import assert_compiles_fullgraph, assert_eval_identity, assert_keeps_dtype_and_format, binomial_tolerance

ACTIVATION_RANDOM = ["dropout", "gaussian_dropout", "spatial_dropout", "dropblock", "drop_path"]
SHAPES = [(4, 3, 7, 7), (2, 5, 8, 6), (3, 2, 1, 1), (1, 1, 5, 9), (2, 4, 16, 16)]


@pytest.mark.parametrize("name", ACTIVATION_RANDOM)
class TestCommon:
    def test_eval_identity_and_p0_identity(self, name):
        x = torch.randn(4, 3, 9, 9)
        assert_eval_identity(dropkit.create(name, p=0.3), x)
        y = dropkit.create(name, p=0.0).train()(x)
        assert torch.equal(y, x)

    @pytest.mark.parametrize("shape", SHAPES)
    def test_shape_kept(self, name, shape):
        x = torch.randn(*shape)
        assert dropkit.create(name, p=0.3)(x).shape == x.shape

    def test_dtype_and_channels_last(self, name):
        assert_keeps_dtype_and_format(dropkit.create(name, p=0.3), torch.randn(4, 6, 10, 10))

    def test_compiles_fullgraph(self, name):
        assert_compiles_fullgraph(dropkit.create(name, p=0.3), torch.randn(4, 6, 10, 10))

    def test_same_generator_seed_same_output(self, name):
        x = torch.randn(4, 6, 10, 10)
        outs = [dropkit.create(name, p=0.3, generator=torch.Generator().manual_seed(7))(x) for _ in range(2)]
        assert torch.equal(*outs)
        other = dropkit.create(name, p=0.3, generator=torch.Generator().manual_seed(8))(x)
        assert not torch.equal(outs[0], other)

    def test_gradient_is_mask_times_scale(self, name):
        # y is x times a mask that does not depend on x, so dy/dx = y/x elementwise (x has no zeros).
        x = (torch.rand(4, 6, 10, 10) + 0.5).requires_grad_()
        y = dropkit.create(name, p=0.3, generator=torch.Generator().manual_seed(3))(x)
        y.sum().backward()
        torch.testing.assert_close(x.grad, (y / x).detach())

    def test_nan_and_inf_pass_through(self, name):
        x = torch.randn(4, 6, 10, 10)
        x[0, 0, 0, 0] = float("nan")
        x[1, 1, 1, 1] = float("inf")
        y = dropkit.create(name, p=0.3)(x)
        assert torch.isnan(y[0, 0, 0, 0])
        finite = torch.isfinite(x)
        finite[1, 1, 1, 1] = False
        assert torch.isfinite(y[finite]).all()

    def test_bad_inputs(self, name):
        layer = dropkit.create(name, p=0.3)
        with pytest.raises(TypeError, match="floating-point"):
            layer(torch.ones(2, 3, 4, 4, dtype=torch.long))
        for bad in (-0.1, 1.5, float("nan")):
            with pytest.raises(ValueError, match="p must be in"):
                dropkit.create(name, p=bad)
            with pytest.raises(ValueError, match="p must be in"):
                layer.p = bad
        with pytest.raises(TypeError, match="p must be a real number"):
            dropkit.create(name, p="0.1")
        if torch.cuda.is_available():
            layer.generator = torch.Generator(device="cuda")
            with pytest.raises(ValueError, match="generator"):
                layer(torch.ones(2, 3, 4, 4))

    def test_expectation_preserved(self, name):
        # 64 samples × 200 draws: even drop_path (one draw per sample) has σ ≈ 0.006 on this ratio.
        x = torch.rand(64, 8, 8, 8) + 0.5
        layer = dropkit.create(name, p=0.3, generator=torch.Generator().manual_seed(0))
        total = sum(layer(x).mean().item() for _ in range(200)) / 200
        assert abs(total / x.mean().item() - 1) < 0.03


def test_generator_on_another_device_is_refused():
    # No second device here: a meta-device input stands in for "another device" than the CPU generator.
    layer = dropkit.create("dropout", p=0.5, generator=torch.Generator())
    with pytest.raises(ValueError, match="generator is on device"):
        layer(torch.ones(2, 3, device="meta"))


def test_generator_must_be_a_generator():
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        dropkit.create("dropblock", generator=3)


class TestDropout:
    def test_drop_fraction_and_scale(self):
        x = torch.ones(64, 32, 8, 8)
        for gen in (None, torch.Generator().manual_seed(0)):
            y = dropkit.dropout(x, 0.3, generator=gen)
            frac = (y == 0).float().mean().item()
            assert abs(frac - 0.3) < binomial_tolerance(x.numel(), 0.3)
            assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))

    def test_p_one_gives_zeros(self):
        assert torch.equal(dropkit.dropout(torch.ones(3, 4), 1.0, generator=torch.Generator()), torch.zeros(3, 4))


class TestGaussianDropout:
    def test_mean_one_variance_p_over_1_minus_p(self):
        y = dropkit.gaussian_dropout(torch.ones(200_000), 0.3, generator=torch.Generator().manual_seed(0))
        assert abs(y.mean().item() - 1) < 0.01
        assert abs(y.var().item() - 0.3 / 0.7) < 0.01

    def test_p_one_refused(self):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            dropkit.create("gaussian_dropout", p=1.0)


class TestSpatialDropout:
    @pytest.mark.parametrize("shape", [(16, 32, 20), (16, 32, 5, 6), (8, 16, 3, 4, 5)])
    def test_whole_channels_dropped(self, shape):
        x = torch.rand(*shape) + 0.1
        y = dropkit.spatial_dropout(x, 0.25, generator=torch.Generator().manual_seed(1))
        ratio = (y / x).flatten(2)
        per_channel = ratio[..., :1]
        assert torch.allclose(ratio, per_channel.expand_as(ratio))  # each (n, c) slice all zero or all scaled
        nonzero = per_channel[per_channel != 0]
        torch.testing.assert_close(nonzero, torch.full_like(nonzero, 1 / 0.75))
        frac = (per_channel == 0).float().mean().item()
        assert abs(frac - 0.25) < binomial_tolerance(shape[0] * shape[1], 0.25)

    @pytest.mark.parametrize("shape", [(3, 4), (1, 2, 3, 4, 5, 6)])
    def test_ambiguous_ndim_refused(self, shape):
        with pytest.raises(ValueError, match="spatial_dims"):
            dropkit.spatial_dropout(torch.ones(*shape), 0.1)

    def test_spatial_dims_mismatch_refused(self):
        with pytest.raises(ValueError, match="spatial_dims=2"):
            dropkit.create("spatial_dropout", spatial_dims=2)(torch.ones(2, 3, 4))


class TestDropBlock:
    @pytest.mark.parametrize("algorithm", ["sparse", "dense"])
    def test_drop_fraction_close_to_p(self, algorithm):
        # The paper's setting: (32, 16, 56, 56), b = 7, p = 0.1, no rescale: within ±0.03 of p (slightly below,
        # because overlapping blocks are counted once).
        x = torch.ones(32, 16, 56, 56)
        y = dropkit.dropblock(x, 0.1, 7, scale_by_keep=False, algorithm=algorithm,
                              generator=torch.Generator().manual_seed(0))
        frac = (y == 0).float().mean().item()
        assert 0.07 < frac <= 0.1

    def test_sparse_and_dense_samplers_agree(self):
        # Same Bernoulli field, different cost: mean drop fractions over many maps agree within noise.
        x = torch.ones(64, 64, 12, 10)
        gamma = block_seed_rate(0.2, (12, 10), (3, 4))
        fracs = {}
        for algorithm in ("sparse", "dense"):
            g = torch.Generator().manual_seed(5)
            keep = torch.stack([sample_block_keep_mask(x, (64, 64), (3, 4), gamma, g, algorithm) for _ in range(5)])
            fracs[algorithm] = 1 - keep.float().mean().item()
        assert abs(fracs["sparse"] - fracs["dense"]) < 0.006

    @pytest.mark.parametrize("hw,b", [((7, 7), 3), ((4, 8), 2), ((10, 5), 4), ((12, 9), 5)])
    def test_dropped_set_is_a_union_of_whole_blocks(self, hw, b):
        # Every dropped unit lies in some b×b square that is entirely dropped and inside the map.
        x = torch.ones(8, 4, *hw)
        y = dropkit.dropblock(x, 0.3, b, scale_by_keep=False, generator=torch.Generator().manual_seed(2))
        dropped = (y == 0).float().flatten(0, 1)[:, None]
        bh, bw = min(b, hw[0]), min(b, hw[1])
        full = torch.nn.functional.avg_pool2d(dropped, (bh, bw), stride=1) > 1 - 1e-6  # fully dropped squares
        covered = torch.nn.functional.max_pool2d(
            torch.nn.functional.pad(full.float(), (bw - 1, bw - 1, bh - 1, bh - 1)), (bh, bw), stride=1)
        assert torch.equal(covered, dropped)
        assert dropped.sum() > 0

    def test_block_larger_than_map_drops_whole_channels(self):
        x = torch.ones(64, 16, 5, 6)
        y = dropkit.dropblock(x, 0.25, 9, scale_by_keep=False, generator=torch.Generator().manual_seed(0))
        per_channel = y.flatten(2)
        assert torch.equal(per_channel.amin(-1), per_channel.amax(-1))
        frac = (per_channel[..., 0] == 0).float().mean().item()
        assert abs(frac - 0.25) < binomial_tolerance(64 * 16, 0.25)

    def test_rescale_is_exact_for_ones(self):
        x = torch.ones(8, 4, 16, 16)
        y = dropkit.dropblock(x, 0.2, 3, generator=torch.Generator().manual_seed(0))
        assert abs(y.sum().item() / x.sum().item() - 1) < 1e-5

    def test_share_channels(self):
        x = torch.ones(4, 6, 12, 12)
        y = dropkit.dropblock(x, 0.3, 3, share_channels=True, generator=torch.Generator().manual_seed(0))
        assert torch.equal(y, y[:, :1].expand_as(y))
        z = dropkit.dropblock(x, 0.3, 3, generator=torch.Generator().manual_seed(0))
        assert not torch.equal(z, z[:, :1].expand_as(z))

    def test_3d(self):
        x = torch.ones(8, 4, 6, 7, 8)
        y = dropkit.dropblock(x, 0.2, (2, 3, 3), scale_by_keep=False, generator=torch.Generator().manual_seed(0))
        frac = (y == 0).float().mean().item()
        assert 0.1 < frac <= 0.2

    def test_bad_block_size(self):
        for bad in (0, -3):
            with pytest.raises(ValueError, match="block_size"):
                dropkit.create("dropblock", block_size=bad)
        with pytest.raises(TypeError, match="block_size"):
            dropkit.dropblock(torch.ones(2, 3, 8, 8), 0.1, (3, 3, 3))

    def test_wrong_ndim(self):
        with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
            dropkit.create("dropblock")(torch.ones(3, 8, 8))

    def test_all_dropped_gives_zeros_not_nan(self):
        y = dropkit.dropblock(torch.ones(2, 2, 4, 4), 1.0, 4)
        assert torch.equal(y, torch.zeros_like(y))


class TestDropPath:
    def test_row_mode_drops_whole_samples(self):
        x = torch.rand(400, 3, 4) + 0.1
        y = dropkit.drop_path(x, 0.25, generator=torch.Generator().manual_seed(0))
        ratio = (y / x).flatten(1)
        assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))
        frac = (ratio[:, 0] == 0).float().mean().item()
        assert abs(frac - 0.25) < binomial_tolerance(400, 0.25)

    def test_batch_mode_shares_one_draw(self):
        x = torch.rand(8, 3) + 0.1
        outs = [dropkit.drop_path(x, 0.5, mode="batch", generator=torch.Generator().manual_seed(s)) for s in range(20)]
        for y in outs:
            assert torch.equal(y, torch.zeros_like(y)) or torch.allclose(y, 2 * x)
        assert any(torch.equal(y, torch.zeros_like(y)) for y in outs)

    def test_p_one_and_no_scaling(self):
        x = torch.rand(5, 3)
        assert torch.equal(dropkit.drop_path(x, 1.0), torch.zeros_like(x))
        y = dropkit.drop_path(x, 0.5, scale_by_keep=False, generator=torch.Generator().manual_seed(0))
        assert set((y / x).unique().tolist()) <= {0.0, 1.0}

    def test_bad_mode(self):
        with pytest.raises(ValueError, match="mode must be one of"):
            dropkit.create("drop_path", mode="sample")
