"""Soft decision trees with and without İrsoy & Alpaydın's left-subtree dropout, over tree depths.

The paper's claim (arXiv:1812.10158): without dropout, soft trees with many levels overfit; dropping left
subtrees (``hme_dropout``) keeps deep trees from overfitting and gives smoother fits. Two experiments:

* ``regression``: a 1-D synthetic task, y = sin(2πx) + 0.3x + N(0, σ²) on few training points; test MSE is
  measured against the noise-free function on a dense grid (so 0 is reachable). ``--plot`` draws the fits.
* ``features``: classification of flattened Fashion-MNIST images (or any data ``dropkit.lab.data`` loads) with
  the tree's root response as logits; train/test accuracy and test loss.

    python -m dropkit.lab.experiments.soft_tree regression --depths 3 6 9 --p 0 0.05 0.1 --plot fits.png
    python -m dropkit.lab.experiments.soft_tree features --data fashion_mnist --train-size 2000 --depths 2 4 6
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dropkit.methods.hme_dropout import HMEDropout
from dropkit.validation import check_output_file

__all__ = ["target_function", "make_regression", "fit_tree", "regression_sweep", "features_sweep",
           "summarize", "format_table", "add_arguments", "main"]


def target_function(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * x) + 0.3 * x


def make_regression(n_train: int = 48, n_test: int = 512, noise: float = 0.3,
                    seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_test, y_test): noisy training points on U(-1, 1), noise-free test grid."""
    g = torch.Generator().manual_seed(seed)
    x_train = torch.rand(n_train, 1, generator=g) * 2 - 1
    y_train = target_function(x_train) + noise * torch.randn(n_train, 1, generator=g)
    x_test = torch.linspace(-1, 1, n_test).unsqueeze(1)
    return x_train, y_train, x_test, target_function(x_test)


