"""The search: one Optuna study per arm, a seeded TPE sampler over the arm's strengths, Hyperband reading the
validation accuracy per epoch, the same trial budget for every arm.

- **Fidelity.** Hyperband (Li et al. 2018; with TPE this is close to BOHB, Kadra et al.'s search) with epochs as
  the resource, ``min_resource`` a third of the epochs and reduction factor 3: a trial can be stopped a third of
  the way in. Earlier rungs were not used on purpose: a stronger regularizer learns more slowly at first, so
  an early rung would prune exactly the strong settings that win at the end. Validation is evaluated only at the
  epochs a rung reads and at the last one.
- **Data.** Every trial trains on the training split and is scored on the validation split carved from the
  training data; it gets the dataset through :func:`withhold_test`, so touching the test split raises.
- **Seeds.** Every trial trains under the same seed (same initial weights and batch order), so two trials differ
  only by their strengths; the confirmation then retrains on fresh seeds. The baseline has nothing to tune: it
  is trained once, the same way (its repeats would be identical).
- **Storage.** Studies live in an Optuna RDB storage (a SQLite file beside the run store by default; any
  SQLAlchemy URL lets workers on many machines share them). A killed search resumes where it stopped: finished
  trials are kept, an interrupted one is marked failed and run again. Heartbeats (``heartbeat_interval``) mark a
  trial failed when its worker died, for storages shared by several machines.
- **Budget.** The count of a study's trials (running, finished, pruned, or failed by an error of their own) is
  checked at the start of each trial; a trial that finds the budget full marks itself failed ("over budget") and
  is not counted, so parallel workers never overshoot it.
- **Workers.** ``workers`` local processes of one torch thread each share the studies; Ray remains the engine
  for the confirmation runs on a cluster (``dropkit.lab.sweep``).
"""

from __future__ import annotations

import logging
import multiprocessing
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from dropkit.lab.advisor.arms import Arm, arm_config
from dropkit.lab.advisor.withheld import withhold_test
from dropkit.search_space import Range

__all__ = ["SearchSettings", "OverBudget", "study_name", "prepare_studies", "run_search", "search_worker",
           "trials_used", "validation_epochs", "make_storage", "best_trial", "mark_interrupted", "budget_for"]

REDUCTION_FACTOR = 3
_COUNTED = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE, TrialState.PRUNED)


class OverBudget(Exception):
    """A trial started after its study's budget was already full (a race between workers)."""


@dataclass(frozen=True)
class SearchSettings:
    """How the search runs.

    Attributes:
        storage: Optuna storage URL, e.g. ``sqlite:///lab-results/advise.optuna.db``.
        prefix: study names are ``<prefix>/<arm name>`` (the prefix fingerprints data, model and training).
        trials: trials per arm (the baseline gets 1).
        seed: the training seed of every trial; the samplers are seeded from it too.
        workers: local worker processes.
        heartbeat_s: seconds between a running trial's heartbeats (None: off).
        deadline: wall-clock time (``time.time()``) after which no new trial starts (None: none).
    """

    storage: str
    prefix: str
    trials: int
    seed: int = 0
    workers: int = 1
    heartbeat_s: int | None = 30
    deadline: float | None = None


def study_name(settings: SearchSettings, arm: Arm) -> str:
    return f"{settings.prefix}/{arm.name}"


def make_storage(settings: SearchSettings) -> optuna.storages.BaseStorage:
    quiet_optuna()
    if settings.heartbeat_s is None:
        return optuna.storages.RDBStorage(settings.storage, engine_kwargs=_engine_kwargs(settings.storage))
    return optuna.storages.RDBStorage(settings.storage, engine_kwargs=_engine_kwargs(settings.storage),
                                      heartbeat_interval=settings.heartbeat_s,
                                      grace_period=4 * settings.heartbeat_s)


