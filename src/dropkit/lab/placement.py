"""Where the lab inserts a method, and with which parameters: the papers' placements, the same for every method.

A method goes to one group of the model's insertion points (``model.insertion_points``), chosen from its card:

- the group named in ``PAPER_PLACEMENT`` for methods whose paper says where (NS-Dropout after hidden FC layers,
  clustering dropout in the FC layer, drop-path on residual branches, crossmap and spectral dropout on conv maps);
- ``"input"`` for input-space methods (taxonomy space ``input``, e.g. Cutout on the images);
- otherwise by the unit it drops: ``element``/``weight`` units go before the classifier (``"fc"``, where
  Srivastava et al. put dropout in conv nets), every structured unit (channel, block, region, …) goes to the
  last two conv stages (``"conv"``, DropBlock's and most spatial papers' placement).

A group the model lacks falls back to ``"conv"`` then ``"fc"`` (the U-Net has only ``"conv"``, the MLP only
``"fc"``): a spatial method then meets flat features and fails, and the lab reports that failure. Parameters
are the card's defaults, overridden by the run's ``params``; ``block_size`` (any integer parameter named so) is
shrunk to fit the smallest map at the chosen points (largest odd value ≤ half its side), because the papers'
7×7 blocks would cover a 7×7 map whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = ["PAPER_PLACEMENT", "preferred_group", "placement_group", "resolve_points", "adapt_params",
           "attach_params"]

#: method name → group, where the paper says where the method goes (see the module docstring)
PAPER_PLACEMENT: Mapping[str, str] = {
    "ns_dropout": "fc",           # "after each hidden FC layer" (specs/neuron_structural_experts.md)
    "clustering_dropout": "fc",   # "embedded in the FC layer of ResNet18"
    "drop_path": "branch",        # residual branches (Huang et al. 2016; timm)
    "crossmap_dropout": "conv",   # one mask shared across feature maps: conv features by definition
    "spectral_dropout": "conv",   # DCT of the hypercolumns of conv feature maps
}
_ELEMENT_UNITS = ("element", "weight")


def preferred_group(card: Any) -> str:
    """The group method ``card`` belongs to by its paper or its taxonomy (module docstring), whatever the model:
    ``"conv"``, ``"fc"``, ``"branch"`` or ``"input"``."""
    wanted = PAPER_PLACEMENT.get(card.name)
    if wanted is None and card.taxonomy.get("space") == "input":
        wanted = "input"
    if wanted is None:
        wanted = "fc" if card.taxonomy.get("unit") in _ELEMENT_UNITS else "conv"
    return wanted


def placement_group(card: Any, model: nn.Module, requested: str | None = None) -> str:
    """The group of ``model.insertion_points`` that method ``card`` goes to (``requested`` wins if given)."""
    points = model.insertion_points
    if requested is not None:
        if requested not in points:
            raise ValueError(f"placement must be one of {sorted(points)} for {type(model).__name__}, "
                             f"got {requested!r}")
        return requested
    wanted = preferred_group(card)
    for group in (wanted, "conv", "fc"):  # e.g. drop-path in a model without residual branches: conv maps
        if group in points:
            return group
    return next(iter(points))


def resolve_points(model: nn.Module, at: str | list[str]) -> list[str]:
    """A group name or an explicit list of submodule names → the list of submodule names (checked)."""
    names = model.insertion_points[at] if isinstance(at, str) and at in model.insertion_points else at
    if isinstance(names, str):
        raise ValueError(f"placement must be one of {sorted(model.insertion_points)} or a list of submodule names, "
                         f"got {names!r}")
    known = dict(model.named_modules())
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"placement names {missing} are not submodules of {type(model).__name__}")
    return list(names)


def adapt_params(card: Any, params: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """The card's defaults overridden by ``params``, with an un-set integer ``block_size`` fitted to the maps.

    Args:
        card: the method's card.
        params: explicit parameters (never changed).
        shapes: feature shape (C, H, W) or (F,) at each insertion point.
    """
    resolved = {k: v for k, v in card.defaults.items() if k != "generator"}
    resolved.update(params)
    default_block = card.defaults.get("block_size")
    maps = [s for s in shapes.values() if len(s) == 3]
    if "block_size" not in params and isinstance(default_block, int) and not isinstance(default_block, bool) and maps:
        side = min(min(s[1], s[2]) for s in maps)
        fit = max(1, side // 2)
        fit -= (fit + 1) % 2  # largest odd value ≤ half the smallest side
        resolved["block_size"] = max(1, min(default_block, fit))
    return resolved


def attach_params(card: Any, params: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """What to pass to ``dropkit.attach``: ``params``, plus ``block_size`` where ``adapt_params`` fitted it to
    small maps (the card's defaults fill the rest inside ``dropkit.create``)."""
    passed = dict(params)
    resolved = adapt_params(card, params, shapes)
    if "block_size" in resolved and resolved["block_size"] != card.defaults.get("block_size"):
        passed["block_size"] = resolved["block_size"]
    return passed
