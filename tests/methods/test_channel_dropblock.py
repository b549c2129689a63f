"""Channel DropBlock: properties from docs/methods/channel_dropblock.md (nominal 1/(1 − γ) normalisation)."""

from __future__ import annotations

import math

import pytest
import torch

import dropkit
from dropkit.methods.channel_dropblock import (
    ChannelDropBlock,
    _box3_argmax,
    _box3_sum,
    _seed_similarity,
    channel_dropblock,
)
from helpers.props import (
    assert_compiles_fullgraph,
    assert_eval_identity,
    assert_keeps_dtype_and_format,
    binomial_tolerance,
    positive_input,
    seeded,
)


def _blob_maps(h: int, w: int, peaks: list[tuple[int, int]]) -> torch.Tensor:
    """(C, H, W) maps, each a 3×3 blob (centre 1, ring 0.5) at an interior peak: its smoothed argmax is the centre."""
    maps = torch.zeros(len(peaks), h, w)
    for c, (r, q) in enumerate(peaks):
        maps[c, r - 1:r + 2, q - 1:q + 2] = 0.5
        maps[c, r, q] = 1.0
    return maps


def _dropped(y: torch.Tensor) -> torch.Tensor:
    return (y.flatten(2) == 0).all(2)


class TestMaxActivation:
    def test_seed_row_distances_on_non_square_map(self):
        # Regression for the official `loc / w` bug: rows and columns must both count on an H ≠ W map.
        maps = _blob_maps(8, 13, [(1, 1), (1, 4), (3, 1), (6, 11)])
        sim = _seed_similarity(maps.unsqueeze(0), torch.tensor([0]), "max_activation")
        assert torch.equal(sim, -torch.tensor([[0.0, 9.0, 4.0, 125.0]]))

    def test_box_sum_is_nine_times_the_papers_average_pooling(self):
        x = torch.randn(2, 3, 5, 8, generator=seeded(16))
        pooled = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
        assert torch.allclose(_box3_sum(x) / 9, pooled, atol=1e-6)

    def test_drops_the_seed_pattern_group(self):
        peaks = [(2, 2)] * 4 + [(9, 14)] * 4
        x = _blob_maps(12, 17, peaks).expand(200, 8, 12, 17).contiguous()
        y = channel_dropblock(x, 0.5, generator=seeded(1))  # ⌊0.5·8⌋ = 4
        drop = _dropped(y)
        first, second = drop[:, :4].all(1) & ~drop[:, 4:].any(1), drop[:, 4:].all(1) & ~drop[:, :4].any(1)
        assert (first | second).all()
        assert first.any() and second.any()

    def test_all_channels_same_peak_no_nan_exact_count(self):
        x = _blob_maps(6, 6, [(2, 3)] * 10).expand(300, 10, 6, 6).contiguous()
        y = channel_dropblock(x, 0.2, generator=seeded(2))
        assert torch.isfinite(y).all()
        assert (_dropped(y).sum(1) == 2).all()
        # random tie-breaking: every channel equally likely to be dropped
        freq = _dropped(y).float().mean(0)
        assert (freq - 0.2).abs().max() < binomial_tolerance(300, 0.2)

    def test_ties_all_follows_official_threshold_with_guard(self):
        # all peaks equal: the official code would NaN and drop everything; the guard drops the seed only
        same = _blob_maps(6, 6, [(2, 3)] * 10).expand(50, 10, 6, 6).contiguous()
        assert (_dropped(channel_dropblock(same, 0.2, ties="all", generator=seeded(3))).sum(1) == 1).all()
        # a tied group larger than ⌊γC⌋ is dropped whole
        peaks = [(2, 2)] * 5 + [(9, 14)] * 5
        x = _blob_maps(12, 17, peaks).expand(100, 10, 12, 17).contiguous()
        drop = _dropped(channel_dropblock(x, 0.2, ties="all", generator=seeded(4)))
        assert (drop.sum(1) == 5).all()


