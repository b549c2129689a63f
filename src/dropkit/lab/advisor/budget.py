"""Splitting a wall-clock budget between the search and the confirmation, from measured epoch and evaluation times.

The calibration trains the baseline for one epoch on one torch thread (what each worker gets) and takes its wall
time as ``epoch_s``, then times the trained model's evaluation per image. A run's evaluation is priced from the
images it evaluates, not as a share of its training: a search trial reads the validation split at its pruner's
rungs and the training split once (``trial_eval_s``), a confirmation run the test split and the training split once
(``run_eval_s``). With 300 training and 10 000 test images, evaluation is most of a run: pricing it as 15 % of the
training once planned 1.7 min for a run that took 3.9. A full run costs ``epochs × epoch_s + its evaluation``.
The confirmation trains K + 1 arms on S seeds, ``ceil((K + 1) S / W)`` waves of full runs on W workers; the search
runs T trials per arm, of which Hyperband stops some early (``PRUNED_SHARE``: the share of a full run a trial costs
on average, measured on the default testbed), the baseline once. Half of what is left after a fixed allowance
(worker start-up, data loading, the report) goes to each; seeds never drop below ``MIN_SEEDS`` (the minimum for
half-point effects) nor trials below ``MIN_TRIALS``. When even that does not fit, the budget is refused with the
time it would need.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["Plan", "parse_budget", "plan_budget", "MIN_SEEDS", "MIN_TRIALS"]

MIN_SEEDS = 5
MIN_TRIALS = 3
MAX_SEEDS = 20
MAX_TRIALS = 40
PRUNED_SHARE = 0.9     # a Hyperband trial's average cost as a share of a full run (min resource a third; with
                       # a handful of trials per arm few are stopped: measured 0.75–0.9 on the testbed)
FIXED_S = 30.0         # worker start-up, data loading in each worker, the report
SAFETY = 1.15          # the plan aims at this much less than the budget (other work slows the runs)
# Two 1-thread workers side by side each run slower than the one calibration epoch did alone (shared memory
# bandwidth and caches): `make lab` on the 2-core machine took 20.6 s a confirmation run against 16.2 s planned.
PARALLEL_SLOWDOWN = 1.3


@dataclass(frozen=True)
class Plan:
    """The budget's split. Times in seconds of wall clock."""

    trials: int
    seeds: int
    epoch_s: float
    trial_s: float       # a search trial trained to the end, its evaluation included
    run_s: float         # a confirmation run, its evaluation included
    search_s: float
    confirm_s: float

    @property
    def total_s(self) -> float:
        return self.search_s + self.confirm_s + FIXED_S


def parse_budget(text: str | int | float) -> float:
    """``"10m"``, ``"90s"``, ``"1h"``, ``"1h30m"`` or a number of seconds → seconds (> 0)."""
    if isinstance(text, bool):
        raise TypeError(f"budget must be a duration such as '10m', '90s', '1h' or seconds, got {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    elif isinstance(text, str):
        parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*",
                             text.strip().lower())
        if not text.strip() or parts is None or not any(parts.groups()):
            raise ValueError(f"budget must be a duration such as '10m', '90s', '1h30m' or seconds, got {text!r}")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + s
    else:
        raise TypeError(f"budget must be a duration such as '10m', '90s', '1h' or seconds, got {text!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"budget must be > 0 seconds, got {text!r}")
    return seconds


def plan_budget(budget_s: float, *, epoch_s: float, epochs: int, arms: int, top_k: int, workers: int,
                trial_eval_s: float, run_eval_s: float, seeds: int | None = None,
                trials: int | None = None) -> Plan:
    """Trials per arm and confirmation seeds that fit ``budget_s``.

    Args:
        epoch_s: measured seconds per training epoch on one thread.
        trial_eval_s, run_eval_s: seconds of evaluation in one search trial and in one confirmation run (measured
            per image, times the images each evaluates).
        arms: searched arms besides the baseline (cocktails included).
        top_k: candidates confirmed against the baseline.
        seeds, trials: fixed by the user (None: chosen here).

    Raises:
        ValueError: the minimum (``MIN_TRIALS`` trials, ``MIN_SEEDS`` seeds, or the user's numbers) needs more
            than ``budget_s``; the message says how much it needs.
    """
    for name, value in (("epoch_s", epoch_s), ("trial_eval_s", trial_eval_s), ("run_eval_s", run_eval_s)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"plan_budget: {name} must be a finite number of seconds ≥ 0, got {value!r}")
    slowdown = PARALLEL_SLOWDOWN if workers > 1 else 1.0
    trial_s = (epochs * epoch_s + trial_eval_s) * slowdown
    run_s = (epochs * epoch_s + run_eval_s) * slowdown
    k = min(top_k, arms)

    def confirm_s(s: int) -> float:
        return math.ceil((k + 1) * s / workers) * run_s

    def search_s(t: int) -> float:
        return (arms * t * PRUNED_SHARE / workers + 1) * trial_s

    usable = budget_s / SAFETY - FIXED_S
    s_min, t_min = seeds or MIN_SEEDS, trials or MIN_TRIALS
    need = search_s(t_min) + confirm_s(s_min)
    if need > usable:
        raise ValueError(f"budget {budget_s / 60:.1f} min is too small: {arms} arms × {t_min} trials and "
                         f"{k + 1} arms × {s_min} seeds of {epochs} epochs (measured {epoch_s:.2f} s an epoch and "
                         f"{run_eval_s:.1f} s of evaluation a run on {workers} worker(s)) need about "
                         f"{(need + FIXED_S) * SAFETY / 60:.1f} min; raise --budget, lower --epochs, pass fewer "
                         "--methods or a smaller --test-size")
    spare = usable - need
    if seeds is None:
        per_seed = confirm_s(s_min + workers) - confirm_s(s_min)  # seeds come in waves of `workers` runs
        seeds_ = s_min
        extra = spare / 2 if trials is None else spare
        while seeds_ < MAX_SEEDS and confirm_s(seeds_ + 1) - confirm_s(s_min) <= extra and per_seed > 0:
            seeds_ += 1
    else:
        seeds_ = seeds
    if trials is None:
        left = usable - confirm_s(seeds_) - trial_s
        per_trial = arms * PRUNED_SHARE / workers * trial_s
        trials_ = MAX_TRIALS if per_trial <= 0 else max(t_min, min(MAX_TRIALS, int(left / per_trial)))
    else:
        trials_ = trials
    return Plan(trials_, seeds_, epoch_s, trial_s, run_s, search_s(trials_), confirm_s(seeds_))
