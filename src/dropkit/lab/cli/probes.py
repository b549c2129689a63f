"""``dropkit probe ...``: probes of trained models, stored like runs — ``coadaptation`` (mask a growing share of
the penultimate maps at test time) and ``width`` (Structural Dropout's accuracy against the slimmed width)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dropkit.lab.cli.args import add_training_args, check_folder, check_runs, csv_methods, overrides
from dropkit.lab.config import PROBE_FRACTIONS

__all__ = ["add_commands"]


def _cmd_probe_coadaptation(args: argparse.Namespace) -> int:
    from dropkit.lab.report import summary_table, write_report
    from dropkit.lab.store import Store
    from dropkit.lab.sweep import execute, method_names
    from dropkit.lab.train import RunConfig

    fractions = [float(f) for f in args.fractions.split(",")]
    probe = {"fractions": fractions, "repeats": args.repeats, "images": args.images}
    values = overrides(args)
    configs = [RunConfig.from_dict({**values, "method": m, "seed": s, "probe": probe})
               for s in range(args.seeds) for m in method_names(csv_methods(args.methods))]
    if args.out:
        check_folder(args.out, "--out")
    check_runs(configs)
    with Store(args.db) as store:
        counts = execute(configs, store, kind="probe", tag="probe", progress=not args.quiet, check=False)
        print(f"probe: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} already in {args.db}")
        if args.out:
            rep = write_report(store, args.out, title="dropkit co-adaptation probe")
            for comp in rep["comparisons"]:
                print(summary_table(comp), end="\n\n")
            print(f"report: {rep['index']}")
    return 0 if counts["failed"] == 0 else 1


def _cmd_probe_width(args: argparse.Namespace) -> int:
    from dropkit.lab.probes.width import plot_width_curve, width_probe
    from dropkit.lab.store import Store
    from dropkit.lab.train import RunConfig

    check_folder(args.out, "--out")  # written after the training: refused now
    # One hidden layer of 512: the cut's H/c scale compounds across stacked Structural-Dropout layers.
    values = {"placement": "fc", "model_params": {"hidden": [args.hidden]}, **overrides(args)}
    values.update({"method": "structural_dropout", "seed": args.seed, "params": {"lower_bound": args.lower_bound}})
    config = RunConfig.from_dict(values)
    h = config.config_hash() + f"-width-{args.step}-{args.tolerance}"
    with Store(args.db) as store:
        if store.status(h) == "done":
            result = next(r for r in store.runs(kind="probe", tag="width", curves=False) if r["config_hash"] == h)
            curve = result["probe"]
            print(f"probe width: already in {args.db}; re-plotting", file=sys.stderr)
        else:
            store.claim(h, {**config.to_dict(), "probe": {"kind": "width", "step": args.step,
                                                         "tolerance": args.tolerance}}, kind="probe", tag="width")
            try:
                result = width_probe(config, step=args.step, tolerance=args.tolerance)
            except Exception as err:
                store.fail(h, f"{type(err).__name__}: {err}")
                raise
            store.finish(h, result)
            curve = result["probe"]
    out = Path(args.out)
    figure = plot_width_curve(curve, out / "width.png")
    (out / "width.json").write_text(json.dumps(curve, indent=2))
    print(f"{'width':>6} {'val acc %':>10} {'parameters':>11}")
    for row in curve["rows"]:
        print(f"{row['width']:>6} {100 * row['accuracy']:>10.2f} {row['parameters']:>11}")
    print(f"best width {curve['best_width']} ({100 * curve['best_accuracy']:.2f} %); chosen width "
          f"{curve['chosen_width']} ({100 * curve['chosen_accuracy']:.2f} % validation, "
          f"{100 * curve['chosen_test_acc']:.2f} % test, {curve['chosen_parameters']} of {curve['full_parameters']} "
          f"parameters)")
    print(f"figure: {figure}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``probe coadaptation`` and ``probe width`` to the ``dropkit`` command."""
    p = subparsers.add_parser("probe", help="probes of trained models (co-adaptation, width), stored like runs")
    probes = p.add_subparsers(dest="probe", required=True, metavar="PROBE")
    p = probes.add_parser("coadaptation", help="mask a growing share of the penultimate maps at test time "
                                               "(Heuristic Dropout Fig. 4)")
    p.add_argument("--methods", default="none,dropout", help="comma-separated names, or 'activation'")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--fractions", default=",".join(f"{f:g}" for f in PROBE_FRACTIONS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=1000)
    add_training_args(p, single=True)
    p.add_argument("--db", default="runs.db")
    p.add_argument("--out", default=None, metavar="DIR", help="write the report to DIR")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_probe_coadaptation)

    p = probes.add_parser(
        "width", help="train with structural_dropout, then accuracy vs width of the slimmed model")
    add_training_args(p, single=True)
    p.set_defaults(model="mlp", val_size=1000, epochs=20)  # the paper's setting: Structural Dropout in an MLP
    p.add_argument("--seed", type=int, default=0)
    # The reference's MLP instance is StructuredDropout(p=0.5, lower_bound=32): with cuts down to 1 of 512 units the
    # kept unit is scaled by 512 and SGD diverges (seen here at lower_bound=1).
    p.add_argument("--hidden", type=int, default=512, help="width H of the MLP's hidden layer (default 512)")
    p.add_argument("--lower-bound", type=int, default=32, help="smallest cut during training (default 32)")
    p.add_argument("--step", type=int, default=8, help="spacing of the widths tried (default 8)")
    p.add_argument("--tolerance", type=float, default=0.01, help="accuracy loss allowed from the best (0.01 = 1 pt)")
    p.add_argument("--db", default="runs.db")
    p.add_argument("--out", default="lab-results/width", help="folder for width.png and width.json")
    p.set_defaults(func=_cmd_probe_width)
