"""The report's statistics, from SciPy: mean ± std, and a paired t-test against the baseline with a confidence
interval for the difference.

Methods are compared paired by seed (the same initial weights and batch order under one seed), so the test is on
the per-seed differences d_s = metric(method, s) − metric(baseline, s): ``scipy.stats.ttest_rel`` (two-sided,
n − 1 degrees of freedom) and the t interval of their mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["mean_std", "t_two_sided_p", "PairedTest", "paired_test", "binomial_se", "CONFIDENCE"]

#: the level of the confidence intervals the report prints
CONFIDENCE = 0.95


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; NaN for none)."""
    if len(values) == 0:
        return float("nan"), float("nan")
    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom."""
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df}")
    return float(2 * stats.t.sf(abs(t), df))


@dataclass(frozen=True)
class PairedTest:
    n: int          # seeds both arms have
    diff: float     # mean of method − baseline
    se: float       # standard error of that mean
    t: float
    p: float        # two-sided; NaN when n < 2
    wins: int       # seeds where the method beat the baseline
    ci: tuple[float, float] = (math.nan, math.nan)  # CONFIDENCE interval of ``diff``

    def verdict(self, alpha: float = 0.05) -> str:
        if self.n < 2:
            return "too few paired seeds to test"
        if not self.p < alpha:
            return f"within noise (p = {self.p:.2f})"
        return f"{'better' if self.diff > 0 else 'worse'} (p = {self.p:.3f})"


def paired_test(method: dict[int, float], baseline: dict[int, float]) -> PairedTest:
    """Paired t-test over the seeds both dicts (seed → metric) hold."""
    seeds = sorted(set(method) & set(baseline))
    diffs = np.array([method[s] - baseline[s] for s in seeds], dtype=float)
    n, nan = len(diffs), float("nan")
    wins = int((diffs > 0).sum())
    if n == 0:
        return PairedTest(0, nan, nan, nan, nan, 0)
    m = float(diffs.mean())
    if n < 2:
        return PairedTest(n, m, nan, nan, nan, wins)
    se = float(stats.sem(diffs))
    if se == 0:  # identical differences on every seed: SciPy's t is 0/0; the difference is exact
        t = 0.0 if m == 0 else math.copysign(math.inf, m)
        return PairedTest(n, m, 0.0, t, 1.0 if m == 0 else 0.0, wins, (m, m))
    result = stats.ttest_rel([method[s] for s in seeds], [baseline[s] for s in seeds])
    low, high = stats.t.interval(CONFIDENCE, n - 1, loc=m, scale=se)
    return PairedTest(n, m, se, float(result.statistic), float(result.pvalue), wins, (float(low), float(high)))


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of one model's accuracy measured on ``n`` test images."""
    if n <= 0:
        return float("nan")
    return math.sqrt(max(0.0, accuracy * (1.0 - accuracy)) / n)
