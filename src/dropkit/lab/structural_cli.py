"""``dropkit probe width``: train a model with Structural Dropout, then evaluate every width of the slimmed
model on the validation split, store the accuracy-vs-width curve with parameter counts, and plot it.

Structural Dropout (Knodt 2022) trains one network whose every prefix of hidden units works on its own; after
training, ``dropkit.slim`` cuts the model to a width and ``dropkit.width_sweep`` picks the smallest width whose
validation accuracy is within a tolerance of the best. The run is stored like any lab run (kind ``probe``, tag
``width``), with the curve in its ``probe`` column, so a re-run skips it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dropkit.lab.cli import _add_training_args, _overrides, probe_subparsers

__all__ = ["register_commands", "width_probe", "plot_width_curve"]


def width_probe(config, *, step: int = 8, tolerance: float = 0.01) -> dict[str, Any]:
    """Train ``config`` (a RunConfig with method ``structural_dropout``) and sweep the widths on its validation
    split; return the run's result with ``probe = {"kind": "width", ...}`` and the test accuracy of the chosen
    slimmed model."""
    from dropkit.lab.train import evaluate, train
    from dropkit.slim import count_parameters, slim, width_sweep

    if config.method != "structural_dropout":
        raise ValueError(f"probe width: the method must be 'structural_dropout', got {config.method!r}")
    result, model, data = train(config)
    if len(data.y_val) == 0:
        raise ValueError("probe width: the run has no validation split; pass --val-size > 0")
    device = next(model.parameters()).device
    sweep = width_sweep(model, (data.x_val.to(device), data.y_val.to(device)), step=step, tolerance=tolerance)
    small = slim(model, sweep.chosen_width)
    test = evaluate(small, data.x_test, data.y_test, data.task, data.num_classes, device)
    result["probe"] = {"kind": "width", **sweep.as_dict(), "chosen_test_acc": test["acc"],
                       "chosen_parameters": count_parameters(small)}
    return result


def plot_width_curve(curve: dict[str, Any], path: str | Path, title: str = "Structural Dropout: width sweep") -> Path:
    """Accuracy and parameter count against width, the chosen width marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = curve["rows"]
    widths = [r["width"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120, constrained_layout=True)
    ax.plot(widths, [100 * r["accuracy"] for r in rows], marker="o", markersize=3, color="tab:blue",
            label="validation accuracy")
    ax.axvline(curve["chosen_width"], color="tab:green", linestyle="--",
               label=f"chosen width {curve['chosen_width']} (within {100 * curve['tolerance']:.1f} pt of best)")
    ax.set_xlabel("width (hidden units kept)")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(widths, [r["parameters"] / 1e3 for r in rows], color="tab:gray", linewidth=1, label="parameters")
    twin.set_ylabel("parameters of the slimmed model (thousands)", color="tab:gray")
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + twin.get_legend_handles_labels()[1]
    ax.legend(lines, labels, fontsize=8, loc="lower right")
    ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _cmd_probe_width(args: argparse.Namespace) -> int:
    from dropkit.lab.store import Store
    from dropkit.lab.train import RunConfig

    # One hidden layer of 512: the cut's H/c scale compounds across stacked Structural-Dropout layers.
    values = {"placement": "fc", "model_params": {"hidden": [args.hidden]}, **_overrides(args)}
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


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    p = probe_subparsers(subparsers).add_parser(
        "width", help="train with structural_dropout, then accuracy vs width of the slimmed model")
    _add_training_args(p, single=True)
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