class TestBilinear:
    def test_duplicated_channels_dropped_together(self):
        a = torch.zeros(6, 6)
        a[:, :3] = torch.rand(6, 3, generator=seeded(5)) + 0.1  # left half
        b = torch.zeros(6, 6)
        b[:, 3:] = torch.rand(6, 3, generator=seeded(6)) + 0.1  # right half: orthogonal to a
        x = torch.stack([a] * 3 + [b] * 3).expand(200, 6, 6, 6).contiguous()
        y = channel_dropblock(x, 0.5, metric="bilinear", generator=seeded(7))
        drop = _dropped(y)
        assert ((drop[:, :3].all(1) & ~drop[:, 3:].any(1)) | (drop[:, 3:].all(1) & ~drop[:, :3].any(1))).all()

    def test_similarity_is_cosine_of_seed_row(self):
        x = torch.randn(3, 7, 4, 5, generator=seeded(8))
        seed = torch.tensor([0, 3, 6])
        feats = x.flatten(2)
        feats = feats / feats.norm(dim=2, keepdim=True)
        expected = torch.stack([feats[n] @ feats[n, seed[n]] for n in range(3)])
        assert torch.allclose(_seed_similarity(x, seed, "bilinear"), expected, atol=1e-5)

    def test_zero_channels_no_nan(self):
        x = torch.zeros(4, 6, 3, 3)
        y = channel_dropblock(x, metric="bilinear", generator=seeded(9))
        assert torch.isfinite(y).all()


class TestCommon:
    @pytest.mark.parametrize("metric", ["max_activation", "bilinear"])
    def test_kept_channels_scaled_by_nominal_rate(self, metric):
        x = positive_input((6, 20, 5, 7))
        y = channel_dropblock(x, 0.25, metric=metric, generator=seeded(10))
        drop = _dropped(y)
        assert (drop.sum(1) == 5).all()
        assert torch.allclose(y[~drop], x[~drop] / 0.75, rtol=1e-6)

    def test_default_p_per_metric(self):
        assert ChannelDropBlock().p == 0.2
        assert ChannelDropBlock(metric="bilinear").p == 0.05
        assert ChannelDropBlock(p=0.1, metric="bilinear").p == 0.1
        x = positive_input((4, 40, 3, 3))
        assert (_dropped(channel_dropblock(x, metric="bilinear", generator=seeded(11))).sum(1) == 2).all()

    def test_at_least_the_seed_is_dropped(self):
        x = positive_input((5, 4, 3, 3))
        assert (_dropped(channel_dropblock(x, 0.1, generator=seeded(12))).sum(1) == 1).all()

    @pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 4, 4), (1, 6, 1, 1), (3, 5, 2, 9)])
    def test_degenerate_shapes(self, shape):
        x = positive_input(shape)
        for metric in ("max_activation", "bilinear"):
            y = channel_dropblock(x, metric=metric, generator=seeded(13))
            assert y.shape == x.shape and torch.isfinite(y).all()

    def test_card(self):
        card = dropkit.get_card("channel_dropblock")
        assert card.family == "guided" and card.kind == "activation" and card.taxonomy["unit"] == "channel"
        assert card.defaults["p"] is None and card.defaults["metric"] == "max_activation"

    def test_eval_and_p_zero_identity(self):
        x = positive_input((2, 8, 4, 4))
        assert_eval_identity(ChannelDropBlock(), x)
        assert ChannelDropBlock(p=0.0)(x) is x

    def test_determinism(self):
        x = positive_input((4, 16, 5, 5))
        for ties in ("random", "all"):
            a = ChannelDropBlock(ties=ties, generator=seeded(14))(x)
            assert torch.equal(a, ChannelDropBlock(ties=ties, generator=seeded(14))(x))

    def test_gradient(self):
        x = positive_input((3, 10, 4, 4)).requires_grad_()
        y = ChannelDropBlock(generator=seeded(15))(x)
        y.sum().backward()
        assert torch.allclose(x.grad, (y / x).detach(), rtol=1e-6)

    @pytest.mark.parametrize("kwargs", [{}, {"metric": "bilinear"}, {"ties": "all"}])
    def test_compile_dtype_format(self, kwargs):
        x = positive_input((2, 10, 6, 6))
        assert_compiles_fullgraph(ChannelDropBlock(**kwargs), x)
        assert_keeps_dtype_and_format(ChannelDropBlock(**kwargs), x)

    @pytest.mark.parametrize("kwargs, err", [
        ({"p": 1.0}, ValueError), ({"p": -0.2}, ValueError), ({"p": "x"}, TypeError),
        ({"metric": "cosine"}, ValueError), ({"ties": "first"}, ValueError),
    ])
    def test_bad_arguments(self, kwargs, err):
        with pytest.raises(err, match="channel_dropblock"):
            ChannelDropBlock(**kwargs)

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="4-D"):
            channel_dropblock(torch.rand(2, 3))
        with pytest.raises(TypeError, match="floating"):
            channel_dropblock(torch.ones(1, 2, 3, 3, dtype=torch.int64))
        m = ChannelDropBlock()
        with pytest.raises(ValueError, match="p"):
            m.p = 1.0
        assert math.isclose(m.p, 0.2)


