"""A small Gating-Dropout MoE layer shared by the MoE tests."""

from __future__ import annotations

import torch

import dropkit
from dropkit.methods.gating_dropout import GatingDropoutMoE

CFG = dict(d_model=8, d_ff=16, num_experts=4)


def make(seed: int = 0, gen_seed: int | None = 1000, **kw) -> GatingDropoutMoE:
    """A ``gating_dropout`` layer of the ``CFG`` size, weights from ``torch.manual_seed(seed)``, its own generator
    seeded with ``gen_seed`` (None: no generator); ``kw`` overrides any parameter."""
    torch.manual_seed(seed)
    params = dict(CFG)
    if gen_seed is not None:
        params["generator"] = torch.Generator().manual_seed(gen_seed)
    params.update(kw)
    return dropkit.create("gating_dropout", **params)
