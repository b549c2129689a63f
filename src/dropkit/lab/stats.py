"""Small statistics for the report, without SciPy: mean ± std, and a paired t-test against the baseline.

Methods are compared paired by seed (the same initial weights and batch order under one seed), so the test is on
the per-seed differences d_s = metric(method, s) − metric(baseline, s): t = mean(d)/(std(d)/√n) with n − 1
degrees of freedom, two-sided. The t distribution's tail comes from the regularized incomplete beta function,
I_x(a, b) with x = ν/(ν + t²), a = ν/2, b = 1/2, evaluated by its continued fraction (Lentz's method).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["mean_std", "t_two_sided_p", "PairedTest", "paired_test", "binomial_se"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    if n == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def _betacf(a: float, b: float, x: float) -> float:
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for 0 ≤ x ≤ 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    if math.isnan(t):
        return float("nan")
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


@dataclass(frozen=True)
class PairedTest:
    n: int          # seeds both arms have
    diff: float     # mean of method − baseline
    se: float       # standard error of that mean
    t: float
    p: float        # two-sided; NaN when n < 2
    wins: int       # seeds where the method beat the baseline

    def verdict(self, alpha: float = 0.05) -> str:
        if self.n < 2:
            return "too few paired seeds to test"
        if not self.p < alpha:
            return f"within noise (p = {self.p:.2f})"
        return f"{'better' if self.diff > 0 else 'worse'} (p = {self.p:.3f})"


def paired_test(method: dict[int, float], baseline: dict[int, float]) -> PairedTest:
    """Paired t-test over the seeds both dicts (seed → metric) hold."""
    seeds = sorted(set(method) & set(baseline))
    diffs = [method[s] - baseline[s] for s in seeds]
    n = len(diffs)
    wins = sum(d > 0 for d in diffs)
    if n == 0:
        return PairedTest(0, float("nan"), float("nan"), float("nan"), float("nan"), 0)
    m, sd = mean_std(diffs)
    if n < 2:
        return PairedTest(n, m, float("nan"), float("nan"), float("nan"), wins)
    se = sd / math.sqrt(n)
    if se == 0:
        t = 0.0 if m == 0 else math.copysign(math.inf, m)
    else:
        t = m / se
    return PairedTest(n, m, se, t, t_two_sided_p(t, n - 1), wins)


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of one model's accuracy measured on ``n`` test images."""
    if n <= 0:
        return float("nan")
    return math.sqrt(max(0.0, accuracy * (1.0 - accuracy)) / n)
