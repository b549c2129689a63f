"""The confirmation: the baseline and each candidate's best setting, retrained from scratch on the full training
split under fresh seeds, evaluated once on the test split, every run kept in the run store.

Runs go seed by seed (all arms of seed s before seed s + 1), so a confirmation stopped early holds complete
paired sets. A seed fixes the initial weights and the batch order for every arm (the lab's ``RunConfig``), which
is what makes the per-seed differences a paired sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dropkit.lab.advisor.arms import BASELINE_ARM, Arm, arm_config

__all__ = ["ArmRuns", "confirmation_configs", "run_confirmation", "collect"]


@dataclass
class ArmRuns:
    """An arm's confirmation results, seed → value."""

    test: dict[int, float]
    gap: dict[int, float]
    epoch_s: dict[int, float]
    train_loss: dict[int, float]


def confirmation_configs(base: Any, candidates: Sequence[tuple[Arm, Mapping[str, Any]]], seeds: Sequence[int]
                         ) -> list[tuple[str, Any]]:
    """(arm name, RunConfig) for the baseline and every candidate under every seed, seed-major."""
    arms = [(BASELINE_ARM, {}), *candidates]
    return [(arm.name, arm_config(base, arm, params, seed=s)) for s in seeds for arm, params in arms]


def run_confirmation(configs: Sequence[tuple[str, Any]], store: Any, *, workers: int, tag: str,
                     progress: bool = True, backend: str = "local", ray_address: str | None = None) -> dict[str, int]:
    """Train the confirmation runs the store does not hold yet (``dropkit.lab.sweep.execute``)."""
    from dropkit.lab.sweep import execute

    return execute([c for _, c in configs], store, backend=backend, tag=tag, kind="confirm", progress=progress,
                   ray_address=ray_address, workers=workers)


def collect(configs: Sequence[tuple[str, Any]], store: Any) -> dict[str, ArmRuns]:
    """Each arm's finished confirmation runs, read back from the store by config hash."""
    wanted = {c.config_hash(): (name, c.seed) for name, c in configs}
    out: dict[str, ArmRuns] = {name: ArmRuns({}, {}, {}, {}) for name, _ in configs}
    for rec in store.runs(status="done"):
        hit = wanted.get(rec["config_hash"])
        if hit is None:
            continue
        name, seed = hit
        metrics, primary = rec["metrics"], (rec.get("extra") or {}).get("primary", "test_acc")
        runs = out[name]
        runs.test[seed] = float(metrics[primary])
        runs.gap[seed] = float(metrics.get("gap", float("nan")))
        curves = rec.get("curves") or []
        if curves:
            runs.epoch_s[seed] = sum(r.get("epoch_s", 0.0) for r in curves) / len(curves)
            runs.train_loss[seed] = float(curves[-1].get("train_loss", float("nan")))
    return out
