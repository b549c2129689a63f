"""The lab's sub-commands of ``dropkit``: ``run``, ``sweep``, ``report``, ``probe coadaptation`` and ``lab``.

``dropkit.cli`` calls :func:`register_commands`. Other modules add probes with
``probe_subparsers(subparsers).add_parser("width", ...)`` (the ``probe`` command is created by whoever asks first).
"""

from __future__ import annotations

import argparse
import os
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register_commands", "probe_subparsers", "parse_params"]

_PROBE_ATTR = "_dropkit_probe_subparsers"


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["p=0.2", "block_size=3", "gamma_range=[0.3,0.6]"]`` → dict; values are JSON when they parse, else text."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param must look like NAME=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params[key.strip()] = value
    return params


def _csv_methods(text: str | None) -> str | list[str]:
    if text is None:
        return "activation"
    return text if text in ("all", "activation", "stateful", "wrapper", "block") else \
        [m.strip() for m in text.split(",") if m.strip()]


def _add_training_args(p: argparse.ArgumentParser, *, single: bool) -> None:
    g = p.add_argument_group("data and model")
    g.add_argument("--data", default=None if not single else "fashion_mnist",
                   help="fashion_mnist, organs (generated segmentation set), an .npz file or a folder")
    g.add_argument("--model", default=None if not single else "cnn", choices=["cnn", "resnet", "mlp", "edge_mlp", "unet"])
    g.add_argument("--train-size", type=int, default=None if not single else 1000,
                   help="training images (a stratified subset)")
    g.add_argument("--val-size", type=int, default=None, help="validation images carved from the training data")
    g.add_argument("--test-size", type=int, default=None, help="test images (a stratified subset; default all)")
    g.add_argument("--data-seed", type=int, default=None if not single else 0, help="fixes the subsets")
    g.add_argument("--variant", default=None, choices=["maxout", "stochastic_pooling", "standout"],
                   help="a block regularizer built into the model (cnn: maxout, stochastic_pooling; mlp: maxout, "
                        "standout)")
    g.add_argument("--preprocess", choices=["edges"], default=None,
                   help="edges: the dental-imaging recipe's edge maps (erosion, blur, Canny) before normalisation")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=None if not single else 30)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--optimizer", choices=["sgd", "adam"], default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--momentum", type=float, default=None)
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--lr-schedule", choices=["cosine", "constant"], default=None)
    t.add_argument("--test-every", type=int, default=None, help="also test every k epochs (0: at the end only)")
    t.add_argument("--device", default=None, help="auto (CUDA when present), cpu, cuda, cuda:N")
    t.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (not part of the config; 1 is faster on a busy machine)")


