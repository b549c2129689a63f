"""``dropkit lab``'s plan (``dropkit.lab.suite``)."""

from __future__ import annotations

import json

import pytest

import dropkit


def test_lab_plan_covers_every_activation_method():
    from dropkit.lab.suite import lab_configs

    configs = lab_configs()
    names = {c.method for c in configs}
    assert names == {"none"} | {c.name for c in dropkit.methods(kind="activation")}
    assert {c.seed for c in configs} == {0, 1, 2} and all(c.data == "fashion_mnist" for c in configs)
    assert [c.seed for c in configs] == sorted(c.seed for c in configs)  # seed-major
    assert json.dumps(configs[0].to_dict())  # storable


@pytest.mark.parametrize("methods", ["dropout,spatial_dropout", ["dropblock"], "spatial_dropout,none"])
def test_lab_always_has_the_baseline_arm_first(methods):
    from dropkit.lab.suite import lab_configs

    configs = lab_configs(quick=True, methods=methods, seeds=1)
    assert [c.method for c in configs][0] == "none"
    assert [c.method for c in configs].count("none") == 1
