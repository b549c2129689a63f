"""The training loop (``dropkit.lab.train``): determinism, common random numbers, methods through the protocol,
FocusedDropout's weight-decay rule, failures with clear messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import dropkit
from dropkit.lab.train import RunConfig, RunFailed, run
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


def test_run_end_to_end_is_deterministic(npz):
    a = run(tiny(npz, method="dropblock", seed=1))
    b = run(tiny(npz, method="dropblock", seed=1))
    assert a["metrics"] == b["metrics"]
    m = a["metrics"]
    assert 0 <= m["test_acc"] <= 1 and m["gap"] == pytest.approx(m["train_acc"] - m["test_acc"])
    assert [r["epoch"] for r in a["curves"]] == [1, 2]
    assert {"train_loss", "train_acc", "val_acc", "val_loss"} <= set(a["curves"][0])
    assert "test_acc" in a["curves"][-1]
    assert a["placement"]["group"] == "conv" and a["placement"]["params"]["block_size"] == 1  # 3×3 maps
    assert a["environment"]["torch"] == torch.__version__
    c = run(tiny(npz, method="dropblock", seed=2))
    assert c["metrics"] != a["metrics"]


def test_every_method_starts_from_the_same_weights(npz, monkeypatch):
    from dropkit.lab import train as T

    seen = []
    real = T.build_model

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        seen.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        return model

    monkeypatch.setattr(T, "build_model", spy)
    run(tiny(npz, method="none", epochs=1, seed=3))
    run(tiny(npz, method="spatial_dropout", epochs=1, seed=3))
    assert torch.equal(seen[0], seen[1])


def test_group_rate_applies_only_to_rate_like_defaults(npz):
    cfg = dict(epochs=1, group_params={"conv": {"p": 0.3}})
    assert run(tiny(npz, method="spatial_dropout", **cfg))["placement"]["params"]["p"] == 0.3
    assert run(tiny(npz, method="focused_dropout", **cfg))["placement"]["params"]["p"] == 1.0
    assert run(tiny(npz, method="spatial_dropout", params={"p": 0.05}, **cfg))["placement"]["params"]["p"] == 0.05


def test_label_aware_method_runs_through_the_protocol(npz):
    result = run(tiny(npz, method="ns_dropout", epochs=2))
    assert result["placement"]["points"] == ["flatten"]
    assert np.isfinite(result["metrics"]["test_loss"])


def test_method_that_does_not_fit_fails_with_a_clear_message(npz):
    with pytest.raises(RunFailed, match="spatial_dropout.*mlp"):
        run(tiny(npz, method="spatial_dropout", model="mlp", model_params={"hidden": [8]}, epochs=1))


def test_segmentation_run_reports_dice_and_iou():
    result = run(RunConfig(method="dropout", data="organs", model="unet", train_size=4, val_size=2, epochs=1,
                           batch_size=2, optimizer="adam", lr=1e-3, model_params={"width": 4},
                           probe={"fractions": [0.0, 0.5], "repeats": 1, "images": 8}))
    m = result["metrics"]
    assert 0 <= m["test_dice"] <= 1 and 0 <= m["test_iou"] <= m["test_dice"] + 1e-9
    assert result["primary"] == "test_dice" and result["probe"]["metric"] == "dice"