def _set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be ≥ 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    _set_threads(args)
    keys = ("data", "model", "variant", "train_size", "val_size", "test_size", "data_seed", "preprocess", "epochs", "batch_size",
            "optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "test_every", "device")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _check_folder(path: str | os.PathLike, flag: str) -> None:
    """Refuse, before any run, an output folder that cannot be created (a file in its way, or no permission)."""
    target = Path(path)
    for existing in (target, *target.parents):
        if existing.exists():
            if not existing.is_dir():
                raise ValueError(f"{flag} {str(path)!r}: {str(existing)!r} is a file, not a folder; give a folder path")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise ValueError(f"{flag} {str(path)!r}: cannot write in {str(existing)!r}")
            return


def _check_runs(configs: list[Any]) -> None:
    """Check every config against its data (parameters, data, validation split) before the store is opened."""
    from dropkit.lab.train import check_run

    for config in configs:
        check_run(config)


def _print_metrics(result: dict[str, Any]) -> None:
    m = result["metrics"]
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
    print(json.dumps(shown, indent=None))


# ---------------------------------------------------------------------------------------------- commands
def _cmd_run(args: argparse.Namespace) -> int:
    from dropkit.lab.store import Store
    from dropkit.lab.sweep import execute
    from dropkit.lab.train import RunConfig, RunFailed

    values = _overrides(args)
    values.update(method=args.method, seed=args.seed, params=parse_params(args.param))
    if args.placement is not None:
        values["placement"] = args.placement.split("+") if "+" in args.placement or "." in args.placement \
            else args.placement
    if args.probe:
        values["probe"] = {"fractions": [0.0, 0.1, 0.2, 0.3, 0.5, 0.7], "repeats": 3, "images": 1000}
    config = RunConfig.from_dict(values)
    _check_runs([config])
    with Store(args.db) as store:
        if store.status(config.config_hash()) == "done":
            print(f"already in {args.db} (config {config.config_hash()}); nothing to do", file=sys.stderr)
        else:
            try:
                execute([config], store, progress=not args.quiet, stop_on_failure=True, check=False)
            except RunFailed as err:
                print(f"dropkit run: failed (stored as failed in {args.db}): {err}", file=sys.stderr)
                return 1
        rec = next(r for r in store.runs(curves=False) if r["config_hash"] == config.config_hash())
    print(f"run {config.config_hash()} · {rec['status']} · {rec['wall_s'] or 0:.1f}s · stored in {args.db}")
    _print_metrics(rec)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from dropkit.lab.report import write_report
    from dropkit.lab.store import Store
    from dropkit.lab.sweep import execute, expand_grid, load_sweep

    configs, tag = expand_grid(load_sweep(args.config))
    if args.dry_run:
        for c in configs:
            print(c.config_hash(), json.dumps(c.to_dict(), sort_keys=True))
        print(f"{len(configs)} runs", file=sys.stderr)
        return 0
    if args.report:
        _check_folder(args.report, "--report")
    _check_runs(configs)
    with Store(args.db) as store:
        counts = execute(configs, store, backend=args.backend, tag=tag, ray_address=args.address,
                         progress=not args.quiet, workers=args.workers, check=False)
        print(f"sweep: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} already in {args.db}")
        if args.report:
            rep = write_report(store, args.report)
            print(f"report: {rep['index']}")
    return 0 if counts["failed"] == 0 else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from dropkit.lab.report import summary_table, write_report

    _check_folder(args.out, "--out")
    rep = write_report(args.db, args.out, title=args.title)
    for comp in rep["comparisons"]:
        print(summary_table(comp), end="\n\n")
    print(f"report: {rep['index']}\n        {rep['markdown']}")
    return 0


def _cmd_probe_coadaptation(args: argparse.Namespace) -> int:
    from dropkit.lab.report import summary_table, write_report
    from dropkit.lab.store import Store
    from dropkit.lab.sweep import execute, method_names
    from dropkit.lab.train import RunConfig

    fractions = [float(f) for f in args.fractions.split(",")]
    probe = {"fractions": fractions, "repeats": args.repeats, "images": args.images}
    values = _overrides(args)
    configs = [RunConfig.from_dict({**values, "method": m, "seed": s, "probe": probe})
               for s in range(args.seeds) for m in method_names(_csv_methods(args.methods))]
    if args.out:
        _check_folder(args.out, "--out")
    _check_runs(configs)
    with Store(args.db) as store:
        counts = execute(configs, store, kind="probe", tag="probe", progress=not args.quiet, check=False)
        print(f"probe: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} already in {args.db}")
        if args.out:
            rep = write_report(store, args.out, title="dropkit co-adaptation probe")
            for comp in rep["comparisons"]:
                print(summary_table(comp), end="\n\n")
            print(f"report: {rep['index']}")
    return 0 if counts["failed"] == 0 else 1


def _cmd_lab(args: argparse.Namespace) -> int:
    from dropkit.lab.suite import lab_configs, run_lab

    tail = f"{args.suite}{'-quick' if args.quick else ''}"
    db = args.db or str(Path("lab-results") / f"{tail}.db")
    out = args.out or str(Path("lab-results") / tail)
    _check_folder(out, "--out")
    configs = lab_configs(args.suite, quick=args.quick, methods=_csv_methods(args.methods), seeds=args.seeds,
                          overrides=_overrides(args), probe=not args.no_probe)
    n_arms = len({(c.model, c.variant, c.method) for c in configs})
    models = "/".join(sorted({c.model for c in configs}))
    print(f"dropkit lab ({args.suite}{', quick' if args.quick else ''}): {n_arms} arms × "
          f"{len({c.seed for c in configs})} seeds = {len(configs)} runs of {configs[0].epochs} epochs "
          f"on {configs[0].data} / {models}; store {db}", file=sys.stderr)
    result = run_lab(configs, db=db, out=out, backend=args.backend, ray_address=args.address,
                     progress=not args.quiet, workers=args.workers)
    for table in result["tables"]:
        print(table, end="\n\n")
    c = result["counts"]
    print(f"{c['done']} runs done, {c['failed']} failed, {c['skipped']} resumed from the store; "
          f"wall time {result['wall_s'] / 60:.1f} min")
    print(f"report: {result['report']}")
    return 0


# -------------------------------------------------------------------------------------------- registration
# Two 1-thread runs side by side beat one 2-thread run on small CNNs; more workers than cores only contend.
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))


