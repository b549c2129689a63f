"""The confirmation's statistics: Holm's step-down, the paired test with its interval, the detectable effect."""

import math

import numpy as np
import pytest
from scipy import stats

from dropkit.lab.advisor.statistics import detectable_effect, holm, paired_comparison


def test_holm_matches_the_textbook_example():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_keeps_order_and_skips_nan():
    adjusted = holm([0.5, math.nan, 0.2])
    assert adjusted[0] == pytest.approx(0.5) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.4)
    assert holm([0.9, 0.8]) == [1.0, 1.0]
    assert holm([]) == []


def test_holm_rejects_exactly_what_the_step_down_rejects():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.1, size=rng.integers(1, 6)).tolist()
        adjusted = holm(p)
        order = np.argsort(p)
        rejected = set()
        for rank, i in enumerate(order):  # the procedure as stated: stop at the first p > α/(m − rank)
            if p[i] > 0.05 / (len(p) - rank):
                break
            rejected.add(int(i))
        assert {i for i, a in enumerate(adjusted) if a <= 0.05} == rejected


def test_paired_comparison_is_scipys_paired_t_test_with_its_interval():
    cand = {0: 0.83, 1: 0.84, 2: 0.82, 3: 0.85, 4: 0.835}
    base = {0: 0.82, 1: 0.825, 2: 0.818, 3: 0.83, 4: 0.83, 9: 0.5}  # seed 9 has no partner: ignored
    c = paired_comparison(cand, base)
    d = np.array([cand[s] - base[s] for s in range(5)])
    assert c.n == 5 and c.wins == 5
    assert c.gain == pytest.approx(d.mean())
    assert c.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (c.ci_low, c.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))


def test_paired_comparison_with_too_few_or_constant_differences():
    assert math.isnan(paired_comparison({0: 0.5}, {0: 0.4}).p)
    same = paired_comparison({0: 0.5, 1: 0.6}, {0: 0.4, 1: 0.5})
    assert same.gain == pytest.approx(0.1) and same.p == 0.0


def test_detectable_effect_has_the_asked_power():
    sd, n = 0.004, 6
    effect = detectable_effect(sd, n, comparisons=3)
    df, t_crit = n - 1, stats.t.ppf(1 - 0.05 / 3 / 2, n - 1)
    nc = effect / (sd / math.sqrt(n))
    power = stats.nct.sf(t_crit, df, nc) + np.nan_to_num(stats.nct.cdf(-t_crit, df, nc))
    assert power == pytest.approx(0.8, abs=1e-6)
    assert detectable_effect(sd, 12, comparisons=3) < effect < detectable_effect(sd, n, comparisons=5)
    assert detectable_effect(2 * sd, n, comparisons=3) == pytest.approx(2 * effect)
    assert math.isnan(detectable_effect(sd, 1))
