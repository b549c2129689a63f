"""The DropBlock seed-count bound: valid (an upper bound of the Binomial count), tight enough, and cheap."""

from __future__ import annotations

import math
import time

import pytest
import torch
from scipy.stats import binom

from dropkit.masks import _SEED_COUNT_TAIL, _max_seed_count, block_seed_rate


def _exact_quantile(n: int, prob: float, tail: float) -> int:
    """Smallest K with P(Binomial(n, prob) > K) < tail (SciPy's inverse survival function, then a check)."""
    k = int(binom.isf(tail, n, prob))
    while binom.sf(k, n, prob) >= tail:
        k += 1
    while k > 0 and binom.sf(k - 1, n, prob) < tail:
        k -= 1
    return k


@pytest.mark.parametrize("n, prob", [(64, 0.01), (144, 0.004), (1000, 0.02), (3600, 0.05), (20_000, 0.01),
                                     (122 ** 3, 2e-5)])
def test_bound_is_at_least_the_exact_quantile_and_not_loose(n, prob):
    k = _max_seed_count(n, prob, _SEED_COUNT_TAIL)
    exact = _exact_quantile(n, prob, _SEED_COUNT_TAIL)
    assert k >= exact
    sd = math.sqrt(n * prob * (1 - prob))
    assert k <= exact + 2.0 * sd + 10  # Bernstein is within a few σ of the exact quantile


@pytest.mark.parametrize("n, prob", [(100, 0.05), (5000, 0.002), (122 ** 3, block_seed_rate(0.1, (128,) * 3, (7,) * 3))])
def test_bound_exceeds_every_empirical_count(n, prob):
    k = _max_seed_count(n, prob, _SEED_COUNT_TAIL)
    counts = torch.binomial(torch.full((200_000,), float(n)), torch.full((200_000,), prob),
                            generator=torch.Generator().manual_seed(0))
    assert counts.max().item() <= k


def test_edge_rates():
    assert _max_seed_count(50, 0.0, _SEED_COUNT_TAIL) == 0
    assert _max_seed_count(50, 1.0, _SEED_COUNT_TAIL) == 50
    assert _max_seed_count(3, 0.9, _SEED_COUNT_TAIL) == 3


def test_cheap_and_cached_for_a_128_cubed_volume():
    # Before: an O(n·prob) Python loop on every DropBlock call (here ~360 000 steps, about a second).
    _max_seed_count.cache_clear()
    start = time.perf_counter()
    k = _max_seed_count(122 ** 3, 0.2, _SEED_COUNT_TAIL)
    assert time.perf_counter() - start < 0.05
    assert k >= 0.2 * 122 ** 3
    _max_seed_count(122 ** 3, 0.2, _SEED_COUNT_TAIL)
    assert _max_seed_count.cache_info().hits >= 1


@pytest.mark.parametrize("n, prob", [(122 ** 3, 2e-6), (10 ** 7, 1e-6), (49, 0.3), (200, 0.1)])
def test_exact_branch_matches_scipy(n, prob):
    # small bounds are searched exactly (the sparse sampler's cost depends on K): equal to the exact quantile
    assert _max_seed_count(n, prob, _SEED_COUNT_TAIL) == _exact_quantile(n, prob, _SEED_COUNT_TAIL)
