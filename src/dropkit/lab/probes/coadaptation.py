"""The co-adaptation probe of the Heuristic Dropout paper (§3.6, Fig. 4): at test time, mask a growing fraction
of the intermediate feature maps that feed the model's final layer and measure how much accuracy (or Dice) falls.
A model whose features co-adapt less should degrade less.

The masked maps are whole channels (dim 1) of the output of ``model.probe_point``, zeroed without rescaling,
the same channels for every test image of one draw; a draw takes exactly round(f·C) channels at random with a
generator seeded by the run's seed, so every method is probed with the same masks. Each fraction is averaged over
``repeats`` draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from dropkit.lab.config import PROBE_FRACTIONS, primary_metric
from dropkit.lab.data import Dataset
from dropkit.lab.metrics import evaluate

__all__ = ["coadaptation_probe"]


@torch.no_grad()
def coadaptation_probe(model: nn.Module, data: Dataset, *, fractions: Sequence[float] = PROBE_FRACTIONS,
                       repeats: int = 3, images: int = 1000, seed: int = 0,
                       device: torch.device | None = None) -> dict[str, Any]:
    """Metric of ``model`` on (up to) ``images`` test images with a fraction of its penultimate maps masked.

    Returns:
        ``{"point", "metric", "fractions", "values", "drop"}``: ``values[i]`` is the mean metric at
        ``fractions[i]`` and ``drop[i]`` its fall from the unmasked model's metric on the same images.
    """
    device = device or torch.device("cpu")
    point = model.probe_point
    module = dict(model.named_modules())[point]
    x, y = data.x_test[:images], data.y_test[:images]
    key = primary_metric(data.task)
    gen = torch.Generator().manual_seed(seed + 104729)
    state: dict[str, torch.Tensor | None] = {"keep": None}

    def mask_channels(_m: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor | None:
        keep = state["keep"]
        if keep is None:
            return None
        shape = (1, out.shape[1]) + (1,) * (out.ndim - 2)
        return out * keep.to(out.device, out.dtype).view(shape)

    hook = module.register_forward_hook(mask_channels)
    try:
        base = evaluate(model, x, y, data.task, data.num_classes, device)[key]
        channels = None
        values = []
        for f in fractions:
            if f == 0:
                values.append(base)
                continue
            scores = []
            for _ in range(repeats):
                if channels is None:  # learn the width of the probed maps from one forward
                    state["keep"] = None
                    channels = _width(model, module, x[:1].to(device))
                k = int(round(f * channels))
                keep = torch.ones(channels)
                keep[torch.randperm(channels, generator=gen)[:k]] = 0.0
                state["keep"] = keep
                scores.append(evaluate(model, x, y, data.task, data.num_classes, device)[key])
                state["keep"] = None
            values.append(sum(scores) / len(scores))
    finally:
        hook.remove()
    return {"point": point, "metric": key, "fractions": [float(f) for f in fractions], "values": values,
            "drop": [base - v for v in values], "images": len(y), "repeats": repeats}


def _width(model: nn.Module, module: nn.Module, sample: torch.Tensor) -> int:
    seen: list[int] = []
    h = module.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
    was_training = model.training
    try:
        model.eval()
        model(sample)
    finally:
        h.remove()
        model.train(was_training)
    return seen[0]
