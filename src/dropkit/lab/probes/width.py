"""Structural Dropout's width probe (``dropkit probe width``): train a model with Structural Dropout, evaluate
every width of the slimmed model on the validation split, and plot the accuracy-vs-width curve with parameter
counts (the command stores it).

Structural Dropout (Knodt 2022) trains one network whose every prefix of hidden units works on its own; after
training, ``dropkit.slim`` cuts the model to a width and ``dropkit.width_sweep`` picks the smallest width whose
validation accuracy is within a tolerance of the best. The run is stored like any lab run (kind ``probe``, tag
``width``), with the curve in its ``probe`` column, so a re-run skips it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dropkit.lab.metrics import evaluate
from dropkit.lab.train import train
from dropkit.slim import count_parameters, slim, width_sweep

__all__ = ["width_probe", "plot_width_curve"]


def width_probe(config, *, step: int = 8, tolerance: float = 0.01) -> dict[str, Any]:
    """Train ``config`` (a RunConfig with method ``structural_dropout``) and sweep the widths on its validation
    split; return the run's result with ``probe = {"kind": "width", ...}`` and the test accuracy of the chosen
    slimmed model."""
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