class TestFastPaths:
    """The vectorised fast paths against straightforward references written here."""

    @pytest.mark.parametrize("shape", [(3, 5, 7, 9), (2, 4, 1, 6), (2, 3, 6, 1), (1, 2, 1, 1), (4, 6, 16, 16)])
    @pytest.mark.parametrize("kind", ["randn", "relu", "integers"])
    def test_box3_argmax_equals_argmax_of_box_sums(self, shape, kind):
        x = torch.randn(shape, generator=seeded(20))
        if kind == "relu":
            x = torch.relu(x)  # many exact ties (zero maps, equal sums)
        elif kind == "integers":
            x = x.mul(2).round()
        expected = _box3_sum(x).flatten(2).argmax(dim=2)
        for xx in (x, x.contiguous(memory_format=torch.channels_last), x.to(torch.bfloat16)):
            reference = expected if xx.dtype == torch.float32 else _box3_sum(xx).flatten(2).argmax(dim=2)
            row, col = _box3_argmax(xx)
            assert torch.equal(row * shape[3] + col, reference)

    def test_box3_argmax_non_finite_maps(self):
        x = torch.randn(2, 3, 4, 5, generator=seeded(21))
        x[0, 0] = -math.inf  # every box sum −inf: the first position, as argmax
        x[0, 1, 2, 3] = math.inf  # +inf: its 3×3 neighbourhood wins, first in row-major order
        x[1, 2, 1, 1] = math.nan  # NaN counts as the largest
        row, col = _box3_argmax(x)
        assert (row[0, 0].item(), col[0, 0].item()) == (0, 0)
        assert (row[0, 1].item(), col[0, 1].item()) == (1, 2)
        assert (row[1, 2].item(), col[1, 2].item()) == (0, 0)

    @staticmethod
    def _reference(x, p, generator):
        """Alg. 1 with random tie-breaking as two sorts: shuffle by u, then a stable sort by similarity."""
        n, c = x.shape[:2]
        k = min(c, max(1, math.floor(p * c)))
        seed = (torch.rand((n,), generator=generator) * c).long().clamp_max(c - 1)  # uniform seed channel
        sim = _seed_similarity(x, seed, "max_activation")
        ranked = sim.clone()
        ranked[torch.arange(n), seed] = math.inf
        shuffle = torch.rand((n, c), generator=generator).argsort(dim=1)
        order = ranked.gather(1, shuffle).argsort(dim=1, descending=True, stable=True)
        drop = torch.zeros(n, c, dtype=torch.bool)
        drop[torch.arange(n).unsqueeze(1), shuffle.gather(1, order[:, :k])] = True
        return x * ((~drop).float() / (1 - p)).view(n, c, 1, 1)

    @pytest.mark.parametrize("seed", range(6))
    def test_random_ties_topk_matches_two_sort_reference(self, seed):
        # Blob maps: many channels share a peak, so the random tie-breaking decides most of the group.
        peaks = [(2, 2), (2, 2), (2, 3), (5, 5), (5, 5), (5, 5), (2, 2), (6, 1)] * 2
        x = _blob_maps(8, 8, peaks).expand(5, 16, 8, 8).contiguous()
        x = x + 0.01 * torch.rand(x.shape, generator=seeded(seed)).round()
        for p in (0.2, 0.5):
            y = channel_dropblock(x, p, generator=seeded(seed))
            assert torch.equal(y, self._reference(x, p, seeded(seed)))
