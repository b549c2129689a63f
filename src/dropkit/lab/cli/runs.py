"""The lab's run commands of ``dropkit``: ``run``, ``sweep``, ``report`` and ``lab``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dropkit.lab.cli.args import (DEFAULT_PROBE, DEFAULT_WORKERS, add_training_args, check_folder, check_runs,
                                  csv_methods, overrides, parse_params, parse_placement, print_metrics)

__all__ = ["add_commands"]


def _cmd_run(args: argparse.Namespace) -> int:
    from dropkit.lab.store import Store
    from dropkit.lab.sweep import execute
    from dropkit.lab.train import RunConfig, RunFailed

    values = overrides(args)
    values.update(method=args.method, seed=args.seed, params=parse_params(args.param))
    if args.placement is not None:
        values["placement"] = parse_placement(args.placement)
    if args.probe:
        values["probe"] = dict(DEFAULT_PROBE)
    config = RunConfig.from_dict(values)
    check_runs([config])
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
    if rec["status"] == "running":
        print(f"run {config.config_hash()} is being run by process {rec['owner']} on the same store; nothing to do",
              file=sys.stderr)
        return 0
    print(f"run {config.config_hash()} · {rec['status']} · {rec['wall_s'] or 0:.1f}s · stored in {args.db}")
    print_metrics(rec)
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
        check_folder(args.report, "--report")
    check_runs(configs)
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

    check_folder(args.out, "--out")
    rep = write_report(args.db, args.out, title=args.title)
    for comp in rep["comparisons"]:
        print(summary_table(comp), end="\n\n")
    print(f"report: {rep['index']}\n        {rep['markdown']}")
    return 0


def _cmd_lab(args: argparse.Namespace) -> int:
    if not args.fixed:
        from dropkit.lab.cli.advise import run_testbed

        return run_testbed(args)
    from dropkit.lab.suite import lab_configs, run_lab

    tail = f"{args.suite}{'-quick' if args.quick else ''}"
    db = args.db or str(Path("lab-results") / f"{tail}.db")
    out = args.out or str(Path("lab-results") / tail)
    check_folder(out, "--out")
    configs = lab_configs(args.suite, quick=args.quick, methods=csv_methods(args.methods), seeds=args.seeds,
                          overrides=overrides(args), probe=not args.no_probe)
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


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run``, ``sweep``, ``report`` and ``lab`` to the ``dropkit`` command."""
    p = subparsers.add_parser("run", help="train and evaluate one configuration into the store")
    p.add_argument("--method", required=True, help="a registered method, or 'none' for the no-dropout baseline")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="a method parameter (repeatable)")
    p.add_argument("--placement", default=None,
                   help="insertion group (conv, fc, branch, input), or points joined by '+': NAME is after "
                        "submodule NAME (its output), NAME:in before it (its input), e.g. 'features.relu3+head:in'; "
                        "default: the paper's placement (found automatically in your own model)")
    p.add_argument("--seed", type=int, default=0)
    add_training_args(p, single=True)
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

    p = subparsers.add_parser("lab", help="the advisor on the default testbed (the lab CNN, 1 000 Fashion-MNIST "
                                          "images, 10 minutes); --fixed: the fixed-strength comparison of every "
                                          "activation method vs no dropout")
    p.add_argument("--fixed", action="store_true",
                   help="the fixed-strength comparison (every method at its default strength, several seeds) "
                        "instead of the advisor; --suite, --quick, --no-probe, --variant, --preprocess, --backend "
                        "apply to it only")
    p.add_argument("--budget", default=None, help="the advisor's wall-clock budget (default 10m)")
    p.add_argument("--suite", choices=["classification", "segmentation", "blocks"], default="classification",
                   help="classification (default), segmentation (U-Net, Dice), blocks (maxout, stochastic pooling, "
                        "Standout as model variants)")
    p.add_argument("--methods", default=None, help="comma-separated names, or 'activation' (default) / 'all'; "
                                                  "the baseline 'none' is always an arm")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run of the whole pipeline")
    p.add_argument("--no-probe", action="store_true", help="skip the co-adaptation probe")
    add_training_args(p, single=False)
    p.add_argument("--db", default=None, help="store (default lab-results/<suite>.db; resumes)")
    p.add_argument("--out", default=None, help="report folder (default lab-results/<suite>/)")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--address", default=None, help="Ray cluster address")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"local runs at once, each on one torch thread (default {DEFAULT_WORKERS}: the cores here)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_lab)
