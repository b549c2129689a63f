"""``dropkit experts ...``: the expert-level experiments (Gating Dropout in an MoE language model, dropout in a
soft decision tree). Added to the ``dropkit`` command by :func:`add_commands`.

    dropkit experts moe-lm --steps 150 --p 0 0.1 0.3
    torchrun --standalone --nproc_per_node 2 -m dropkit.cli experts moe-lm --steps 60 --p 0 0.3
    dropkit experts soft-tree regression --depths 3 6 9 --p 0 0.05 0.1 --plot fits.png
    dropkit experts soft-tree features --data fashion_mnist --train-size 2000
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_commands"]


def _moe_lm(args: argparse.Namespace) -> int:
    from dropkit.lab.experiments.moe_lm import run_from_args

    return run_from_args(args)


def _soft_tree(args: argparse.Namespace) -> int:
    from dropkit.lab.experiments.soft_tree import run_from_args

    return run_from_args(args)


def add_commands(subparsers: Any) -> None:
    """Add ``experts moe-lm`` and ``experts soft-tree`` to the ``dropkit`` argparse sub-commands."""
    from dropkit.lab.experiments import moe_lm, soft_tree

    experts = subparsers.add_parser("experts", help="expert-level regularizers: Gating Dropout (MoE LM), HME dropout")
    sub = experts.add_subparsers(dest="experiment", required=True)
    p = sub.add_parser("moe-lm", help="tiny MoE Transformer LM on the fortune texts, p in {0, 0.1, 0.3}; "
                                      "expert-parallel under torchrun")
    moe_lm.add_arguments(p)
    p.set_defaults(func=_moe_lm)
    p = sub.add_parser("soft-tree", help="soft decision trees with/without left-subtree dropout, over depths")
    soft_tree.add_arguments(p)
    p.set_defaults(func=_soft_tree)
