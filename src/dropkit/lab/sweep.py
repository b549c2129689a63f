"""Sweeps: a grid over methods × seeds × datasets × train sizes × models × method parameters, run by a local
executor (default) or on a Ray cluster, into the same store.

A sweep file (TOML; YAML too when PyYAML is installed)::

    tag = "fmnist-small"                 # optional label stored with every run

    [grid]                               # every list is an axis of the cartesian product
    methods = ["none", "dropout", "dropblock"]   # or "activation" / "all": every registered method of that kind
    seeds = 5                            # an integer n means seeds 0 … n-1; or a list
    data = ["fashion_mnist"]
    train_sizes = [1000]
    models = ["cnn"]

    [run]                                # settings shared by every run (see RunConfig)
    epochs = 20
    group_params = { conv = { p = 0.2 } }

    [params.dropblock]                   # a method's parameters; a list is an axis for that method only
    p = [0.1, 0.2]

Runs are ordered seed by seed, so a sweep stopped early holds complete paired sets for its first seeds. A re-run
skips the runs the store has finished and redoes unfinished and failed ones. Every config is checked (method
parameters on the real feature shapes, the data, the validation split a method needs) before the first run is
claimed, so a bad grid writes nothing. Each run is claimed just before it starts: two sweeps on one store share
the work, each skipping the runs the other holds. Worker processes die with the sweep that started them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dropkit.lab.progress import Progress
from dropkit.lab.store import Store
from dropkit.lab.config import BASELINE, RunConfig
from dropkit.lab.train import RunFailed, check_run, run

__all__ = ["load_sweep", "expand_grid", "execute", "method_names", "BACKENDS"]

BACKENDS = ("local", "ray")
_TOP_KEYS = {"tag", "grid", "run", "params"}
_GRID_KEYS = {"methods": "method", "seeds": "seed", "data": "data", "train_sizes": "train_size", "models": "model"}


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Read a sweep file (``.toml``; ``.yaml``/``.yml`` with PyYAML)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            return tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: invalid TOML: {err}") from None
    if suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ModuleNotFoundError:
            raise ValueError(f"{path}: YAML sweeps need PyYAML (pip install pyyaml); or write the sweep as TOML") from None
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: invalid YAML: {err}") from None
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: a sweep file must hold a mapping at the top level")
        return spec
    raise ValueError(f"sweep file must end in .toml, .yaml or .yml, got {path.name!r}")


def method_names(spec: str | Sequence[str]) -> list[str]:
    """Expand ``"activation"`` / ``"all"`` / ``"<kind>"`` into the registered names (baseline first); check lists."""
    import dropkit
    from dropkit.registry import KINDS

    if isinstance(spec, str):
        if spec == "all":
            return [BASELINE] + [c.name for c in dropkit.methods()]
        if spec in KINDS:
            return [BASELINE] + [c.name for c in dropkit.methods(kind=spec)]
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    if not isinstance(spec, Sequence) or not spec or not all(isinstance(m, str) for m in spec):
        raise ValueError(f"methods must be 'all', a kind {KINDS} or a non-empty list of method names, got {spec!r}")
    for name in spec:
        if name != BASELINE:
            dropkit.get_card(name)
    return list(dict.fromkeys(spec))


def _as_list(value: Any, name: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError(f"grid.{name} must not be empty")
    return values


def expand_grid(spec: Mapping[str, Any]) -> tuple[list[RunConfig], str | None]:
    """The sweep's run configs (seed-major order) and its tag. Bad keys, names and values raise ValueError."""
    import dropkit

    if not isinstance(spec, Mapping):
        raise TypeError(f"a sweep must be a mapping, got {type(spec).__name__}")
    unknown = sorted(set(spec) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"sweep: unknown top-level key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
    grid = spec.get("grid", {})
    shared = dict(spec.get("run", {}))
    params = spec.get("params", {})
    tag = spec.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise TypeError(f"sweep: tag must be a string, got {tag!r}")
    for name, table in (("grid", grid), ("run", shared), ("params", params)):
        if not isinstance(table, Mapping):
            raise TypeError(f"sweep: [{name}] must be a table, got {table!r}")
    unknown = sorted(set(grid) - set(_GRID_KEYS))
    if unknown:
        raise ValueError(f"sweep: unknown grid key(s) {unknown}; allowed: {sorted(_GRID_KEYS)}")
    clash = sorted(set(shared) & {field for key, field in _GRID_KEYS.items() if key in grid})
    if clash:
        raise ValueError(f"sweep: {clash} set both in [grid] and in [run]")
    if "methods" not in grid and "method" not in shared:
        raise ValueError("sweep: give grid.methods (a list of method names, or 'activation' / 'all')")
    methods = method_names(grid["methods"]) if "methods" in grid else [shared.pop("method")]
    if "seeds" in grid:
        count = grid["seeds"]
        if isinstance(count, int) and not isinstance(count, bool):
            if count < 1:
                raise ValueError(f"sweep: grid.seeds must be a count ≥ 1 or a list of seeds, got {count}")
            seeds = list(range(count))
        else:
            seeds = _as_list(count, "seeds")
    else:
        seeds = [shared.pop("seed", 0)]
    axes = {field: _as_list(grid[key], key) if key in grid else [shared.pop(field)] if field in shared else [None]
            for key, field in _GRID_KEYS.items() if field not in ("method", "seed")}
    for name, table in params.items():
        if name not in methods:
            raise ValueError(f"sweep: [params.{name}] given but {name!r} is not among the methods {methods}")
        if not isinstance(table, Mapping):
            raise TypeError(f"sweep: [params.{name}] must be a table, got {table!r}")
        card = dropkit.get_card(name)
        allowed = set(card.defaults) | set(card.required)
        bad = sorted(set(table) - allowed)
        if bad:
            raise ValueError(f"sweep: [params.{name}] has unknown parameter(s) {bad}; allowed: {sorted(allowed)}")

    configs: list[RunConfig] = []
    seen: set[str] = set()
    for seed, data, train_size, model in itertools.product(seeds, axes["data"], axes["train_size"], axes["model"]):
        for method in methods:
            table = params.get(method, {})
            keys = list(table)
            for combo in itertools.product(*[v if isinstance(v, list) else [v] for v in table.values()]):
                values = dict(shared)
                values.update(method=method, seed=seed, params=dict(zip(keys, combo)))
                for field, value in (("data", data), ("train_size", train_size), ("model", model)):
                    if value is not None:
                        values[field] = value
                config = RunConfig.from_dict(values)
                h = config.config_hash()
                if h not in seen:
                    seen.add(h)
                    configs.append(config)
    return configs, tag


# ---------------------------------------------------------------------------------------------- execution
def _describe(config: RunConfig) -> str:
    """``dropout(p=0.5)+dropblock(p=0.1,block_size=3) seed 2``: every method of a cocktail, floats to 3 digits."""
    def one(method: str, params: Mapping[str, Any]) -> str:
        text = ",".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        return f"{method}({text})" if text else method

    methods = [one(config.method, config.params)] + [one(m["method"], m.get("params", {})) for m in config.also]
    return f"{'+'.join(methods)} seed {config.seed}"


def _error_text(err: BaseException) -> str:
    if isinstance(err, RunFailed):
        return str(err)
    tb = traceback.extract_tb(err.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(err).__name__}: {err}{where}"


def _run_outcome(config_dict: dict[str, Any]) -> tuple[str, Any]:
    """Run one config and catch its failure: ``("done", result)`` or ``("failed", message)``. Used by Ray."""
    try:
        return "done", run(RunConfig.from_dict(config_dict))
    except Exception as err:  # a worker must report, never crash the sweep
        return "failed", _error_text(err)


def execute(configs: Sequence[RunConfig], store: Store, *, backend: str = "local", tag: str | None = None,
            kind: str = "run", progress: bool = True, ray_address: str | None = None,
            stop_on_failure: bool = False, workers: int = 1, check: bool = True) -> dict[str, int]:
    """Run every config the store has not finished; return counts ``{"done", "failed", "skipped"}``.

    ``skipped`` counts the runs already done and those another live sweep on the same store holds.

    Args:
        backend: ``"local"`` (in this machine's processes) or ``"ray"`` (``ray.init(ray_address)``: a local Ray
            instance when no address is given; one CPU per run).
        workers: with the local backend, how many runs go at once: 1 runs them one after another in this
            process; more starts that many worker processes of one torch thread each (on 2 cores, two 1-thread
            runs side by side finish ~1.5× sooner than one 2-thread run after another: small convolutions scale
            poorly across threads). Results are written by this process only, one transaction per run.
        stop_on_failure: re-raise the first failure (``dropkit run``) instead of recording it and going on.
        check: check every config with :func:`~dropkit.lab.train.check_run` before claiming any (ValueError or
            TypeError for a bad parameter, bad data, a missing validation split); False when the caller did.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer ≥ 1, got {workers!r}")
    pending, passed, seen = [], [], set()
    for config in configs:
        h = config.config_hash()
        if h not in seen and store.status(h) != "done":
            pending.append(config)
        else:
            passed.append(config)
        seen.add(h)
    if check:
        for config in pending:
            check_run(config)
    bar = Progress(len(configs), sum(c.epochs for c in configs), enabled=progress)
    for config in passed:
        bar.skip(config.epochs)
    counts = {"done": 0, "failed": 0, "skipped": len(configs) - len(pending)}
    try:
        if backend == "ray" and pending:
            _execute_ray(pending, store, bar, counts, tag=tag, kind=kind, address=ray_address)
        elif workers > 1 and len(pending) > 1:
            _execute_pool(pending, store, bar, counts, tag=tag, kind=kind, workers=workers)
        else:
            for config in pending:
                _execute_one(config, store, bar, counts, tag=tag, kind=kind, stop_on_failure=stop_on_failure)
    finally:
        bar.close()
    return counts


def _claim(config: RunConfig, store: Store, bar: Progress, counts: dict[str, int], *, tag: str | None,
           kind: str) -> bool:
    """Claim a run just before it starts; False (and counted as skipped) when it is done or held elsewhere."""
    if store.try_claim(config.config_hash(), config.to_dict(), kind=kind, tag=tag) is None:
        counts["skipped"] += 1
        bar.skip(config.epochs)
        return False
    return True


def _execute_one(config: RunConfig, store: Store, bar: Progress, counts: dict[str, int], *, tag: str | None,
                 kind: str, stop_on_failure: bool) -> None:
    h = config.config_hash()
    if not _claim(config, store, bar, counts, tag=tag, kind=kind):
        return
    bar.start_run(_describe(config))
    try:
        result = run(config, on_epoch=lambda e, row: bar.epoch(e, config.epochs, row))
    except Exception as err:
        message = _error_text(err)
        store.fail(h, message)
        counts["failed"] += 1
        bar.end_run("failed", config.epochs, 0.0, message)
        if stop_on_failure:
            raise
        return
    store.finish(h, result)
    counts["done"] += 1
    m = result["metrics"]
    bar.end_run("done", config.epochs, result["wall_s"], f"{result['primary']} {m[result['primary']]:.4f}")


def _execute_ray(pending: Sequence[RunConfig], store: Store, bar: Progress, counts: dict[str, int], *,
                 tag: str | None, kind: str, address: str | None) -> None:
    try:
        import ray
    except ModuleNotFoundError:
        raise ValueError("--backend ray needs Ray, which is not installed: pip install 'dropkit[ray]' "
                         "(or pip install ray), or use --backend local") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(_run_outcome)
    refs = {}
    for config in pending:
        if _claim(config, store, bar, counts, tag=tag, kind=kind):
            refs[remote.remote(config.to_dict())] = config
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        for ref in ready:
            _record_outcome(refs.pop(ref), ray.get(ref), store, bar, counts)


def _die_with_parent(parent: int) -> None:
    """End this worker process when the sweep process ``parent`` ends, however it ends (``kill -9`` included).

    On Linux the kernel sends SIGKILL at the parent's death (``prctl(PR_SET_PDEATHSIG)``); elsewhere, and as a
    second line, a daemon thread checks once a second whether this process has been re-parented.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            threading.Event().wait(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="dropkit-parent-watch", daemon=True).start()


def _init_worker(parent: int) -> None:
    """A sweep worker: one torch thread, dies with its sweep, and leaves Ctrl-C to the sweep, which stops it."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)


def _stop_workers(pool: Any) -> None:
    """Stop a process pool now: its runs are unfinished in the store and will be redone on resume."""
    # Taken before shutdown(): killing "the pool's processes" after it killed none, and the interpreter's exit
    # then waited for the running workers to finish their runs.
    processes = _pool_processes(pool)
    manager = getattr(pool, "_executor_manager_thread", None)
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(timeout=5)
    pool.shutdown(wait=False, cancel_futures=True)
    # With its workers gone the pool's manager thread finds it broken and closes its queues, which releases their
    # semaphores (else the resource tracker warns of "leaked semaphore objects" at exit). The wait is bounded so
    # that a stuck manager thread can never keep an interrupted sweep from ending.
    if manager is not None:
        manager.join(timeout=10)


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT in this process for the duration (no-op off the main thread, where handlers cannot change)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class WorkerDied(RuntimeError):
    """A sweep worker process ended without a result (killed from outside, e.g. by the out-of-memory killer)."""


def describe_exit_codes(codes: Sequence[int]) -> str:
    """``killed by SIGKILL, exit code 1`` for the exit codes of dead worker processes (negative: a signal)."""
    return ", ".join(f"killed by {signal.Signals(-c).name}" if c < 0 else f"exit code {c}" for c in codes)


def _pool_processes(pool: Any) -> list[Any]:
    """A process pool's worker processes (read before ``shutdown()``, which drops the pool's list of them)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _worker_died(pool: Any, in_flight: Sequence[RunConfig], counts: Mapping[str, int]) -> WorkerDied:
    processes = _pool_processes(pool)
    for process in processes:  # the pool may report the break before the dead process's exit code is read
        process.join(timeout=2)
    codes = sorted({p.exitcode for p in processes if p.exitcode not in (None, 0)})
    if len(codes) > 1:  # the pool ends the surviving workers with SIGTERM: name what killed the first one
        codes = [c for c in codes if c != -signal.SIGTERM]
    how = describe_exit_codes(codes)
    oom = (" — SIGKILL is what the out-of-memory killer sends: fewer --workers, a smaller batch or model"
           if -signal.SIGKILL in codes else "")
    runs = "; ".join(_describe(c) for c in in_flight)
    return WorkerDied(f"a sweep worker process died ({how or 'no exit code'}){oom}; the runs in flight ({runs}) "
                      f"are not recorded, the {counts['done']} finished here are kept: run the same command again to "
                      "resume")


