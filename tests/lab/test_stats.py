"""The report's statistics: Student-t tail probabilities and the paired test against the baseline."""

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
