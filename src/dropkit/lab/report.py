"""The report: ``DIR/report.md`` and ``DIR/index.html`` (static, opens offline) with PNG figures.

Runs are grouped into *comparisons*: runs whose settings agree on everything but the method, its parameters,
its placement and the seed (same data, model, sizes, training). Within a comparison each *arm* (a method with its
parameters) gets mean ± std over seeds of the test metric (accuracy, or Dice and IoU), the train–test gap, and a
paired t-test against the no-dropout baseline over the seeds both hold; the text says plainly when a difference
is within noise. Figures: box plots of the test metric per arm (with every seed as a dot, as in the Heuristic
Dropout paper), mean ± std and the gap, learning curves, and co-adaptation probe curves when runs hold them.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dropkit.lab.config import BASELINE
from dropkit.lab.stats import CONFIDENCE, binomial_se, mean_std, paired_test
from dropkit.lab.store import EXPERIMENT, Store

__all__ = ["summarize", "write_report", "summary_table", "markdown_table", "html_table"]

_ARM_FIELDS = ("method", "variant", "params", "placement", "group_params", "seed", "probe")


def _arm_label(config: dict[str, Any]) -> str:
    variant = config.get("variant")
    label = config["method"] if not variant else (variant if config["method"] == BASELINE
                                                  else f"{variant} + {config['method']}")
    if config["params"]:
        label += " " + ",".join(f"{k}={v}" for k, v in sorted(config["params"].items()))
    if config.get("placement") is not None:
        at = config["placement"]
        label += f" @{at if isinstance(at, str) else '+'.join(at)}"
    return label


def _is_baseline(arm: dict[str, Any]) -> bool:
    """The no-regularizer arm: no method and no block variant."""
    return arm["method"] == BASELINE and not arm.get("variant")


def _comparison_key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in _ARM_FIELDS}, sort_keys=True)


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group stored runs into comparisons and arms and compute the statistics (see the module docstring)."""
    import dropkit

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[_comparison_key(r["config"])].append(r)
    comparisons = []
    for key, members in groups.items():
        done = [r for r in members if r["status"] == "done"]
        setting = json.loads(key)
        primary = next((r["extra"].get("primary") for r in done if r.get("extra")), "test_acc")
        task = "segmentation" if primary == "test_dice" else "classification"
        arms: dict[str, dict[str, Any]] = {}
        for r in members:
            label = _arm_label(r["config"])
            arm = arms.setdefault(label, {"label": label, "method": r["config"]["method"],
                                          "variant": r["config"].get("variant"), "runs": [],
                                          "failed": [], "unfinished": 0})
            if r["status"] == "done":
                arm["runs"].append(r)
            elif r["status"] == "failed":
                arm["failed"].append(r)
            else:
                arm["unfinished"] += 1
        base_arm = next((a for a in arms.values() if _is_baseline(a)), None)
        base = {r["config"]["seed"]: r["metrics"][primary] for r in base_arm["runs"]} if base_arm else {}
        for arm in arms.values():
            vals = {r["config"]["seed"]: r["metrics"][primary] for r in arm["runs"]}
            arm["values"] = vals
            arm["mean"], arm["std"] = mean_std(list(vals.values()))
            arm["gap"] = mean_std([r["metrics"]["gap"] for r in arm["runs"]])
            train_key = primary.replace("test_", "train_")
            arm["train"] = mean_std([r["metrics"].get(train_key, float("nan")) for r in arm["runs"]])
            if task == "segmentation":
                arm["iou"] = mean_std([r["metrics"].get("test_iou", float("nan")) for r in arm["runs"]])
            arm["test"] = paired_test(vals, base) if base_arm is not None and arm is not base_arm else None
            arm["wall"] = mean_std([r["wall_s"] for r in arm["runs"] if r["wall_s"] is not None])
            arm["placement"] = arm["runs"][0]["placement"] if arm["runs"] else None
            arm["card"] = None
            shown = arm["method"] if arm["method"] != BASELINE else arm["variant"]  # the regularizer the arm adds
            if shown:
                try:
                    arm["card"] = dropkit.get_card(shown)
                except ValueError:
                    pass
        ordered = sorted(arms.values(), key=lambda a: (a is not base_arm, -(a["mean"] if a["runs"] else -1)))
        n_test = next((r["metrics"].get("n_test") for r in done), None)
        env = next((r["environment"] for r in done if r.get("environment")), {})
        comparisons.append({"setting": setting, "primary": primary, "task": task, "arms": ordered,
                            "baseline": base_arm, "n_test": n_test, "environment": env,
                            "wall_total": sum(r["wall_s"] or 0 for r in done), "n_done": len(done)})
    comparisons.sort(key=lambda c: -c["n_done"])
    return comparisons