def _execute_pool(pending: Sequence[RunConfig], store: Store, bar: Progress, counts: dict[str, int], *,
                  tag: str | None, kind: str, workers: int) -> None:
    import concurrent.futures
    import multiprocessing

    # spawn, not fork: a forked child would inherit this process's torch thread pool and open SQLite handle.
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                                  initargs=(os.getpid(),))
    queue = iter(pending)
    futures: dict[concurrent.futures.Future, RunConfig] = {}

    def submit_next() -> None:
        # claim only what a worker is about to start, so another sweep on the store can take the rest
        for config in queue:
            if _claim(config, store, bar, counts, tag=tag, kind=kind):
                futures[pool.submit(_run_outcome, config.to_dict())] = config
                return

    try:
        # The first submits start the worker processes. They are started with SIGINT ignored, which a spawned
        # Python keeps from its first instruction: a terminal's Ctrl-C to the whole process group in a sweep's
        # first seconds would otherwise hit a worker still importing torch and print its traceback.
        with _sigint_ignored():
            for _ in range(workers):
                submit_next()
        while futures:
            # a bounded wait: a Ctrl-C delivered to another thread is acted on only when this one wakes up
            finished, _ = concurrent.futures.wait(futures, timeout=0.5,
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                config = futures.pop(future)
                try:
                    outcome = future.result()
                except concurrent.futures.process.BrokenProcessPool:
                    raise _worker_died(pool, [config, *futures.values()], counts) from None
                _record_outcome(config, outcome, store, bar, counts)
                submit_next()
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _record_outcome(config: RunConfig, outcome: tuple[str, Any], store: Store, bar: Progress,
                    counts: dict[str, int]) -> None:
    """Store a worker's ``("done", result)`` or ``("failed", message)`` and advance the progress bar."""
    status, payload = outcome
    bar.start_run(_describe(config))
    if status == "done":
        store.finish(config.config_hash(), payload)
        counts["done"] += 1
        primary = payload["primary"]
        bar.end_run("done", config.epochs, payload["wall_s"], f"{primary} {payload['metrics'][primary]:.4f}")
    else:
        store.fail(config.config_hash(), payload)
        counts["failed"] += 1
        bar.end_run("failed", config.epochs, 0.0, payload)
