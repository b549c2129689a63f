"""The strength each method can be tuned over: one table keyed by method name, read through ``card.search_space``.

A method's search space holds only the parameters that set *how strongly* it regularizes (the drop rate ``p``,
DropBlock's block size, Cutout's square size, FocusedDropout's participation rate, Spectral Dropout's threshold);
everything else keeps the card's defaults. The ranges reach from "barely on" to "stronger than the papers use",
so a search can find both a weak and a strong optimum. Sizes in pixels (``block_size``, ``size``) are clipped to
the feature maps at the chosen insertion points by :func:`fit_to_maps`.

Block methods (whole layers: maxout, Standout, stochastic pooling, the expert layers) have no space: they are
built into a model, not inserted, so a search over insertion strength does not apply to them.

    >>> import dropkit
    >>> dropkit.get_card("dropblock").search_space
    {'p': Range(low=0.02, high=0.4, log=False, integer=False), 'block_size': Range(low=1, high=7, log=False, integer=True)}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

__all__ = ["Range", "SEARCH_SPACES", "SIZE_PARAMS", "search_space", "fit_to_maps"]


@dataclass(frozen=True)
class Range:
    """A closed interval to search: floats (log-uniform when ``log``) or integers."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"Range: low ({self.low}) must be ≤ high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"Range: a log range needs low > 0, got {self.low}")

    @property
    def fixed(self) -> bool:
        """True when the range holds one value (nothing to search)."""
        return self.low == self.high


def _p(low: float, high: float) -> Range:
    return Range(low, high)


_RATE_LIGHT = _p(0.02, 0.5)   # structured units (channels, blocks): each drop removes a lot
_RATE_HEAVY = _p(0.05, 0.8)   # elements: Srivastava et al. use 0.5 on hidden units

#: method name → {parameter: range}; a method absent here has nothing to tune by insertion (see module doc)
SEARCH_SPACES: Mapping[str, Mapping[str, Range]] = MappingProxyType({
    "dropout": {"p": _RATE_HEAVY},
    "gaussian_dropout": {"p": _RATE_HEAVY},
    "crossmap_dropout": {"p": _RATE_HEAVY},
    "biased_dropout": {"p": _RATE_HEAVY},
    "dropconnect": {"p": _RATE_HEAVY},
    "ns_dropout": {"p": _RATE_HEAVY},
    "clustering_dropout": {"p": _RATE_HEAVY},
    "structural_dropout": {"p": _p(0.1, 0.9)},
    "spatial_dropout": {"p": _RATE_LIGHT},
    "weighted_channel_dropout": {"p": _RATE_LIGHT},
    "corrdrop_channel": {"p": _RATE_LIGHT},
    "channel_dropblock": {"p": _RATE_LIGHT},
    "heuristic_dropout": {"p": _RATE_LIGHT},
    "guided_dropout": {"p": _RATE_LIGHT},
    "drop_path": {"p": _RATE_LIGHT},
    "dropblock": {"p": _p(0.02, 0.4), "block_size": Range(1, 7, integer=True)},
    "corrdrop_spatial": {"p": _RATE_LIGHT, "block_size": Range(1, 7, integer=True)},
    "focused_dropout": {"participation": _p(0.05, 0.5)},
    "spectral_dropout": {"tau": Range(0.01, 0.5, log=True)},
    "cutout": {"size": Range(2, 16, integer=True)},
})

#: parameters measured in pixels of the feature map they act on (clipped by :func:`fit_to_maps`)
SIZE_PARAMS = ("block_size", "size")


def search_space(name: str) -> dict[str, Range]:
    """The search space of method ``name`` (empty when it has none)."""
    return dict(SEARCH_SPACES.get(name, {}))


def fit_to_maps(space: Mapping[str, Range], shapes: Iterable[tuple[int, ...]]) -> dict[str, Range]:
    """Clip the pixel-sized parameters of ``space`` to the smallest map among ``shapes`` (C, H, W) or (C, L).

    A block may cover at most half of the smallest side (a 7-pixel block on a 7×7 map would drop it whole); with
    no spatial shape the sizes are left as they are.
    """
    sides = [min(s[1:]) for s in shapes if len(s) >= 2]
    if not sides:
        return dict(space)
    limit = max(1, min(sides) // 2)
    # a range whose low end is already too large keeps that one value: the smallest size the method allows
    return {name: replace(rng, high=max(rng.low, min(rng.high, limit))) if name in SIZE_PARAMS else rng
            for name, rng in space.items()}
