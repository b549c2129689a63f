"""The report's statistics: Student-t tail probabilities, the paired test against the baseline and its interval."""

from __future__ import annotations

import math

import pytest

from dropkit.lab.stats import binomial_se, mean_std, paired_test, t_two_sided_p


@pytest.mark.parametrize("t, df, p", [
    (0.0, 5, 1.0),
    (1.0, 1, 0.5),                 # Cauchy: P(|T| > 1) = 1/2
    (2.776445, 4, 0.05),           # the textbook 95 % critical value at 4 d.o.f.
    (2.570582, 5, 0.05),
    (4.604095, 4, 0.01),
    (1.959964, 1e7, 0.05),         # large df → normal
])
def test_t_tail_matches_tables(t, df, p):
    assert t_two_sided_p(t, df) == pytest.approx(p, abs=2e-5)
    assert t_two_sided_p(-t, df) == pytest.approx(p, abs=2e-5)


def test_t_tail_is_monotone_and_rejects_bad_df():
    ps = [t_two_sided_p(t, 3) for t in (0.5, 1, 2, 4, 8)]
    assert ps == sorted(ps, reverse=True)
    assert t_two_sided_p(math.inf, 3) == 0.0
    with pytest.raises(ValueError, match="df"):
        t_two_sided_p(1.0, 0)


def test_paired_test_uses_only_common_seeds_and_says_within_noise():
    base = {0: 0.80, 1: 0.82, 2: 0.81, 3: 0.79}
    clear = {0: 0.83, 1: 0.85, 2: 0.84, 3: 0.82, 9: 0.1}  # +3 points on every paired seed; seed 9 unpaired
    t = paired_test(clear, base)
    assert t.n == 4 and t.wins == 4 and t.diff == pytest.approx(0.03) and t.p < 1e-6
    assert t.verdict().startswith("better")
    noisy = {0: 0.81, 1: 0.81, 2: 0.82, 3: 0.78}
    assert paired_test(noisy, base).verdict().startswith("within noise")
    worse = {s: v - 0.02 + 0.001 * s for s, v in base.items()}
    assert paired_test(worse, base).verdict().startswith("worse")
    assert paired_test({0: 0.9}, base).verdict() == "too few paired seeds to test"
    assert paired_test({7: 0.9}, base).n == 0


def test_mean_std_and_binomial_se():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([5.0]) == (5.0, 0.0)
    assert binomial_se(0.8, 5000) == pytest.approx(math.sqrt(0.16 / 5000))


def test_confidence_interval_of_the_paired_difference():
    base = {0: 0.80, 1: 0.82, 2: 0.81, 3: 0.79}
    noisy = {0: 0.81, 1: 0.83, 2: 0.80, 3: 0.81}
    t = paired_test(noisy, base)
    low, high = t.ci
    assert low < t.diff < high
    assert (high - low) / 2 == pytest.approx(3.182446 * t.se, rel=1e-5)  # t_{0.975, 3}: the textbook value
    assert (low > 0 or high < 0) == (t.p < 0.05)  # the interval excludes 0 exactly when the test rejects
    exact = paired_test({s: v + 0.01 for s, v in base.items()}, base)  # the same difference on every seed
    assert exact.se == 0 and exact.p == 0 and exact.ci == pytest.approx((0.01, 0.01))
    assert math.isnan(paired_test({0: 0.9}, base).ci[0])
