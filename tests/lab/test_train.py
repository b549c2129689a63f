"""The training loop (``dropkit.lab.train``): determinism, common random numbers, methods through the protocol,
FocusedDropout's weight-decay rule, failures with clear messages."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import dropkit
from dropkit.lab.train import run
from helpers.lab import tiny

torch.set_num_threads(1)


def _weight_decays_per_step(config) -> list[float]:
    seen: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["weight_decay"]))
    try:
        run(config)
    finally:
        handle.remove()
    return seen


def test_focused_dropout_weight_decay_goes_through_the_library_rule(npz):
    boosted = dropkit.get_card("focused_dropout").schedule["weight_decay"]
    # A base weight decay > 0 is raised to the card's value on the participating batches only.
    seen = _weight_decays_per_step(tiny(npz, method="focused_dropout", epochs=4, batch_size=4, weight_decay=1e-4))
    assert set(seen) == {1e-4, boosted}
    assert 0 < seen.count(boosted) < len(seen) / 4
    # ParticipationWeightDecay keeps groups whose base weight decay is 0 at 0 (norms, biases, or a run without it).
    assert set(_weight_decays_per_step(tiny(npz, method="focused_dropout", epochs=4, batch_size=4))) == {0.0}