class _HideOverBudget(logging.Filter):
    """Drops Optuna's two warnings for a trial stopped by :class:`OverBudget` ("Trial N failed with parameters
    … OverBudget(…)", then "Trial N failed with value None."); every other record passes."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: str | None = None  # the number of the trial whose first warning was dropped

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        number = re.match(r"Trial (\d+) failed", message)
        if number is None:
            return True
        if "OverBudget(" in message:
            self.hidden = number.group(1)
            return False
        if self.hidden == number.group(1) and "failed with value None" in message:
            self.hidden = None
            return False
        return True


_HIDE_OVER_BUDGET = _HideOverBudget()


def quiet_optuna() -> None:
    """Optuna logs every trial and warns that heartbeats and multivariate TPE are experimental; the advisor
    reports progress itself. A trial stopped by :class:`OverBudget` (a worker that lost the race for an arm's
    last slot, before training anything) is not logged as a failed trial; real failures still are."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna logs a trial's exception through this module's logger (a logger's filters see only its own records)
    trial_logger = logging.getLogger("optuna.study._optimize")
    if _HIDE_OVER_BUDGET not in trial_logger.filters:
        trial_logger.addFilter(_HIDE_OVER_BUDGET)


def _engine_kwargs(url: str) -> dict[str, Any]:
    # several processes write one SQLite file: wait for the lock instead of failing at once
    return {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}


