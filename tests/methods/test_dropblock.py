"""DropBlock: the random family's shared properties, drop fraction, block structure, samplers, 3-D maps."""

import pytest
import torch

import dropkit
from dropkit.masks import block_seed_rate, sample_block_keep_mask
from helpers.props import binomial_tolerance
from helpers.shared_properties import RandomFamilyProperties


@pytest.mark.parametrize("name", ["dropblock"])
class TestCommon(RandomFamilyProperties):
    pass


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


class TestTableSampler:
    """The table sampler: the dense sampler's draws, each map's mask looked up among all 2^V seed patterns."""

    @pytest.mark.parametrize("spatial,block", [((8, 8), (7, 7)), ((6, 9), (3, 7)), ((4, 5, 4), (3, 4, 3)),
                                               ((4, 4), (4, 4)), ((3, 4), (1, 1))])
    def test_same_noise_same_mask_as_dense(self, spatial, block):
        from dropkit.masks import block_keep_bool_from_noise, block_mask_plan, sample_uniform

        x = torch.ones(6, 5, *spatial)
        gamma = block_seed_rate(0.3, spatial, block)
        dense = block_mask_plan(x, (6, 5), block, gamma, "dense")
        table = block_mask_plan(x, (6, 5), block, gamma, "table")
        assert table[0] == "table" and table[2] == dense[2]
        noise = sample_uniform(dense[2], x, torch.Generator().manual_seed(1))
        want = block_keep_bool_from_noise(noise, spatial, (6, 5), block, gamma, dense)
        got = block_keep_bool_from_noise(noise, spatial, (6, 5), block, gamma, table)
        assert got.dtype == torch.bool and got.shape == (6, 5, *spatial)
        assert torch.equal(got, want)
        assert not want.all() and want.any()  # the test saw both kept and dropped units

    def test_auto_takes_the_table_on_maps_just_larger_than_the_block(self):
        from dropkit.masks import block_mask_plan

        x = torch.ones(32, 128, 8, 8)
        gamma = block_seed_rate(0.1, (8, 8), (7, 7))
        assert block_mask_plan(x, (32, 128), (7, 7), gamma)[0] == "table"
        big = torch.ones(2, 2, 56, 56)
        assert block_mask_plan(big, (2, 2), (7, 7), block_seed_rate(0.1, (56, 56), (7, 7)))[0] == "sparse"

    def test_drop_fraction_matches_the_dense_sampler(self):
        x = torch.ones(256, 64, 8, 8)
        fracs = {}
        for algorithm in ("table", "dense"):
            y = dropkit.dropblock(x, 0.2, 7, scale_by_keep=False, algorithm=algorithm,
                                  generator=torch.Generator().manual_seed(3))
            fracs[algorithm] = (y == 0).float().mean().item()
        # 16 384 maps, each with V = 4 seed positions: the fractions agree within binomial noise.
        assert abs(fracs["table"] - fracs["dense"]) < 0.01
        assert 0.1 < fracs["table"] <= 0.2

    def test_too_many_valid_positions_is_refused_by_name(self):
        with pytest.raises(ValueError, match="algorithm='dense' or 'sparse'"):
            dropkit.dropblock(torch.ones(2, 2, 20, 20), 0.1, 3, algorithm="table")

    def test_compiles_fullgraph_with_changing_batch(self):
        from helpers.props import assert_compiles_fullgraph

        assert_compiles_fullgraph(dropkit.create("dropblock", p=0.2, algorithm="table").train(),
                                  torch.rand(4, 16, 8, 8))

    def test_recompute_gives_the_same_output_and_gradient(self):
        x = torch.randn(4, 8, 8, 8, requires_grad=True)
        outs = []
        for recompute in (False, True):
            y = dropkit.dropblock(x, 0.3, 7, recompute=recompute, generator=torch.Generator().manual_seed(4))
            (grad,) = torch.autograd.grad((y * y).sum(), x)
            outs.append((y.detach(), grad))
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_uint8_backed_bool_masks_match_plain_comparisons():
    # The CPU fast paths write a bool mask through uint8 and read it back through uint8; the values must be
    # exactly those of the plain comparison and cast.
    from dropkit.masks import _bool_to, _zero_to_bool_

    words = torch.randint(0, 3, (64, 9, 7), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    want = words == 0
    got = _zero_to_bool_(words.clone())
    assert got.dtype == torch.bool and torch.equal(got, want)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert torch.equal(_bool_to(got, dtype), want.to(dtype))