def probe_subparsers(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The sub-parsers of ``dropkit probe`` (created on first use), so other modules can add their probes."""
    existing = getattr(subparsers, _PROBE_ATTR, None)
    if existing is not None:
        return existing
    p = subparsers.add_parser("probe", help="probes of trained models (co-adaptation, …), stored like runs")
    probes = p.add_subparsers(dest="probe", required=True, metavar="PROBE")
    setattr(subparsers, _PROBE_ATTR, probes)
    return probes


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run``, ``sweep``, ``report``, ``probe coadaptation`` and ``lab`` to the ``dropkit`` command."""
    p = subparsers.add_parser("run", help="train and evaluate one configuration into the store")
    p.add_argument("--method", required=True, help="a registered method, or 'none' for the no-dropout baseline")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="a method parameter (repeatable)")
    p.add_argument("--placement", default=None,
                   help="insertion group (conv, fc, branch, input) or submodule names joined by '+'; "
                        "default: the paper's placement")
    p.add_argument("--seed", type=int, default=0)
    _add_training_args(p, single=True)
    p.add_argument("--probe", action="store_true", help="also run the co-adaptation probe after training")
    p.add_argument("--db", default="runs.db", help="SQLite store (default runs.db)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)

    p = subparsers.add_parser("sweep", help="run a grid (TOML or YAML) of methods × seeds × data × sizes × params")
    p.add_argument("config", help="sweep file (.toml; .yaml with PyYAML)")
    p.add_argument("--db", default="runs.db")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start Ray locally)")
    p.add_argument("--report", default=None, metavar="DIR", help="write the report to DIR when done")
    p.add_argument("--dry-run", action="store_true", help="print the expanded runs and stop")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"local runs at once, each on one torch thread (default {DEFAULT_WORKERS}: the cores here)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_sweep)

    p = subparsers.add_parser("report", help="write DIR/index.html and DIR/report.md with figures from a store")
    p.add_argument("--db", default="runs.db")
    p.add_argument("--out", default="report")
    p.add_argument("--title", default="dropkit lab report")
    p.set_defaults(func=_cmd_report)

    probes = probe_subparsers(subparsers)
    p = probes.add_parser("coadaptation", help="mask a growing share of the penultimate maps at test time "
                                               "(Heuristic Dropout Fig. 4)")
    p.add_argument("--methods", default="none,dropout", help="comma-separated names, or 'activation'")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--fractions", default="0,0.1,0.2,0.3,0.5,0.7")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=1000)
    _add_training_args(p, single=True)
    p.add_argument("--db", default="runs.db")
    p.add_argument("--out", default=None, metavar="DIR", help="write the report to DIR")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_probe_coadaptation)

    p = subparsers.add_parser("lab", help="the default comparison: every activation method vs no dropout, "
                                          "several seeds, then the report")
    p.add_argument("--suite", choices=["classification", "segmentation", "blocks"], default="classification",
                   help="classification (default), segmentation (U-Net, Dice), blocks (maxout, stochastic pooling, "
                        "Standout as model variants)")
    p.add_argument("--methods", default=None, help="comma-separated names, or 'activation' (default) / 'all'")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run of the whole pipeline")
    p.add_argument("--no-probe", action="store_true", help="skip the co-adaptation probe")
    _add_training_args(p, single=False)
    p.add_argument("--db", default=None, help="store (default lab-results/<suite>.db; resumes)")
    p.add_argument("--out", default=None, help="report folder (default lab-results/<suite>/)")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--address", default=None, help="Ray cluster address")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"local runs at once, each on one torch thread (default {DEFAULT_WORKERS}: the cores here)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_lab)
