"""Run configs (``dropkit.lab.config``): bad settings are refused with the allowed values."""

from __future__ import annotations

import pytest

from dropkit.lab.config import RunConfig


@pytest.mark.parametrize("values, message", [
    ({"method": "dropblok"}, "did you mean"),
    ({"epochs": 0}, "epochs"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"colour": "red"}, "unknown run setting"),
    ({"method": "none", "params": {"p": 0.1}}, "takes no params"),
    ({"device": "tpu"}, "device"),
    ({"probe": {"fractions": [1.5]}}, "probe.fractions"),
    ({"lr": -1.0}, "lr"),
])
def test_bad_configs_are_rejected(values, message):
    with pytest.raises((ValueError, TypeError), match=message):
        RunConfig.from_dict(values)


def test_bad_variant_refused(npz):
    with pytest.raises(ValueError, match="variant for model 'cnn' must be one of"):
        RunConfig.from_dict(dict(data=npz, model="cnn", variant="standout"))
