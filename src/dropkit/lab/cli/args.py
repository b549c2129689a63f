"""Argument helpers shared by the lab's commands: training options, method lists, ``--param`` parsing.

Choices come from ``dropkit.lab.config`` so the command line, the config checks and the report agree.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from dropkit.validation import check_writable_folder
from dropkit.lab.config import DEFAULT_PROBE, LR_SCHEDULES, MODEL_NAMES, OPTIMIZERS, PLACEMENT_GROUPS, VARIANTS

__all__ = ["parse_params", "csv_methods", "parse_placement", "add_training_args", "set_threads", "overrides",
           "print_metrics", "check_folder", "check_runs", "DEFAULT_WORKERS", "DEFAULT_PROBE"]

# Two 1-thread runs side by side beat one 2-thread run on small CNNs; more workers than cores only contend.
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))

#: the RunConfig fields the training options set (``overrides`` copies those the user gave)
TRAINING_FIELDS = ("data", "model", "variant", "train_size", "val_size", "test_size", "data_seed", "preprocess",
                   "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "lr_schedule",
                   "test_every", "device")


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


def csv_methods(text: str | None) -> str | list[str]:
    """``--methods``: None → ``"activation"``; ``"all"`` or a kind stays a word; otherwise a list of names."""
    from dropkit.registry import KINDS

    if text is None:
        return "activation"
    return text if text == "all" or text in KINDS else [m.strip() for m in text.split(",") if m.strip()]


def parse_placement(text: str) -> str | list[str]:
    """``--placement``: a group name (conv, fc, branch, input), else points joined by '+' (``NAME``: after a
    submodule, ``NAME:in``: before it)."""
    return text if text in PLACEMENT_GROUPS else [p for p in text.split("+") if p]


def add_training_args(p: argparse.ArgumentParser, *, single: bool) -> None:
    """The data, model and training options of a run (``single``: defaults for one run; else None = the suite's)."""
    variants = sorted({v for names in VARIANTS.values() for v in names if v is not None})
    g = p.add_argument_group("data and model")
    g.add_argument("--data", default=None if not single else "fashion_mnist",
                   help="fashion_mnist, organs (generated segmentation set), an .npz file (images, signals or "
                        "features) or a folder (ImageFolder layout, images/ + masks/, or the IDX files)")
    g.add_argument("--model", default=None if not single else "cnn", metavar="MODEL",
                   help=f"{', '.join(MODEL_NAMES)}, or FILE.py:NAME (your own: a function or nn.Module class taking "
                        "any of in_channels, num_classes, input_shape); cnn1d is for signals, mlp takes any input")
    g.add_argument("--train-size", type=int, default=None if not single else 1000,
                   help="training images (a stratified subset)")
    g.add_argument("--val-size", type=int, default=None, help="validation images carved from the training data")
    g.add_argument("--test-size", type=int, default=None, help="test images (a stratified subset; default all)")
    g.add_argument("--data-seed", type=int, default=None if not single else 0, help="fixes the subsets")
    g.add_argument("--variant", default=None, choices=variants,
                   help="a block regularizer built into the model ("
                        + "; ".join(f"{m}: {', '.join(v for v in vs if v)}" for m, vs in VARIANTS.items()) + ")")
    g.add_argument("--preprocess", choices=["edges"], default=None,
                   help="edges: the dental-imaging recipe's edge maps (erosion, blur, Canny) before normalisation")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=None if not single else 30)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--optimizer", choices=list(OPTIMIZERS), default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--momentum", type=float, default=None)
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--lr-schedule", choices=list(LR_SCHEDULES), default=None)
    t.add_argument("--test-every", type=int, default=None, help="also test every k epochs (0: at the end only)")
    t.add_argument("--device", default=None, help="auto (CUDA when present), cpu, cuda, cuda:N")
    t.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (not part of the config; 1 is faster on a busy machine)")


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (it is not part of a run's config)."""
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be ≥ 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields the user set on the command line (applies ``--threads`` on the way)."""
    set_threads(args)
    return {k: getattr(args, k) for k in TRAINING_FIELDS if getattr(args, k, None) is not None}


def check_folder(path: str | os.PathLike, flag: str) -> None:
    """Refuse, before any run, an output folder that cannot be created (a file in its way, or no permission)."""
    check_writable_folder(path, flag)


def check_runs(configs: list[Any]) -> None:
    """Check every config against its data (parameters, data, validation split) before the store is opened, so
    that bad input creates no database and no ``failed`` row."""
    from dropkit.lab.train import check_run

    for config in configs:
        check_run(config)


def print_metrics(result: dict[str, Any]) -> None:
    """A stored run's final metrics as one JSON line (floats rounded to 4 places)."""
    m = result["metrics"]
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
    print(json.dumps(shown, indent=None))