def _pct(x: float, task: str) -> str:
    if x != x:
        return "–"
    return f"{100 * x:.2f}" if task == "classification" else f"{x:.4f}"


def _pm(ms: tuple[float, float], task: str) -> str:
    return f"{_pct(ms[0], task)} ± {_pct(ms[1], task)}" if ms[0] == ms[0] else "–"


def summary_rows(comp: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    task = comp["task"]
    metric = "test acc %" if task == "classification" else "test Dice"
    header = ["method", "n", metric]
    if task == "segmentation":
        header.append("test IoU")
    header += [f"vs baseline (paired, {100 * CONFIDENCE:g} % CI)", "verdict", "train–test gap", "placement"]
    rows = []
    for arm in comp["arms"]:
        n = len(arm["runs"])
        extra = f" (+{len(arm['failed'])} failed)" if arm["failed"] else ""
        row = [arm["label"], f"{n}{extra}", _pm((arm["mean"], arm["std"]), task)]
        if task == "segmentation":
            row.append(_pm(arm["iou"], task))
        test = arm["test"]
        if _is_baseline(arm):
            row += ["—", "baseline"]
        elif test is None:
            row += ["no baseline", "–"]
        elif test.n == 0:
            row += ["no common seeds", "–"]
        else:
            low, high = test.ci
            ci = "" if low != low else f" [{_pct(low, task)}, {_pct(high, task)}]"
            row += [f"{'+' if test.diff >= 0 else ''}{_pct(test.diff, task)}{ci}, better on {test.wins}/{test.n}",
                    test.verdict()]
        row.append(_pm(arm["gap"], task))
        pl = arm["placement"] or {}
        if _is_baseline(arm):
            row.append("—")
        elif arm["method"] == BASELINE:
            row.append("model variant")
        else:
            row.append((pl.get("group") or "+".join(pl.get("points", []))) or "–")
        rows.append(row)
    return header, rows


def summary_table(comp: dict[str, Any]) -> str:
    """Plain-text table of one comparison (what ``dropkit lab`` prints at the end)."""
    header, rows = summary_rows(comp)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- figures
def _figure(ncols: int = 1, width: float = 6.4, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _scale(task: str) -> float:
    return 100.0 if task == "classification" else 1.0


def _figures(comp: dict[str, Any], out: Path, prefix: str) -> list[tuple[str, str]]:
    """Write the comparison's PNGs; return (file name, caption) pairs."""
    task, scale = comp["task"], _scale(comp["task"])
    unit = "test accuracy (%)" if task == "classification" else "test Dice"
    arms = [a for a in comp["arms"] if a["runs"]]
    if not arms:
        return []
    labels = [a["label"] for a in arms]
    base = comp["baseline"]
    figs: list[tuple[str, str]] = []
    height = max(3.2, 0.38 * len(arms) + 1.2)

    # 1. box plots, every seed a dot (Heuristic Dropout Fig. 1 style), horizontal so long names fit
    fig, (ax,) = _figure(width=7.5, height=height)
    data = [[v * scale for v in a["values"].values()] for a in arms]
    import matplotlib

    new_mpl = tuple(int(v) for v in matplotlib.__version__.split(".")[:2]) >= (3, 10)
    orient = {"orientation": "horizontal"} if new_mpl else {"vert": False}
    ax.boxplot(data, **orient, tick_labels=labels, widths=0.55, showmeans=True,
               meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black", "markersize": 5})
    for i, vals in enumerate(data, start=1):
        ax.scatter(vals, [i] * len(vals), s=14, color="tab:blue", alpha=0.7, zorder=3)
    if base is not None and base["runs"]:
        ax.axvline(base["mean"] * scale, color="tab:red", linestyle="--", linewidth=1, label="baseline mean")
        ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title("Test metric per method over seeds")
    ax.grid(axis="x", alpha=0.3)
    name = f"{prefix}box.png"
    fig.savefig(out / name)
    figs.append((name, "Box plots of the test metric over seeds (dots: seeds; diamond: mean; dashed: baseline mean)."))

    # 2. mean ± std of the test metric, and the train–test gap
    fig, (ax1, ax2) = _figure(ncols=2, width=10, height=height)
    ys = list(range(len(arms)))
    colors = ["tab:gray" if _is_baseline(a) else "tab:blue" for a in arms]
    ax1.barh(ys, [a["mean"] * scale for a in arms], xerr=[a["std"] * scale for a in arms], color=colors,
             alpha=0.8, capsize=3)
    lo = min(a["mean"] - a["std"] for a in arms) * scale
    hi = max(a["mean"] + a["std"] for a in arms) * scale
    pad = max(0.5 * (hi - lo), 0.2 * scale / 100 if task == "classification" else 0.01)
    ax1.set_xlim(lo - pad, hi + pad)
    ax1.set_yticks(ys, labels)
    ax1.invert_yaxis()
    ax1.set_xlabel(f"{unit}, mean ± std")
    ax1.grid(axis="x", alpha=0.3)
    ax2.barh(ys, [a["gap"][0] * scale for a in arms], xerr=[a["gap"][1] * scale for a in arms], color=colors,
             alpha=0.8, capsize=3)
    ax2.set_yticks(ys, [""] * len(ys))
    ax2.invert_yaxis()
    ax2.set_xlabel("train − test gap" + (" (points)" if task == "classification" else ""))
    ax2.grid(axis="x", alpha=0.3)
    name = f"{prefix}mean_gap.png"
    fig.savefig(out / name)
    figs.append((name, "Left: mean ± std of the test metric. Right: the train–test gap (smaller: less overfitting)."))

    # 3. learning curves: validation metric and training loss, mean over seeds
    val_key = "val_acc" if task == "classification" else "val_dice"
    fig, (ax1, ax2) = _figure(ncols=2, width=11, height=4.2)
    cmap = _colors(len(arms))
    for color, arm in zip(cmap, arms):
        by_epoch: dict[int, list[dict[str, float]]] = defaultdict(list)
        for r in arm["runs"]:
            for row in r["curves"]:
                by_epoch[row["epoch"]].append(row)
        epochs = sorted(by_epoch)
        style = {"color": "black", "linewidth": 2.2} if _is_baseline(arm) else {"color": color, "linewidth": 1.2}
        for ax, key, k in ((ax1, val_key, scale), (ax2, "train_loss", 1.0)):
            ys_ = [sum(r.get(key, math.nan) for r in by_epoch[e]) / len(by_epoch[e]) * k for e in epochs]
            ax.plot(epochs, ys_, label=arm["label"], **style)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel(val_key.replace("_", " ") + (" (%)" if task == "classification" else ""))
    ax1.set_title("Validation metric (mean over seeds)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss (train mode)")
    ax2.set_title("Training loss (mean over seeds)")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend(fontsize=7, loc="upper right", ncol=1 if len(arms) < 8 else 2)
    name = f"{prefix}curves.png"
    fig.savefig(out / name)
    figs.append((name, "Learning curves: validation metric and training loss per epoch, mean over seeds "
                       "(black: no-dropout baseline)."))

    # 4. co-adaptation probe
    def coadaptation(run: dict) -> bool:  # width probes (dropkit probe width) are plotted by their own command
        return bool(run.get("probe")) and run["probe"].get("kind", "coadaptation") == "coadaptation"

    probed = [a for a in arms if any(coadaptation(r) for r in a["runs"])]
    if probed:
        fig, (ax,) = _figure(width=7, height=4.2)
        for color, arm in zip(_colors(len(probed)), probed):
            curves = [r["probe"] for r in arm["runs"] if coadaptation(r)]
            fr = curves[0]["fractions"]
            drop = [sum(c["drop"][i] for c in curves) / len(curves) * scale for i in range(len(fr))]
            style = {"color": "black", "linewidth": 2.2} if _is_baseline(arm) else {"color": color}
            ax.plot([100 * f for f in fr], drop, marker="o", markersize=3, label=arm["label"], **style)
        ax.set_xlabel("share of penultimate feature maps masked at test time (%)")
        ax.set_ylabel("fall of the test metric" + (" (points)" if task == "classification" else ""))
        ax.set_title("Co-adaptation probe (lower: less co-adapted features)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=1 if len(probed) < 8 else 2)
        name = f"{prefix}probe.png"
        fig.savefig(out / name)
        figs.append((name, "Co-adaptation probe (Heuristic Dropout §3.6, Fig. 4): the test metric's fall when a "
                           "growing share of the maps feeding the last layer is masked, mean over seeds."))
    return figs


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# -------------------------------------------------------------------------------------------------- writing
def _setting_line(comp: dict[str, Any]) -> str:
    s = comp["setting"]
    sizes = f"{s.get('train_size') or 'all'} training images"
    if comp["n_test"]:
        sizes += f", {comp['n_test']} test images"
    opt = (f"{s['optimizer'].upper()} lr {s['lr']}" + (f" momentum {s['momentum']} (Nesterov)"
                                                       if s["optimizer"] == "sgd" and s["momentum"] else "")
           + f", {s['lr_schedule']} schedule, weight decay {s['weight_decay']}, batch {s['batch_size']}")
    return f"data `{s['data']}` ({sizes}), model `{s['model']}`, {s['epochs']} epochs, {opt}."


def _noise_note(comp: dict[str, Any]) -> str:
    base = comp["baseline"]
    notes = []
    if comp["task"] == "classification" and comp["n_test"] and base is not None and base["runs"]:
        se = binomial_se(base["mean"], comp["n_test"])
        notes.append(f"One model's accuracy on {comp['n_test']} test images is uncertain by about ±{100 * se:.2f} "
                     f"points (1 SE, binomial); differences smaller than that per seed are noise.")
    notes.append("Each method is compared with the no-dropout baseline paired by seed (same initial weights and "
                 "batch order), by a two-sided paired t-test; the brackets hold the "
                 f"{100 * CONFIDENCE:g} % confidence interval of the mean paired difference; \"within noise\" "
                 "means p ≥ 0.05: the data do not show a difference, not that there is none.")
    notes.append("These runs show whether a regularizer helps *this fixed model* on this data, not which model "
                 "is best: a different architecture (e.g. with BatchNorm and Adam) may beat every arm here.")
    return " ".join(notes)


def _taxonomy_rows(comp: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    from dropkit.registry import TAXONOMY_AXES  # the cards' own axes; the cards were loaded by summarize()

    header = ["method", "family", "kind", *TAXONOMY_AXES, "paper"]
    rows = []
    for arm in comp["arms"]:
        card = arm["card"]
        if card is None:
            continue
        row = [arm["label"], card.family, card.kind, *[card.taxonomy.get(a, "") for a in TAXONOMY_AXES], card.paper]
        if row not in rows:
            rows.append(row)
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; a "|" or a newline inside a cell is escaped so it cannot break the row."""
    esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table with every cell escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(db: str | os.PathLike | Store, out: str | os.PathLike, *, title: str = "dropkit lab report",
                 wall_note: str | None = None) -> dict[str, Any]:
    """Write ``out/report.md``, ``out/index.html`` and the figures from the runs in ``db``.

    Returns:
        ``{"index", "markdown", "figures", "comparisons"}`` (paths and the computed summaries).
    """
    store = db if isinstance(db, Store) else Store(db) if Path(db).is_file() else None
    if store is None:
        raise FileNotFoundError(f"store {str(db)!r} does not exist; run `dropkit run`, `sweep` or `lab` first")
    runs = [r for r in store.runs() if r["kind"] != EXPERIMENT]  # experiment scripts report themselves
    if not isinstance(db, Store):
        store.close()
    if not runs:
        raise ValueError(f"store {store.path!r} holds no runs yet")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, or no permission
        raise ValueError(f"report folder {str(out)!r} cannot be created ({err.strerror or err})") from None
    comparisons = summarize(runs)
    md: list[str] = [f"# {title}", ""]
    body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    if wall_note:
        md += [wall_note, ""]
        body.append(f"<p>{html.escape(wall_note)}</p>")
    all_figs: list[str] = []
    for i, comp in enumerate(comparisons, start=1):
        prefix = f"c{i}_" if len(comparisons) > 1 else ""
        heading = f"Comparison {i}" if len(comparisons) > 1 else "Comparison"
        setting = _setting_line(comp)
        header, rows = summary_rows(comp)
        figs = _figures(comp, out, prefix)
        all_figs += [out / f for f, _ in figs]
        env = comp["environment"]
        env_line = (f"torch {env.get('torch')}, {env.get('device')} ({env.get('device_name')}), "
                    f"{env.get('threads')} threads, dropkit commit {str(env.get('commit'))[:12]}; "
                    f"{comp['n_done']} finished runs, {comp['wall_total'] / 60:.1f} min of training in all.")
        md += [f"## {heading}", "", setting, "", _noise_note(comp), "", markdown_table(header, rows), ""]
        body += [f"<h2>{heading}</h2>", f"<p>{html.escape(setting)}</p>", f"<p class='note'>{html.escape(_noise_note(comp))}</p>",
                 html_table(header, rows)]
        for name, caption in figs:
            md += [f"![{caption}]({name})", "", f"*{caption}*", ""]
            body.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'>"
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        failed = [(a["label"], r["config"]["seed"], r["error"]) for a in comp["arms"] for r in a["failed"]]
        if failed:
            fh, fr = ["method", "seed", "error"], [[lab, str(s), e or ""] for lab, s, e in failed]
            md += ["### Failed runs", "", "These methods could not run here; they are reported, not hidden.", "",
                   markdown_table(fh, fr), ""]
            body += ["<h3>Failed runs</h3>", html_table(fh, fr)]
        unfinished = sum(a["unfinished"] for a in comp["arms"])
        if unfinished:
            note = (f"{unfinished} run(s) were interrupted and hold no result; re-run the same command to finish "
                    "them.")
            md += [note, ""]
            body.append(f"<p>{html.escape(note)}</p>")
        th, tr = _taxonomy_rows(comp)
        if tr:
            md += ["### Taxonomy of the methods compared", "", markdown_table(th, tr), ""]
            body += ["<h3>Taxonomy of the methods compared</h3>", html_table(th, tr)]
        md += [f"*Environment: {env_line}*", ""]
        body.append(f"<p class='env'>Environment: {html.escape(env_line)}</p>")
    (out / "report.md").write_text("\n".join(md))
    style = ("body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em;"
             "text-align:left}th{background:#f3f3f3}img{max-width:100%}figure{margin:1.5em 0}"
             "figcaption{font-size:.9em;color:#555}.note{background:#fffbe6;padding:.6em;border-left:4px solid #e6c200}"
             ".env{font-size:.85em;color:#666}")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    (out / "index.html").write_text(page)
    return {"index": out / "index.html", "markdown": out / "report.md", "figures": all_figs,
            "comparisons": comparisons}