def fit_tree(x: torch.Tensor, y: torch.Tensor, *, depth: int, p: float, task: str = "regression",
             out_features: int = 1, steps: int = 1500, lr: float = 0.03, batch: int | None = None,
             seed: int = 0) -> HMEDropout:
    """Train a soft tree (constant leaves) with Adam; full batch unless ``batch`` is given."""
    torch.manual_seed(seed)
    tree = HMEDropout(x.shape[1], out_features, depth=depth, p=p, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(tree.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed + 1)
    tree.train()
    for _ in range(steps):
        if batch is None or batch >= len(x):
            xb, yb = x, y
        else:
            idx = torch.randint(0, len(x), (batch,), generator=order)
            xb, yb = x[idx], y[idx]
        out = tree(xb)
        loss = F.mse_loss(out, yb) if task == "regression" else F.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return tree.eval()


def regression_sweep(depths: Sequence[int], ps: Sequence[float], seeds: Sequence[int] = (0,), *,
                     n_train: int = 48, noise: float = 0.3, steps: int = 2500, lr: float = 0.03,
                     log: Any = None) -> list[dict[str, Any]]:
    """Train/test MSE of every (depth, p, seed) on the 1-D task (each seed draws its own training set)."""
    rows = []
    for seed in seeds:
        x_tr, y_tr, x_te, y_te = make_regression(n_train, noise=noise, seed=seed)
        for depth in depths:
            for p in ps:
                tree = fit_tree(x_tr, y_tr, depth=depth, p=p, steps=steps, lr=lr, seed=seed)
                with torch.no_grad():
                    row = {"depth": depth, "p": p, "seed": seed,
                           "train_mse": F.mse_loss(tree(x_tr), y_tr).item(),
                           "test_mse": F.mse_loss(tree(x_te), y_te).item()}
                rows.append(row)
                if log:
                    log(f"  depth {depth} p={p:g} seed {seed}: train MSE {row['train_mse']:.4f}, "
                        f"test MSE {row['test_mse']:.4f}")
    return rows


def features_sweep(data: str, depths: Sequence[int], ps: Sequence[float], seeds: Sequence[int] = (0,), *,
                   train_size: int = 2000, test_size: int = 2000, steps: int = 1500, lr: float = 0.01,
                   batch: int = 128, log: Any = None) -> list[dict[str, Any]]:
    """Classification with flattened images as features (``dropkit.lab.data.load_dataset``)."""
    from dropkit.lab.data import load_dataset

    ds = load_dataset(data, train_size=train_size, test_size=test_size)
    if ds.task != "classification":
        raise ValueError(f"soft-tree features: {data!r} is a {ds.task} set; a classification set is needed")
    x_tr, x_te = ds.x_train.flatten(1), ds.x_test.flatten(1)
    rows = []
    for seed in seeds:
        for depth in depths:
            for p in ps:
                tree = fit_tree(x_tr, ds.y_train, depth=depth, p=p, task="classification",
                                out_features=ds.num_classes, steps=steps, lr=lr, batch=batch, seed=seed)
                with torch.no_grad():
                    logits_tr, logits_te = tree(x_tr), tree(x_te)
                row = {"depth": depth, "p": p, "seed": seed,
                       "train_acc": (logits_tr.argmax(1) == ds.y_train).float().mean().item(),
                       "test_acc": (logits_te.argmax(1) == ds.y_test).float().mean().item(),
                       "test_loss": F.cross_entropy(logits_te, ds.y_test).item()}
                rows.append(row)
                if log:
                    log(f"  depth {depth} p={p:g} seed {seed}: train acc {row['train_acc']:.3f}, "
                        f"test acc {row['test_acc']:.3f}, test loss {row['test_loss']:.3f}")
    return rows


def summarize(rows: list[dict[str, Any]], metric: str) -> dict[tuple[int, float], tuple[float, float]]:
    """(depth, p) → (mean, std over seeds) of ``metric``."""
    groups: dict[tuple[int, float], list[float]] = {}
    for r in rows:
        groups.setdefault((r["depth"], r["p"]), []).append(r[metric])
    out = {}
    for key, vals in groups.items():
        t = torch.tensor(vals, dtype=torch.float64)
        out[key] = (t.mean().item(), t.std().item() if len(vals) > 1 else 0.0)
    return out


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    """Depths down, p across: mean ± std of ``metric``."""
    stats = summarize(rows, metric)
    depths = sorted({d for d, _ in stats})
    ps = sorted({p for _, p in stats})
    lines = [f"{metric:<10}" + "".join(f"p={p:<14g}" for p in ps)]
    for d in depths:
        cells = [f"{stats[(d, p)][0]:.4f}±{stats[(d, p)][1]:.4f}".ljust(16) for p in ps]
        lines.append(f"depth {d:<4}" + "".join(cells))
    return "\n".join(lines)


def plot_fits(path: str, depth: int, ps: Sequence[float], *, n_train: int = 48, noise: float = 0.3,
              steps: int = 2500, lr: float = 0.03, seed: int = 0) -> None:
    """Training points, the true function and the fits of a depth-``depth`` tree for each p."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_tr, y_tr, x_te, y_te = make_regression(n_train, noise=noise, seed=seed)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(x_tr[:, 0], y_tr[:, 0], s=10, c="k", label="training points")
    ax.plot(x_te[:, 0], y_te[:, 0], "k--", lw=1, label="true function")
    for p in ps:
        tree = fit_tree(x_tr, y_tr, depth=depth, p=p, steps=steps, lr=lr, seed=seed)
        with torch.no_grad():
            fit = tree(x_te)
        ax.plot(x_te[:, 0], fit[:, 0], label=f"p={p:g}")
    ax.set_title(f"soft tree of depth {depth}: left-subtree dropout")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=("regression", "features"), help="1-D synthetic regression, or image features")
    parser.add_argument("--depths", type=int, nargs="+", default=[3, 6, 9])
    parser.add_argument("--p", type=float, nargs="+", default=[0.0, 0.05, 0.1], help="left-subtree drop rates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--lr", type=float, default=None, help="Adam rate (default 0.03 regression, 0.01 features)")
    parser.add_argument("--n-train", type=int, default=48, help="regression: training points")
    parser.add_argument("--noise", type=float, default=0.3, help="regression: noise std")
    parser.add_argument("--data", default="fashion_mnist", help="features: dataset name, .npz or IDX folder")
    parser.add_argument("--train-size", type=int, default=2000, help="features: training images")
    parser.add_argument("--test-size", type=int, default=2000, help="features: test images")
    parser.add_argument("--plot", default=None, help="regression: write the deepest tree's fits to this PNG")
    parser.add_argument("--json", default=None, help="write the per-run rows to this JSON file")
    parser.add_argument("--db", default="runs.db", help="also record every row in this lab store ('' to skip)")


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point of ``dropkit experts soft-tree``."""
    if any(d < 1 or d > 12 for d in args.depths):
        raise ValueError(f"soft-tree: --depths must be in [1, 12], got {args.depths}")
    if any(not 0.0 <= p <= 1.0 for p in args.p):
        raise ValueError(f"soft-tree: every --p must be in [0, 1], got {args.p}")
    if args.steps <= 0:
        raise ValueError(f"soft-tree: --steps must be > 0, got {args.steps}")
    for flag in ("plot", "json", "db"):  # files written at the end: refused now, not after the training
        if getattr(args, flag):
            check_output_file(getattr(args, flag), f"soft-tree: --{flag}")
    torch.set_num_threads(1)
    if args.task == "regression":
        lr = 0.03 if args.lr is None else args.lr
        rows = regression_sweep(args.depths, args.p, args.seeds, n_train=args.n_train, noise=args.noise,
                                steps=args.steps, lr=lr, log=print)
        print(format_table(rows, "test_mse"))
        print(format_table(rows, "train_mse"))
        if args.plot:
            plot_fits(args.plot, max(args.depths), args.p, n_train=args.n_train, noise=args.noise,
                      steps=args.steps, lr=lr)
            print(f"fits written to {args.plot}")
    else:
        lr = 0.01 if args.lr is None else args.lr
        rows = features_sweep(args.data, args.depths, args.p, args.seeds, train_size=args.train_size,
                              test_size=args.test_size, steps=args.steps, lr=lr, log=print)
        print(format_table(rows, "test_acc"))
        print(format_table(rows, "train_acc"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.db:
        record_rows(args.db, rows, args, lr)
        print(f"soft-tree: {len(rows)} rows recorded in {args.db}")
    return 0


def record_rows(db: str, rows: list[dict[str, Any]], args: argparse.Namespace, lr: float) -> None:
    """Each (depth, p, seed) row as one experiment result in the lab's store (kind ``experiment``)."""
    from dropkit.lab.env import environment
    from dropkit.lab.store import Store

    if args.task == "regression":
        setting = {"data": "sin-regression", "train_size": args.n_train, "noise": args.noise}
    else:
        setting = {"data": args.data, "train_size": args.train_size, "test_size": args.test_size}
    env = environment()
    with Store(db) as store:
        for row in rows:
            config = {"method": "hme_dropout", "task": args.task, "steps": args.steps, "lr": lr, **setting,
                      "depth": row["depth"], "p": row["p"], "seed": row["seed"]}
            metrics = {k: v for k, v in row.items() if k not in ("depth", "p", "seed")}
            store.record_experiment("soft_tree", config, metrics, tag=f"soft-tree {args.task}", environment=env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dropkit.lab.experiments.soft_tree", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
