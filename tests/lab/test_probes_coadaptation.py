"""The co-adaptation probe (``dropkit.lab.probes.coadaptation``)."""

from __future__ import annotations

import torch
from dropkit.lab.train import run
from helpers.lab import tiny

torch.set_num_threads(1)


def test_probe_masks_more_and_costs_more(npz):
    result = run(tiny(npz, method="none", epochs=4, probe={"fractions": [0.0, 0.5, 0.99], "repeats": 2,
                                                           "images": 30}))
    probe = result["probe"]
    assert probe["drop"][0] == 0.0 and probe["fractions"] == [0.0, 0.5, 0.99]
    assert probe["values"][2] <= probe["values"][0]