def _sampler(settings: SearchSettings, worker: int) -> optuna.samplers.BaseSampler:
    # the first third of an arm's trials spread at random, the rest follow TPE; each worker its own stream
    startup = min(10, max(2, settings.trials // 3))
    return optuna.samplers.TPESampler(seed=settings.seed * 1000 + worker, n_startup_trials=startup, multivariate=True)


def _pruner(epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=max(1, epochs // 3), max_resource=epochs,
                                          reduction_factor=REDUCTION_FACTOR)


def validation_epochs(epochs: int) -> set[int]:
    """The epochs whose validation score is read: the rungs of :func:`_pruner` and the last epoch."""
    out, rung = {epochs}, max(1, epochs // 3)
    while rung < epochs:
        out.add(rung)
        rung *= REDUCTION_FACTOR
    return out


def budget_for(arm: Arm, settings: SearchSettings) -> int:
    return 1 if not arm.space() else settings.trials


def trials_used(study: optuna.Study) -> int:
    """Trials that count against the budget: all but the failed ones, plus those that failed by their own error."""
    return sum(t.state in _COUNTED or (t.state == TrialState.FAIL and "error" in t.user_attrs)
               for t in study.get_trials(deepcopy=False))


def prepare_studies(arms: Sequence[Arm], settings: SearchSettings, epochs: int, *,
                    release_interrupted: bool = True) -> dict[str, optuna.Study]:
    """Create (or reopen) every arm's study; with ``release_interrupted``, mark trials left running failed.

    Releasing is right when this process owns the storage (no other worker can be running); with a storage shared
    by other machines, pass False and let the heartbeats find dead workers.
    """
    storage = make_storage(settings)
    studies = {}
    for arm in arms:
        study = optuna.create_study(storage=storage, study_name=study_name(settings, arm), direction="maximize",
                                    sampler=_sampler(settings, 0), pruner=_pruner(epochs), load_if_exists=True)
        study.set_user_attr("arm", arm.name)
        study.set_user_attr("points", [{"method": m.method, "points": m.specs} for m in arm.members])
        if release_interrupted:
            mark_interrupted(study)
        studies[arm.name] = study
    return studies


def mark_interrupted(study: optuna.Study) -> int:
    """Mark the study's running trials failed (their worker is gone); return how many."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)  # noqa: SLF001 (public storage API)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # noqa: SLF001
        n += 1
    return n


def _suggest(trial: optuna.Trial, name: str, rng: Range) -> Any:
    if rng.integer:
        return trial.suggest_int(name, int(rng.low), int(rng.high), log=rng.log)
    return trial.suggest_float(name, rng.low, rng.high, log=rng.log)


def _objective(trial: optuna.Trial, arm: Arm, base: Any, data: Any, budget: int) -> float:
    from dropkit.lab.train import primary_metric, train

    earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
    if sum(t.state in _COUNTED or (t.state == TrialState.FAIL and "error" in t.user_attrs) for t in earlier) >= budget:
        raise OverBudget(f"{arm.name}: {budget} trials already started")
    flat = {name: _suggest(trial, name, rng) for name, rng in arm.space().items()}
    params = arm.params(flat)
    trial.set_user_attr("params", params)
    config = arm_config(base, arm, params, seed=base.seed)
    key = f"val_{primary_metric(data.task)}"

    def on_epoch(epoch: int, row: Mapping[str, float]) -> None:
        if key in row:
            trial.report(float(row[key]), epoch)
            # a trial that has trained every epoch is finished: its score is kept, never pruned at the last rung
            if epoch < config.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    try:
        result, _, _ = train(config, dataset=data, evaluate_test=False, on_epoch=on_epoch,
                             val_epochs=validation_epochs(config.epochs))
    except optuna.TrialPruned:
        raise
    except Exception as err:  # recorded with the trial; counts against the budget like any other trial
        trial.set_user_attr("error", f"{type(err).__name__}: {err}")
        raise
    metrics = result["metrics"]
    trial.set_user_attr("train_loss", float(result["curves"][-1]["train_loss"]))
    trial.set_user_attr("epoch_s", sum(r["epoch_s"] for r in result["curves"]) / len(result["curves"]))
    trial.set_user_attr("gap", float(metrics.get("gap", float("nan"))))
    return float(metrics[key])


def search_worker(base: Mapping[str, Any], arms: Sequence[Arm], settings: SearchSettings, worker: int,
                  single_thread: bool = True, progress: bool = False) -> None:
    """One worker: run trials round by round (every arm's first trial, then every arm's second, …) until each
    study's budget is used, so a search stopped by its deadline leaves every arm with the same number of trials
    (±1).

    Args:
        base: the search's ``RunConfig`` as a dict (the arm's method, params and placement are set per trial).
        worker: this worker's index (seeds its sampler).
        single_thread: set torch to one thread (worker processes; the workers share the cores).
        progress: print each study's count after every trial (the in-process search; with worker processes the
            parent prints).
    """
    import torch

    from dropkit.lab.train import RunConfig, RunFailed, get_dataset

    if single_thread:
        torch.set_num_threads(1)
    config = RunConfig.from_dict(base)
    data = withhold_test(get_dataset(config))
    storage = make_storage(settings)
    caught = (OverBudget, RunFailed)  # anything else is a bug: the worker stops and says so
    studies = {arm.name: optuna.load_study(study_name=study_name(settings, arm), storage=storage,
                                           sampler=_sampler(settings, worker), pruner=_pruner(config.epochs))
               for arm in arms}
    for round_ in range(1, max((budget_for(a, settings) for a in arms), default=0) + 1):
        for arm in arms:
            study, limit = studies[arm.name], min(round_, budget_for(arm, settings))
            while trials_used(study) < limit:
                if settings.deadline is not None and time.time() > settings.deadline:
                    return
                study.optimize(lambda t: _objective(t, arm, config, data, limit), n_trials=1, catch=caught)
                if progress:
                    print(f"  search: {arm.name} {trials_used(study)}/{budget_for(arm, settings)}", flush=True)


def run_search(base: Any, arms: Sequence[Arm], settings: SearchSettings, *, progress: bool = True,
               release_interrupted: bool = True) -> dict[str, optuna.Study]:
    """Run (or resume) the studies of ``arms`` on ``settings.workers`` processes; return the studies.

    With one worker the trials run in this process (deterministic for a seed); with more, each worker process
    takes one torch thread and the arms are searched one after another by all workers together.
    """
    studies = prepare_studies(arms, settings, base.epochs, release_interrupted=release_interrupted)
    base_dict = base.to_dict()
    if settings.workers <= 1:
        search_worker(base_dict, arms, settings, 0, progress=progress)
    else:
        context = multiprocessing.get_context("spawn")
        procs = [context.Process(target=search_worker, args=(base_dict, list(arms), settings, w), daemon=True)
                 for w in range(settings.workers)]
        for p in procs:
            p.start()
        try:
            _wait(procs, studies, arms, settings, progress)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join()
        failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
        if failed:
            from dropkit.lab.sweep import WorkerDied, describe_exit_codes

            raise WorkerDied(f"search worker processes died ({describe_exit_codes(failed)}); the studies keep every "
                             "finished trial: run the same command again to resume")
    return studies


def _wait(procs: Sequence[Any], studies: Mapping[str, optuna.Study], arms: Sequence[Arm], settings: SearchSettings,
          progress: bool) -> None:
    last = ""
    while any(p.is_alive() for p in procs):
        time.sleep(1.0)
        if progress:
            line = " · ".join(f"{a.name} {trials_used(studies[a.name])}/{budget_for(a, settings)}" for a in arms)
            if line != last:
                logging.getLogger("dropkit.advise").info("search: %s", line)
                print(f"  search: {line}", flush=True)
                last = line


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The completed trial with the highest validation score (the earliest among ties), or None."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return None
    return max(done, key=lambda t: (t.value, -t.number))

