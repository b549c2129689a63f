"""Structural Dropout's width probe (``dropkit.lab.probes.width``)."""

from __future__ import annotations

import pytest
import torch

from dropkit.lab.probes.width import width_probe
from dropkit.lab.train import RunConfig

torch.set_num_threads(1)


def test_width_probe_curve_and_slimmed_model(npz):
    config = RunConfig.from_dict(dict(data=npz, train_size=64, val_size=16, epochs=3, batch_size=16, model="mlp",
                                      model_params={"hidden": (32,)}, placement="fc", method="structural_dropout",
                                      seed=0, lr=0.05))
    result = width_probe(config, step=8, tolerance=0.05)
    curve = result["probe"]
    assert curve["kind"] == "width" and curve["full_width"] == 32
    widths = [r["width"] for r in curve["rows"]]
    assert widths == [8, 16, 24, 32]
    params = [r["parameters"] for r in curve["rows"]]
    assert params == sorted(params) and params[-1] == curve["full_parameters"]  # smaller width, fewer parameters
    assert curve["chosen_width"] <= curve["best_width"]
    assert curve["chosen_accuracy"] >= curve["best_accuracy"] - 0.05
    assert 0.0 <= curve["chosen_test_acc"] <= 1.0


def test_width_probe_refuses_other_methods(npz):
    with pytest.raises(ValueError, match="structural_dropout"):
        width_probe(RunConfig.from_dict(dict(data=npz, method="dropout", model="mlp")))
