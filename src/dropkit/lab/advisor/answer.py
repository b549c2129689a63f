"""The advisor's answer: the ranked candidates with their confirmed gains, the recommendation in words, and the
code that applies it.

A candidate is *recommended* when its Holm-adjusted p-value is below ``ALPHA`` and its gain is positive; among
several, the largest gain wins. When none qualifies, the answer says so and gives the smallest gain the run could
have detected (80 % power at Holm's strictest level, from the observed seed-to-seed spread of the differences).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dropkit.lab.advisor.arms import Arm, attach_code
from dropkit.lab.advisor.statistics import PairedComparison, detectable_effect, holm, paired_comparison

__all__ = ["ALPHA", "Candidate", "Advice", "rank_candidates", "verdict", "format_table"]

ALPHA = 0.05


@dataclass
class Candidate:
    """One confirmed arm.

    Attributes:
        arm: what it inserts where.
        params: tuned parameters, method → {name: value}.
        search_value: its best validation score in the search.
        trials: the search trials it had.
        comparison: the paired test against the baseline on the confirmation seeds.
        p_holm: Holm-adjusted p-value.
        test_mean: mean test score over the confirmation seeds.
        gap: mean train–test gap.
        overhead: mean epoch time relative to the baseline's, minus 1 (0.1 = 10 % slower).
    """

    arm: Arm
    params: dict[str, dict[str, Any]]
    search_value: float
    trials: int
    comparison: PairedComparison | None = None
    p_holm: float = math.nan
    test_mean: float = math.nan
    gap: float = math.nan
    overhead: float = math.nan

    @property
    def name(self) -> str:
        return self.arm.name

    @property
    def significant_gain(self) -> bool:
        c = self.comparison
        return c is not None and self.p_holm < ALPHA and c.gain > 0

    def params_text(self) -> str:
        """``"p=0.59"``; for a cocktail ``"dropout p=0.46; dropblock p=0.29, block_size=2"``."""
        parts = [(m, ", ".join(f"{k}={_short(v)}" for k, v in ps.items())) for m, ps in self.params.items()]
        if len(parts) == 1:
            return parts[0][1] or "—"
        return "; ".join(f"{m} {text}" for m, text in parts) or "—"


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def verdict(c: Candidate) -> str:
    """The comparison in words."""
    cmp = c.comparison
    if cmp is None or cmp.n < 2:
        return "not confirmed (too few paired seeds)"
    if c.p_holm < ALPHA:
        return (f"significant gain, better on {cmp.wins}/{cmp.n} seeds" if cmp.gain > 0
                else f"significantly worse, worse on {cmp.n - cmp.wins}/{cmp.n} seeds")
    return f"no significant difference (better on {cmp.wins}/{cmp.n} seeds)"


@dataclass
class Advice:
    """Everything ``advise`` found. ``recommendation`` is None when no candidate beat the baseline."""

    setting: dict[str, Any]
    candidates: list[Candidate]
    baseline: dict[str, float]
    skipped: dict[str, str]
    points: dict[str, str]
    curves: dict[str, list[dict[str, Any]]]
    detectable: float
    seeds: list[int]
    plan: dict[str, Any]
    wall_s: float = math.nan
    report: dict[str, str] = field(default_factory=dict)
    trials: dict[str, int] = field(default_factory=dict)  # search trials each arm had (fewer when time ran out)

    @property
    def recommendation(self) -> Candidate | None:
        winners = [c for c in self.candidates if c.significant_gain]
        return max(winners, key=lambda c: c.comparison.gain) if winners else None

    @property
    def metric(self) -> str:
        return self.setting.get("metric", "accuracy")

    def code(self) -> str:
        rec = self.recommendation
        return attach_code(rec.arm, rec.params) if rec is not None else "# nothing to attach: keep the model as it is"

    def conclusion(self) -> str:
        """The recommendation in one or two sentences."""
        rec, scale = self.recommendation, 100.0
        k, n = len(self.candidates), len(self.seeds)
        if rec is not None:
            c = rec.comparison
            return (f"Use {rec.name} ({rec.params_text()}) at {rec.arm.describe_points()}: it gained "
                    f"{c.gain * scale:+.2f} points of test {self.metric} over no regularizer "
                    f"(95 % CI {c.ci_low * scale:+.2f} to {c.ci_high * scale:+.2f}, Holm-adjusted p = "
                    f"{rec.p_holm:.3g}, {c.wins}/{c.n} seeds) on {n} fresh seeds.")
        mde = self.detectable
        detect = (f"; with {n} seeds this run could detect a gain of about {mde * scale:.2f} points or more "
                  "(80 % power)" if math.isfinite(mde) else "")
        return (f"No significant gain: none of the {k} tuned candidates beat the baseline at α = {ALPHA} after "
                f"Holm's correction{detect}. Keep the model without these regularizers, or give the search more "
                "budget or data.")

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        header = ["rank", "method / cocktail", "tuned parameters", "insertion points", f"test {self.metric} %",
                  "gain (95 % CI)", "Holm p", "verdict", "train–test gap", "step overhead"]
        rows = [["—", "none (baseline)", "—", "—", f"{self.baseline.get('test_mean', math.nan) * 100:.2f}",
                 "—", "—", "reference", f"{self.baseline.get('gap', math.nan) * 100:.1f}", "—"]]
        for i, c in enumerate(self.candidates, 1):
            cmp = c.comparison
            gain = (f"{cmp.gain * 100:+.2f} ({cmp.ci_low * 100:+.2f}, {cmp.ci_high * 100:+.2f})"
                    if cmp is not None and math.isfinite(cmp.ci_low) else "—")
            rows.append([str(i), c.name, c.params_text(), c.arm.describe_points(), f"{c.test_mean * 100:.2f}", gain,
                         f"{c.p_holm:.3g}" if math.isfinite(c.p_holm) else "—", verdict(c),
                         f"{c.gap * 100:.1f}" if math.isfinite(c.gap) else "—",
                         f"{c.overhead * 100:+.0f} %" if math.isfinite(c.overhead) else "—"])
        return header, rows

    def summary(self) -> str:
        """What the terminal prints: the table, the conclusion and the code."""
        header, rows = self.table_rows()
        lines = [format_table(header, rows), "", self.conclusion()]
        if self.recommendation is not None:
            lines += ["", "Apply it to your model:", "", self.code()]
        if self.skipped:
            lines += ["", "Skipped: " + "; ".join(f"{m} ({why})" for m, why in self.skipped.items())]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def cand(c: Candidate) -> dict[str, Any]:
            cmp = c.comparison
            return {"name": c.name, "params": c.params, "points": c.arm.describe_points(),
                    "search_value": c.search_value, "trials": c.trials, "test_mean": c.test_mean,
                    "gain": cmp and cmp.gain, "ci": cmp and [cmp.ci_low, cmp.ci_high], "p": cmp and cmp.p,
                    "p_holm": c.p_holm, "wins": cmp and cmp.wins, "n": cmp and cmp.n, "verdict": verdict(c),
                    "gap": c.gap, "overhead": c.overhead}

        rec = self.recommendation
        return {"setting": self.setting, "plan": self.plan, "seeds": self.seeds, "baseline": self.baseline,
                "candidates": [cand(c) for c in self.candidates], "skipped": self.skipped, "points": self.points,
                "recommendation": None if rec is None else rec.name, "conclusion": self.conclusion(),
                "code": self.code(), "detectable": self.detectable, "wall_s": self.wall_s, "trials": self.trials}


def rank_candidates(candidates: Sequence[Candidate], runs: Mapping[str, Any], baseline_name: str = "none"
                    ) -> tuple[list[Candidate], float]:
    """Fill in each candidate's paired test, Holm p, gap and overhead from the confirmation ``runs`` (arm name →
    ``ArmRuns``); rank by gain; return them and the smallest detectable gain."""
    base = runs[baseline_name]
    base_epoch = statistics.fmean(base.epoch_s.values()) if base.epoch_s else math.nan
    for c in candidates:
        r = runs[c.name]
        c.comparison = paired_comparison(r.test, base.test)
        c.test_mean = statistics.fmean(r.test.values()) if r.test else math.nan
        gaps = [g for g in r.gap.values() if math.isfinite(g)]
        c.gap = statistics.fmean(gaps) if gaps else math.nan
        c.overhead = (statistics.fmean(r.epoch_s.values()) / base_epoch - 1
                      if r.epoch_s and math.isfinite(base_epoch) and base_epoch > 0 else math.nan)
    for c, p in zip(candidates, holm([c.comparison.p for c in candidates])):
        c.p_holm = p
    ranked = sorted(candidates, key=lambda c: (not c.significant_gain,
                                               -(c.comparison.gain if math.isfinite(c.comparison.gain) else -1e9)))
    sds = [c.comparison.sd for c in candidates if math.isfinite(c.comparison.sd)]
    n = min((c.comparison.n for c in candidates), default=0)
    mde = detectable_effect(statistics.fmean(sds), n, comparisons=len(candidates)) if sds else math.nan
    return ranked, mde


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
