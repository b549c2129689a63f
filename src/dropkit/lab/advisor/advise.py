"""``advise``: which regularizer, where and how strong, for a model and a data set — searched, then confirmed.

1. **Plan.** Every argument is checked before any store is opened. The model is built once and traced on a
   batch to find each method's insertion points (or the user's ``at``); methods that cannot fit are skipped with
   the reason. One epoch of the baseline is timed to split the budget (``dropkit.lab.advisor.budget``).
2. **Search** (``dropkit.lab.advisor.search``): one Optuna study per method, the same number of trials each, on
   the validation split; the test split is withheld. Then the cocktails: the best single method paired with the
   best one at other insertion points, searched jointly with the same budget.
3. **Confirmation** (``dropkit.lab.advisor.confirm``): the top K arms by validation score and the baseline,
   retrained on the full training split under fresh seeds (the search used ``seed``; the confirmation uses
   ``seed + 1 … seed + S``), each evaluated once on the test split; paired t-tests, Holm-adjusted.
4. **Answer** (``dropkit.lab.advisor.answer``, ``.report``): the ranked table, the strength–response curves and
   the code applying the winner; or, when nothing wins, that plainly, with the smallest detectable gain.

Everything is resumable: the studies live in ``<db>.optuna.db`` (or ``storage``) and the confirmation runs in
the run store ``db``; running the same call again continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["advise", "DEFAULT_METHODS"]

#: the methods searched when none are named: the classic random ones at their papers' points
DEFAULT_METHODS = ("dropout", "gaussian_dropout", "spatial_dropout", "dropblock")


def _check_int(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer ≥ {minimum}{' or None' if optional else ''}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value}")


def _method_list(methods: str | Sequence[str] | None) -> list[str]:
    import dropkit
    from dropkit.lab.train import BASELINE

    if methods is None:
        return list(DEFAULT_METHODS)
    if isinstance(methods, str):
        if methods in ("all", "activation"):
            return [c.name for c in dropkit.methods(kind="activation")]
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not isinstance(methods, Sequence) or not all(isinstance(m, str) for m in methods):
        raise TypeError(f"methods must be a comma-separated string or a list of method names, got {methods!r}")
    out = []
    for entry in methods:
        if entry == BASELINE:  # the baseline is always an arm
            continue
        parts = entry.split("+")
        if len(parts) > 2 or len(set(parts)) != len(parts):
            raise ValueError(f"methods: a cocktail is two different methods joined by '+', got {entry!r}")
        for part in parts:
            dropkit.get_card(part)  # ValueError naming the closest methods
        if entry not in out:
            out.append(entry)
    if not out:
        raise ValueError("methods: name at least one method besides the baseline 'none'")
    return out


def _fingerprint(values: Mapping[str, Any]) -> str:
    blob = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def advise(model: str = "cnn", data: str = "fashion_mnist", *, budget: str | float = "10m",
           methods: str | Sequence[str] | None = None, at: Sequence[str] | None = None, workers: int = 1,
           db: str | Path = "lab-results/advise.db", out: str | Path | None = "lab-results/advise",
           storage: str | None = None, top_k: int = 3, seeds: int | None = None, trials: int | None = None,
           cocktails: int = 1, seed: int = 0, model_params: Mapping[str, Any] | None = None,
           train_size: int | None = None, val_size: int | None = None, test_size: int | None = None,
           data_seed: int = 0, epochs: int = 30, training: Mapping[str, Any] | None = None,
           backend: str = "local", ray_address: str | None = None,
           progress: bool = True, echo: Any = print) -> "Advice":
    """Search each method's strength, confirm the best on fresh seeds, and say what to use.

    Args:
        model: a lab model name (``cnn``, ``resnet``, ``mlp``, ``unet``, ``cnn1d``) or ``FILE.py:NAME``.
        data: ``fashion_mnist``, ``organs``, an ``.npz`` file or a folder.
        budget: wall-clock budget for the whole call (``"10m"``, ``"90s"``, seconds).
        methods: method names (a ``"a+b"`` entry is a cocktail), ``"all"``, or None for ``DEFAULT_METHODS``.
            The baseline is always an arm.
        at: submodule names overriding the automatic insertion points for every method.
        workers: local worker processes (one torch thread each).
        db: the run store of the confirmation runs; the studies go beside it (``<db stem>.optuna.db``).
        out: report folder (None: no report files).
        storage: an Optuna storage URL shared by several workers or machines (default: the SQLite file beside
            ``db``). With a shared storage, trials left running by a dead worker are released by heartbeats.
        top_k: candidates confirmed, ≥ 3 (all the searched arms when there are fewer).
        seeds, trials: confirmation seeds (≥ 5) and search trials per arm (≥ 2); None: from the budget.
        cocktails: how many two-method cocktails to search after the single methods (0: none).
        seed: the search's training seed; the confirmation uses seed + 1 … seed + seeds.
        model_params, train_size, val_size, test_size, data_seed, epochs: the data and model (see ``RunConfig``);
            ``training`` holds further ``RunConfig`` settings (optimizer, lr, batch_size, …).
        backend, ray_address: where the confirmation runs go: ``"local"`` (``workers`` processes) or ``"ray"``
            (a Ray cluster, ``dropkit.lab.sweep``); the search shares its studies through ``storage``.
        progress: show progress; ``echo`` prints the plan and the answer (None: silent).

    Returns:
        :class:`dropkit.lab.advisor.answer.Advice`.

    Raises:
        ValueError, TypeError: a bad argument (before any store is opened), or a budget too small for the minimum
            search and confirmation (the message says how much is needed).
    """
    import torch

    threads = torch.get_num_threads()
    try:
        return _advise(**{k: v for k, v in locals().items() if k not in ("torch", "threads")})
    finally:
        torch.set_num_threads(threads)  # every run trains on one thread: a worker's share of the cores


def _advise(model, data, *, budget, methods, at, workers, db, out, storage, top_k, seeds, trials, cocktails, seed,
            model_params, train_size, val_size, test_size, data_seed, epochs, training, backend, ray_address,
            progress, echo):
    from dropkit.lab.advisor import budget as budget_mod
    from dropkit.lab.advisor.answer import Advice, Candidate, rank_candidates
    from dropkit.lab.advisor.arms import BASELINE_ARM, plan_arms
    from dropkit.lab.advisor.confirm import collect, confirmation_configs, run_confirmation
    from dropkit.lab.advisor.report import trial_curves, write_report
    from dropkit.lab.advisor.search import SearchSettings, best_trial, run_search, trials_used
    from dropkit.lab.advisor.withheld import withhold_test
    from dropkit.lab.store import Store
    import torch

    from dropkit.lab.train import RunConfig, get_dataset, primary_metric
    from dropkit.validation import check_writable_folder

    started = time.time()
    say = echo or (lambda *a, **k: None)
    # ---------------------------------------------------------------- validate everything first
    budget_s = budget_mod.parse_budget(budget)
    names = _method_list(methods)
    _check_int("workers", workers, 1)
    _check_int("top_k", top_k, 3)  # at least 3 candidates (or every arm, when fewer were searched)
    _check_int("seeds", seeds, budget_mod.MIN_SEEDS, optional=True)
    _check_int("trials", trials, 2, optional=True)
    _check_int("cocktails", cocktails, 0)
    _check_int("seed", seed, 0)
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if at is not None and (isinstance(at, str) or not all(isinstance(a, str) for a in at) or not at):
        raise TypeError(f"at must be a non-empty list of submodule names, got {at!r}")
    if storage is not None and (not isinstance(storage, str) or "://" not in storage):
        raise ValueError(f"storage must be an Optuna storage URL such as sqlite:///studies.db, got {storage!r}")
    db = Path(db)
    if db.exists() and db.is_dir():
        raise ValueError(f"db {str(db)!r} is a folder; give a file path such as lab-results/advise.db")
    # a folder that cannot be made would otherwise surface after the search (db) or the whole call (out)
    check_writable_folder(db.parent, "db", file=db)
    if out is not None:
        check_writable_folder(out, "out")
    training = dict(training or {})
    clash = sorted(set(training) & {"method", "params", "placement", "seed", "data", "model", "also"})
    if clash:
        raise ValueError(f"training may not set {clash}: they are the advisor's (pass them as arguments)")
    search_base = RunConfig.from_dict({**training, "data": data, "model": model,
                                       "model_params": dict(model_params or {}), "train_size": train_size,
                                       "val_size": val_size, "test_size": test_size, "data_seed": data_seed,
                                       "epochs": epochs, "seed": seed})
    dataset = get_dataset(search_base)
    if len(dataset.y_val) == 0:
        raise ValueError("val_size must be ≥ 1: the search scores trials on the validation split")
    # the confirmation trains on the whole training split: the search's training images, plus its validation
    # images when those were carved out of them (train_size None)
    confirm_base = dataclasses.replace(search_base, val_size=0)

    # ---------------------------------------------------------------- plan: points, arms, budget
    from dropkit.lab.train import build_run_model

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    net = build_run_model(search_base, dataset)
    arms, skipped = plan_arms(net, dataset.x_train[:2], names, at=at)
    singles = [a for a in arms if len(a.members) == 1]
    explicit = [a for a in arms if len(a.members) == 2]
    if not singles and not explicit:
        raise ValueError(f"none of the methods {names} fits the {model}: "
                         + "; ".join(f"{m}: {why}" for m, why in skipped.items()))
    points = {a.name: a.describe_points() for a in arms if not a.is_baseline}
    say(f"dropkit advise: {model} on {data}; insertion points:")
    for name, where in points.items():
        say(f"  {name}: {where}")
    for name, why in skipped.items():
        say(f"  skipped {name}: {why}")

    epoch_s, image_s = _time_epoch_and_evaluation(search_base, withhold_test(dataset))
    n_train, n_val, n_test = len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)
    from dropkit.lab.advisor.search import validation_epochs

    # a trial reads the validation split at its rungs and the training split once; a confirmation run the test
    # split and its training split (the search's training and validation images) once
    trial_eval_s = image_s * (n_val * len(validation_epochs(search_base.epochs)) + n_train)
    run_eval_s = image_s * (n_test + n_train + n_val)
    n_cocktails = min(cocktails, _possible_cocktails(singles))
    searched = len(singles) + len(explicit) + n_cocktails
    k = min(top_k, searched)
    plan = budget_mod.plan_budget(budget_s, epoch_s=epoch_s, epochs=search_base.epochs, arms=searched, top_k=k,
                                  workers=workers, trial_eval_s=trial_eval_s, run_eval_s=run_eval_s, seeds=seeds,
                                  trials=trials)
    say(f"plan: {searched} arms × {plan.trials} trials (+ the baseline once), then {k} candidates + baseline × "
        f"{plan.seeds} seeds; {epoch_s:.2f} s an epoch, {run_eval_s:.1f} s of evaluation a run → about "
        f"{plan.total_s / 60:.1f} of {budget_s / 60:.1f} min")

    # ---------------------------------------------------------------- search
    fingerprint = _fingerprint({k_: v for k_, v in search_base.to_dict().items() if k_ != "device"})
    url = storage or f"sqlite:///{db.with_suffix('.optuna.db')}"
    db.parent.mkdir(parents=True, exist_ok=True)
    deadline = started + budget_s - plan.confirm_s * budget_mod.SAFETY - budget_mod.FIXED_S
    # the single methods get their share of the search's time, so a slow machine still leaves the cocktails theirs
    first_share = (len(singles) + len(explicit)) / searched
    settings = SearchSettings(storage=url, prefix=fingerprint, trials=plan.trials, seed=seed, workers=workers,
                              deadline=time.time() + max(0.0, deadline - time.time()) * first_share)
    release = storage is None
    studies = run_search(search_base, [BASELINE_ARM, *singles, *explicit], settings, progress=progress,
                         release_interrupted=release)
    settings = dataclasses.replace(settings, deadline=deadline)
    ranked_singles = _ranked(singles, studies, best_trial)
    mixes = _cocktails(ranked_singles, n_cocktails)
    if mixes:
        say("cocktails: " + ", ".join(f"{a.name} ({a.describe_points()})" for a in mixes))
        studies.update(run_search(search_base, mixes, settings, progress=progress, release_interrupted=release))
        points.update({a.name: a.describe_points() for a in mixes})
    searched_arms = [*singles, *explicit, *mixes]
    ranked = _ranked(searched_arms, studies, best_trial)
    chosen = ranked[:k]
    if not chosen:
        raise RuntimeError("the search finished no trial of any method (see the studies in "
                           f"{url}); nothing to confirm")
    candidates = []
    for arm in chosen:
        best = best_trial(studies[arm.name])
        candidates.append(Candidate(arm, best.user_attrs["params"], float(best.value), trials_used(studies[arm.name])))

    # ---------------------------------------------------------------- confirmation
    confirm_seeds = list(range(seed + 1, seed + 1 + plan.seeds))
    configs = confirmation_configs(confirm_base, [(c.arm, c.params) for c in candidates], confirm_seeds)
    say(f"confirmation: {len(configs)} runs ({len(candidates)} candidates + baseline × {plan.seeds} seeds) "
        f"into {db}")
    with Store(db) as store:
        run_confirmation(configs, store, workers=workers, tag=f"advise-{fingerprint}", progress=progress,
                         backend=backend, ray_address=ray_address)
        runs = collect(configs, store)
    ranked_candidates, mde = rank_candidates(candidates, runs)

    base_runs = runs["none"]
    base_best = best_trial(studies["none"])
    baseline = {"test_mean": _mean(base_runs.test.values()), "gap": _mean(base_runs.gap.values()),
                "train_loss": _mean(base_runs.train_loss.values()),
                "search_value": float(base_best.value) if base_best is not None else math.nan}
    metric = "accuracy" if primary_metric(dataset.task) == "acc" else "Dice"
    setting = {"model": model, "data": data, "train_size": len(dataset.y_train), "val_size": len(dataset.y_val),
               "test_size": len(dataset.y_test), "epochs": search_base.epochs, "workers": workers,
               "budget_s": budget_s, "metric": metric, "model_params": dict(search_base.model_params),
               "db": str(db), "storage": url, "fingerprint": fingerprint}
    advice = Advice(setting=setting, candidates=ranked_candidates, baseline=baseline, skipped=skipped, points=points,
                    curves=trial_curves(studies), detectable=mde, seeds=confirm_seeds,
                    plan=dataclasses.asdict(plan),
                    trials={name: trials_used(study) for name, study in studies.items()})
    advice.wall_s = time.time() - started
    if out is not None:
        advice.report = write_report(advice, runs, out)
    say("")
    say(advice.summary())
    if advice.report:
        say(f"\nreport: {advice.report['index']}\n        {advice.report['markdown']}")
    say(f"wall time {advice.wall_s / 60:.1f} min")
    return advice


def _mean(values: Any) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


#: Images the calibration evaluates to time evaluation per image (the training images: the test split is withheld).
CALIBRATION_EVAL_IMAGES = 1000


def _time_epoch_and_evaluation(base: Any, data: Any) -> tuple[float, float]:
    """Seconds of one training epoch of the baseline on this thread, without validation or test (the second of
    two epochs: the first pays one-time costs: allocations, lazy imports), and seconds of evaluation per image
    (the trained baseline on up to ``CALIBRATION_EVAL_IMAGES`` training images, after one warm-up batch)."""
    from dropkit.lab.env import resolve_device
    from dropkit.lab.metrics import evaluate
    from dropkit.lab.train import train

    result, model, _ = train(dataclasses.replace(base, method="none", epochs=2), dataset=data,
                             evaluate_test=False, val_epochs=set())
    device = resolve_device(base.device)
    x, y = data.x_train[:CALIBRATION_EVAL_IMAGES], data.y_train[:CALIBRATION_EVAL_IMAGES]
    evaluate(model, x[:8], y[:8], data.task, data.num_classes, device)
    start = time.perf_counter()
    evaluate(model, x, y, data.task, data.num_classes, device)
    image_s = (time.perf_counter() - start) / max(1, len(y))
    return float(result["curves"][-1]["epoch_s"]), image_s


def _ranked(arms: Sequence[Any], studies: Mapping[str, Any], best_trial: Any) -> list[Any]:
    """Arms with a finished trial, best validation score first (ties: the order given)."""
    scored = [(best_trial(studies[a.name]), i, a) for i, a in enumerate(arms)]
    scored = [(t.value, i, a) for t, i, a in scored if t is not None]
    return [a for _, _, a in sorted(scored, key=lambda x: (-x[0], x[1]))]


def _possible_cocktails(singles: Sequence[Any]) -> int:
    from dropkit.lab.advisor.arms import cocktail

    return sum(cocktail(a.members[0], b.members[0]) is not None
               for i, a in enumerate(singles) for b in singles[i + 1:])


def _cocktails(ranked: Sequence[Any], n: int) -> list[Any]:
    """The ``n`` best pairs of single methods at disjoint points, ranked by the sum of their ranks."""
    from dropkit.lab.advisor.arms import cocktail

    pairs = []
    for i, a in enumerate(ranked):
        for j in range(i + 1, len(ranked)):
            mix = cocktail(a.members[0], ranked[j].members[0])
            if mix is not None:
                pairs.append((i + j, i, mix))
    return [mix for _, _, mix in sorted(pairs, key=lambda x: (x[0], x[1]))[:n]]
