"""The lab's sub-commands of ``dropkit``, registered in one place: :func:`register_commands`.

Each command module exposes ``add_commands(subparsers)``; every sub-command sets ``func`` to a callable taking the
parsed ``args`` and returning an exit code. The modules import only argparse helpers at load time (the trainer,
the store and the field libraries load when a command runs), so ``dropkit --help`` stays fast.
"""

from __future__ import annotations

import argparse

from dropkit.lab.cli import advise, experiments, probes, runs

__all__ = ["register_commands", "COMMAND_MODULES", "bench_resnet"]

#: the modules whose ``add_commands`` builds the lab's part of the command line, in help order
COMMAND_MODULES = (advise, runs, probes, experiments)


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the lab's commands (``run``, ``sweep``, ``report``, ``lab``, ``probe``, ``experts``) to ``dropkit``."""
    for module in COMMAND_MODULES:
        module.add_commands(subparsers)


def bench_resnet():
    """The lab's ResNet-8 (width 16, one block a stage, 3×32×32 inputs, 10 classes) for ``dropkit bench``'s
    saved-memory group: the core's benchmark measures it without importing the lab itself."""
    from dropkit.lab.models import ResNet

    return ResNet(3, 10, (32, 32), width=16, blocks=1)
