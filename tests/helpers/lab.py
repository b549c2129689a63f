"""Helpers of the lab tests."""

from __future__ import annotations

from typing import Any

from dropkit.lab.config import RunConfig


def tiny(npz: str, **overrides: Any) -> RunConfig:
    """A seconds-long run on the ``npz`` fixture: a 4-wide CNN, 48 training images, 2 epochs of batch 16."""
    values = dict(data=npz, train_size=48, val_size=12, epochs=2, batch_size=16, model="cnn",
                  model_params={"width": 4})
    values.update(overrides)
    return RunConfig.from_dict(values)
