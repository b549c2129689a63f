"""The advisor's report: ``report.md`` and ``index.html`` with the ranked table, the conclusion, the code, and two
figures (matplotlib, PNG): the strength–response curves from the search trials and the confirmed gains per seed.

Strength–response: one panel per searched arm, the validation score of every trial against the arm's first
strength parameter (a cocktail's second parameter colours the points); filled dots finished all epochs, hollow
ones were stopped early by the pruner (their last score read); the dashed line is the baseline's validation score.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dropkit.lab.advisor.answer import Advice
from dropkit.lab.report import html_table, markdown_table

__all__ = ["trial_curves", "write_report"]


def trial_curves(studies: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """arm name → one dict per finished or pruned trial: ``params`` (flat), ``value``, ``epoch``, ``state``."""
    from optuna.trial import TrialState

    out: dict[str, list[dict[str, Any]]] = {}
    for name, study in studies.items():
        points = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if t.state == TrialState.COMPLETE:
                value, epoch = t.value, max(t.intermediate_values, default=0)
            elif t.intermediate_values:
                epoch = max(t.intermediate_values)
                value = t.intermediate_values[epoch]
            else:
                continue
            points.append({"params": dict(t.params), "value": float(value), "epoch": int(epoch),
                           "state": t.state.name.lower(), "number": t.number})
        out[name] = points
    return out


def strength_figure(advice: Advice) -> Any:
    """One panel per searched arm: each trial's validation score against its first parameter, coloured by its
    second (a discrete scale with integer ticks for an integer parameter such as a block size; no scale, but the
    value in the panel's title, when every trial had the same); the baseline dashed. None without such an arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm

    arms = [a for a, pts in advice.curves.items() if a != "none" and pts and pts[0]["params"]]
    if not arms:
        return None
    cols = min(3, len(arms))
    rows = math.ceil(len(arms) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    base = advice.baseline.get("search_value", math.nan)
    for ax, arm in zip(axes.flat, arms):
        pts = advice.curves[arm]
        names = list(pts[0]["params"])
        x_name = names[0]
        xs = [p["params"].get(x_name, math.nan) for p in pts]
        ys = [100 * p["value"] for p in pts]
        done = [p["state"] == "complete" for p in pts]
        title = arm
        color, kw, ticks = None, {"color": "C0"}, None
        if len(names) > 1:
            values = [p["params"].get(names[1], 0.0) for p in pts]
            distinct = sorted(set(values))
            if len(distinct) == 1:
                title = f"{arm} ({names[1].split('.')[-1]} = {distinct[0]:g} in every trial)"
            else:
                color = values
                kw = {"cmap": "viridis"}
                if all(float(v).is_integer() for v in distinct) and distinct[-1] - distinct[0] <= 12:
                    low, high = int(distinct[0]), int(distinct[-1])
                    # one colour per integer: a colour map of that many entries, bins centred on the integers
                    kw["cmap"] = plt.get_cmap("viridis", high - low + 1)
                    kw["norm"] = BoundaryNorm([v - 0.5 for v in range(low, high + 2)], high - low + 1)
                    ticks = list(range(low, high + 1))
        sc = ax.scatter([x for x, d in zip(xs, done) if d], [y for y, d in zip(ys, done) if d],
                        c=None if color is None else [c for c, d in zip(color, done) if d], **kw,
                        label="all epochs", zorder=3)
        ax.scatter([x for x, d in zip(xs, done) if not d], [y for y, d in zip(ys, done) if not d],
                   facecolors="none", edgecolors="gray", label="stopped early", zorder=2)
        if color is not None and any(done):
            fig.colorbar(sc, ax=ax, label=names[1], ticks=ticks)
        if math.isfinite(base):
            ax.axhline(100 * base, ls="--", color="k", lw=1, label="baseline")
        ax.set_xlabel(x_name)
        ax.set_ylabel(f"validation {advice.metric} %")
        ax.set_title(title, fontsize=10)
    for ax in list(axes.flat)[len(arms):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("strength–response: validation score of every search trial")
    fig.tight_layout()
    return fig


def _strength_figure(advice: Advice, path: Path) -> bool:
    import matplotlib.pyplot as plt

    fig = strength_figure(advice)
    if fig is None:
        return False
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _gain_figure(advice: Advice, runs: Mapping[str, Any], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands = [c for c in advice.candidates if c.comparison is not None and c.comparison.n]
    if not cands:
        return False
    fig, ax = plt.subplots(figsize=(7.2, 1.0 + 0.55 * len(cands)))
    base = runs["none"].test
    for i, c in enumerate(cands):
        diffs = [100 * (runs[c.name].test[s] - base[s]) for s in sorted(set(runs[c.name].test) & set(base))]
        ax.scatter(diffs, [i] * len(diffs), color="gray", s=12, zorder=2)
        cmp = c.comparison
        if math.isfinite(cmp.ci_low):
            ax.errorbar(100 * cmp.gain, i, xerr=[[100 * (cmp.gain - cmp.ci_low)], [100 * (cmp.ci_high - cmp.gain)]],
                        fmt="o", color="C3" if c.significant_gain else "C0", capsize=3, zorder=3)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(range(len(cands)), [c.name for c in cands])
    ax.invert_yaxis()
    ax.set_xlabel(f"test {advice.metric} gain over the baseline, points\n(grey: one seed; colour: mean and 95 % CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _setting_text(advice: Advice) -> str:
    s, p = advice.setting, advice.plan
    return (f"{s.get('model')} on {s.get('data')} ({s.get('train_size')} training images, {s.get('epochs')} epochs); "
            f"budget {s.get('budget_s', 0) / 60:.1f} min on {s.get('workers')} worker(s): {p.get('trials')} search "
            f"trials per method (Optuna TPE + Hyperband on the validation split), then the top "
            f"{len(advice.candidates)} and the baseline retrained on {len(advice.seeds)} fresh seeds and tested "
            f"once; measured {p.get('epoch_s', math.nan):.2f} s an epoch; took {advice.wall_s / 60:.1f} min.")


def write_report(advice: Advice, runs: Mapping[str, Any], out: str | Path) -> dict[str, str]:
    """Write ``report.md``, ``index.html``, the PNG figures and ``advice.json`` into ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    if _strength_figure(advice, out / "strength_response.png"):
        figures.append(("strength_response.png", "Strength–response curves (search trials)"))
    if _gain_figure(advice, runs, out / "confirmation.png"):
        figures.append(("confirmation.png", "Confirmed gains per seed"))
    header, rows = advice.table_rows()
    skipped = [[m, why] for m, why in advice.skipped.items()]
    points = [[m, where, str(advice.trials.get(m, "—"))] for m, where in advice.points.items()]
    md = [f"# dropkit advise: {advice.setting.get('model')} on {advice.setting.get('data')}", "",
          _setting_text(advice), "", "## Answer", "", advice.conclusion(), "",
          "```python", advice.code(), "```", "", "## Ranked candidates (confirmation on test)", "",
          markdown_table(header, rows), "",
          "Gain: mean per-seed difference to the baseline in points, with its 95 % confidence interval; Holm p: "
          "the paired t-test's p-value adjusted for the number of candidates. Step overhead: epoch time against "
          "the baseline's, measured while the runs shared the machine (indicative).", ""]
    md += [f"![{title}]({name})\n" for name, title in figures]
    md += ["## Insertion points and search trials", "", markdown_table(["method", "points", "trials"], points), ""]
    if skipped:
        md += ["## Skipped methods", "", markdown_table(["method", "why"], skipped), ""]
    (out / "report.md").write_text("\n".join(md))
    body = [f"<h1>dropkit advise: {html.escape(str(advice.setting.get('model')))} on "
            f"{html.escape(str(advice.setting.get('data')))}</h1>", f"<p>{html.escape(_setting_text(advice))}</p>",
            "<h2>Answer</h2>", f"<p><b>{html.escape(advice.conclusion())}</b></p>",
            f"<pre>{html.escape(advice.code())}</pre>", "<h2>Ranked candidates</h2>", html_table(header, rows)]
    body += [f"<h3>{html.escape(t)}</h3><img src='{n}' alt='{html.escape(t)}'>" for n, t in figures]
    body += ["<h2>Insertion points and search trials</h2>", html_table(["method", "points", "trials"], points)]
    if skipped:
        body += ["<h2>Skipped methods</h2>", html_table(["method", "why"], skipped)]
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.25em .5em}img{max-width:100%}")
    (out / "index.html").write_text(f"<!doctype html><meta charset='utf-8'><title>dropkit advise</title>"
                                    f"<style>{style}</style>" + "\n".join(body))
    (out / "advice.json").write_text(json.dumps(advice.to_dict(), indent=2, default=str))
    paths = {"index": str(out / "index.html"), "markdown": str(out / "report.md"), "json": str(out / "advice.json")}
    paths.update({n.removesuffix(".png"): str(out / n) for n, _ in figures})
    return paths
