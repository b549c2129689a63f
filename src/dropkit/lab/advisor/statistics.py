"""The confirmation's statistics: paired t-tests against the baseline (SciPy), Holm's step-down adjustment across
the comparisons, and the smallest gain a run could have detected.

Every candidate is compared with the baseline on the same seeds (the same initial weights and batch order under
one seed), so the test is on the per-seed differences. Holm's method controls the family-wise error over the K
comparisons without assuming them independent (they share the baseline runs); it is uniformly more powerful than
Bonferroni. SciPy has no Holm routine (``false_discovery_control`` is Benjamini–Hochberg), so it is the five-line
step-down here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

__all__ = ["PairedComparison", "paired_comparison", "holm", "detectable_effect"]


@dataclass(frozen=True)
class PairedComparison:
    """A candidate against the baseline over the seeds both have.

    Attributes:
        n: paired seeds.
        gain: mean of candidate − baseline.
        ci_low, ci_high: 95 % confidence interval of ``gain`` (Student's t, n − 1 degrees of freedom).
        sd: standard deviation of the per-seed differences.
        p: two-sided p-value of the paired t-test (NaN with fewer than 2 seeds).
        wins: seeds on which the candidate beat the baseline.
    """

    n: int
    gain: float
    ci_low: float
    ci_high: float
    sd: float
    p: float
    wins: int


def paired_comparison(candidate: Mapping[int, float], baseline: Mapping[int, float]) -> PairedComparison:
    """Paired t-test (``scipy.stats.ttest_rel``) of ``candidate`` against ``baseline`` (seed → metric)."""
    seeds = sorted(set(candidate) & set(baseline))
    a = np.array([candidate[s] for s in seeds], dtype=float)
    b = np.array([baseline[s] for s in seeds], dtype=float)
    n = len(seeds)
    diff = a - b
    wins = int((diff > 0).sum())
    if n < 2:
        gain = float(diff.mean()) if n else math.nan
        return PairedComparison(n, gain, math.nan, math.nan, math.nan, math.nan, wins)
    sd = float(diff.std(ddof=1))
    if sd == 0.0:  # identical differences on every seed: the t statistic is undefined; the gain is exact
        gain = float(diff.mean())
        return PairedComparison(n, gain, gain, gain, 0.0, 1.0 if gain == 0 else 0.0, wins)
    result = stats.ttest_rel(a, b)
    ci = result.confidence_interval(0.95)
    return PairedComparison(n, float(diff.mean()), float(ci.low), float(ci.high), sd, float(result.pvalue), wins)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (NaN stays NaN and is not counted).

    Sorted ascending, the i-th smallest of m p-values (0-based) is multiplied by m − i; the running maximum keeps
    the adjusted values monotone, and they are capped at 1.
    """
    indexed = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def detectable_effect(sd: float, n: int, *, comparisons: int = 1, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true gain a two-sided paired t-test on ``n`` seeds finds with probability ``power``.

    The test is the strictest step of Holm's procedure (level ``alpha / comparisons``), the differences' standard
    deviation ``sd``; power comes from the noncentral t distribution (``scipy.stats.nct``) and the gain is solved
    for with ``scipy.optimize.brentq``. NaN with fewer than 2 seeds or a non-finite ``sd``.
    """
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    df, level = n - 1, alpha / max(1, comparisons)
    t_crit = stats.t.ppf(1 - level / 2, df)

    def shortfall(effect: float) -> float:
        nc = effect / (sd / math.sqrt(n))
        lower = stats.nct.cdf(-t_crit, df, nc)  # the wrong-sign tail: negligible, and NaN in SciPy when tiny
        return stats.nct.sf(t_crit, df, nc) + (0.0 if math.isnan(lower) else lower) - power

    high = sd
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high))
