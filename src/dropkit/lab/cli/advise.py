"""``dropkit advise``: the command line of :func:`dropkit.lab.advisor.advise`, and the default testbed that
``dropkit lab`` (and ``make lab``) runs it on.

Only argparse is imported at load time; the advisor, torch and Optuna load when the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["add_commands", "add_advise_args", "run_advise", "run_testbed", "TESTBED"]

DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))

#: ``make lab``: the lab CNN on 1 000 Fashion-MNIST images (see docs/advisor.md for why these values)
TESTBED: dict[str, Any] = {
    "model": "cnn", "data": "fashion_mnist", "model_params": {"width": 16}, "train_size": 1000, "val_size": 500,
    "test_size": 5000, "epochs": 30, "budget": "10m", "methods": "dropout,spatial_dropout,dropblock",
}

_TRAINING = {"batch_size": int, "optimizer": str, "lr": float, "momentum": float, "weight_decay": float,
             "lr_schedule": str, "device": str}


def _key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} must look like NAME=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def add_advise_args(p: argparse.ArgumentParser, *, testbed: bool = False) -> None:
    """The options of ``dropkit advise`` (``testbed``: defaults from :data:`TESTBED`, for ``dropkit lab``)."""
    d = TESTBED if testbed else {}
    g = p.add_argument_group("what to advise on")
    g.add_argument("--model", required=not testbed, default=d.get("model"),
                   help="cnn, resnet, mlp, unet, cnn1d, or FILE.py:NAME (a callable or nn.Module class returning "
                        "your network; it receives whichever of in_channels, num_classes, input_shape it declares)")
    g.add_argument("--data", required=not testbed, default=d.get("data"),
                   help="fashion_mnist, organs, an .npz file (x_train, y_train, x_test, y_test) or an image folder")
    g.add_argument("--model-param", action="append", metavar="NAME=VALUE",
                   help="a keyword argument of the model, e.g. width=16 (repeatable)")
    g.add_argument("--train-size", type=int, default=d.get("train_size"),
                   help="training images (default: all but the validation split)")
    g.add_argument("--val-size", type=int, default=d.get("val_size"),
                   help="validation images for the search, carved from the training data (default a tenth, ≤ 500)")
    g.add_argument("--test-size", type=int, default=d.get("test_size"), help="test images (default all)")
    g.add_argument("--data-seed", type=int, default=0)
    s = p.add_argument_group("search and confirmation")
    s.add_argument("--budget", default=d.get("budget", "10m"), help="wall-clock budget: 10m, 90s, 1h30m (default 10m)")
    s.add_argument("--methods", default=d.get("methods"),
                   help="comma-separated method names, 'a+b' for a cocktail, or 'all'; the baseline is always "
                        "included (default: dropout, gaussian_dropout, spatial_dropout, dropblock)")
    s.add_argument("--at", default=None,
                   help="submodule names joined by ',' overriding the automatic insertion points for every method")
    s.add_argument("--cocktails", type=int, default=1, help="two-method cocktails to search after the singles")
    s.add_argument("--top-k", type=int, default=3, help="candidates to confirm against the baseline (default 3)")
    s.add_argument("--seeds", type=int, default=None, help="confirmation seeds (≥ 5; default: from the budget)")
    s.add_argument("--trials", type=int, default=None, help="search trials per method (default: from the budget)")
    s.add_argument("--seed", type=int, default=0, help="the search's training seed (confirmation: seed+1 …)")
    s.add_argument("--epochs", type=int, default=d.get("epochs", 30))
    for name, kind in _TRAINING.items():
        s.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    r = p.add_argument_group("where it runs")
    r.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"local worker processes, one torch thread each (default {DEFAULT_WORKERS})")
    r.add_argument("--db", default=None, help="run store (default lab-results/advise.db); studies beside it")
    r.add_argument("--storage", default=None,
                   help="Optuna storage URL shared by several workers or machines (default: SQLite beside --db)")
    r.add_argument("--out", default=None, help="report folder (default lab-results/advise/)")
    r.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="where the confirmation runs go: local worker processes or a Ray cluster")
    r.add_argument("--address", default=None, help="Ray cluster address (default: start Ray locally)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def run_advise(args: argparse.Namespace, *, default_name: str = "advise") -> int:
    from dropkit.lab.advisor import advise

    model_params = dict(TESTBED["model_params"]) if getattr(args, "_testbed", False) else {}
    model_params.update(_key_values(args.model_param, "--model-param"))
    training = {k: getattr(args, k) for k in _TRAINING if getattr(args, k, None) is not None}
    at = [a.strip() for a in args.at.split(",") if a.strip()] if args.at else None
    try:
        advise(args.model, args.data, budget=args.budget, methods=args.methods, at=at, workers=args.workers,
               db=args.db or f"lab-results/{default_name}.db", out=args.out or f"lab-results/{default_name}",
               storage=args.storage, top_k=args.top_k, seeds=args.seeds, trials=args.trials,
               cocktails=args.cocktails, seed=args.seed, model_params=model_params, train_size=args.train_size,
               val_size=args.val_size, test_size=args.test_size, data_seed=args.data_seed, epochs=args.epochs,
               training=training, backend=getattr(args, "backend", "local"),
               ray_address=getattr(args, "address", None), progress=not args.quiet)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"dropkit {getattr(args, 'command', None) or 'advise'}: error: {err}", file=sys.stderr)
        return 2
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dropkit advise``."""
    p = subparsers.add_parser("advise", help="which regularizer, where and how strong for your model and data: "
                                             "a tuned search, then a confirmation on fresh seeds")
    add_advise_args(p)
    p.set_defaults(func=run_advise)


#: options of ``dropkit lab`` that only the fixed-strength comparison reads (their defaults: given or not)
_FIXED_ONLY = {"suite": "classification", "quick": False, "no_probe": False, "variant": None, "preprocess": None,
               "backend": "local", "address": None, "test_every": None}


def run_testbed(args: argparse.Namespace) -> int:
    """``dropkit lab`` without ``--fixed``: the advisor on :data:`TESTBED`, with the lab options that apply."""
    given = [f"--{k.replace('_', '-')}" for k, v in _FIXED_ONLY.items() if getattr(args, k, v) != v]
    if given:
        print(f"dropkit lab: {', '.join(given)} apply only to the fixed-strength comparison; add --fixed",
              file=sys.stderr)
        return 2
    values = dict(TESTBED)
    for key in ("model", "data", "train_size", "val_size", "test_size", "epochs", "budget", "methods"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    ns = argparse.Namespace(**{**vars(args), **values, "model_param": None, "at": None, "storage": None,
                               "cocktails": 1, "top_k": 3, "trials": None, "seed": 0,
                               "data_seed": args.data_seed if getattr(args, "data_seed", None) is not None else 0,
                               "_testbed": values["model"] == TESTBED["model"]})
    return run_advise(ns, default_name="lab")
