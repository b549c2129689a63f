"""Method registry: one card per method, ``register`` to add one, ``create`` and ``methods`` to use them.

A card carries the method's place in the regularization taxonomy of Kukačka, Golkov & Cremers ("Regularization for
Deep Learning: A Taxonomy", 2017), its paper and its defaults. The defaults are read from the
factory's signature, so the code and the card cannot disagree.

    >>> import dropkit
    >>> layer = dropkit.create("dropblock", p=0.1, block_size=5)
    >>> [c.name for c in dropkit.methods(family="random")][:2]
    ['dropout', 'gaussian_dropout']
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

__all__ = ["MethodCard", "TAXONOMY_AXES", "FAMILIES", "KINDS", "register", "create", "methods", "get_card"]

FAMILIES = ("random", "guided", "aware", "structural", "experts", "related")
KINDS = ("activation", "stateful", "wrapper", "block")

# The taxonomy axes and the values each may take (after Kukačka et al.).
TAXONOMY_AXES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "element": ("data", "architecture", "error term", "regularization term", "optimization"),
        "space": ("input", "hidden", "target", "weights", "routing"),
        "theta": ("p(θ)", "p(θ|x)", "p(θ|x,t)", "p(θ|D)"),  # each may carry the suffix "+time" when scheduled
        "sampling": ("random", "adaptive", "deterministic"),
        "unit": ("element", "channel", "block", "region", "path", "prefix", "expert", "subtree", "weight"),
        "phase": ("train", "train+test"),
        "generality": ("generic", "domain-specific"),
    }
)
_TIME_SUFFIX = "+time"

# Listing order within a family: random, guided, aware, structural and expert methods, then the related ones.
CANONICAL_ORDER = (
    "dropout", "gaussian_dropout", "spatial_dropout", "dropblock", "drop_path", "dropconnect",
    "weighted_channel_dropout", "focused_dropout", "corrdrop_spatial", "corrdrop_channel", "channel_dropblock",
    "heuristic_dropout", "ns_dropout", "clustering_dropout", "structural_dropout", "gating_dropout", "hme_dropout",
    "biased_dropout", "crossmap_dropout", "guided_dropout", "spectral_dropout", "standout", "stochastic_pooling",
    "maxout", "cutout",
)


@dataclass(frozen=True)
class MethodCard:
    """What dropkit knows about one method.

    Attributes:
        name: canonical name, used by ``create``.
        family: one of ``FAMILIES``.
        kind: ``"activation"`` (shape-preserving, identity in eval), ``"stateful"`` (also learns statistics and may
            keep a mask at test time), ``"wrapper"`` (wraps a layer), ``"block"`` (a whole layer).
        paper: short reference, e.g. ``"Ghiasi, Lin & Le, NeurIPS 2018, arXiv:1810.12890"``.
        taxonomy: dict over ``TAXONOMY_AXES``.
        defaults: the factory's keyword defaults (the paper's values unless the card's docs say otherwise).
        summary: one line on what the method drops and how.
        schedule: how a training loop should drive the method, or None: e.g. ``{"type": "linear_ramp",
            "param": "p"}`` (DropBlock's 0 → p ramp) or ``{"type": "participation", "rate": 0.1}``.
        required: keyword arguments without a default (e.g. ``layer`` for DropConnect).
    """

    name: str
    family: str
    kind: str
    paper: str
    taxonomy: Mapping[str, str]
    defaults: Mapping[str, Any]
    summary: str = ""
    schedule: Mapping[str, Any] | None = None
    required: tuple[str, ...] = ()
    factory: Callable[..., torch.nn.Module] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    @property
    def doc_page(self) -> str:
        """The method's page, relative to the repository root: its paper, algorithm, readings, defaults and
        measured cost."""
        return f"docs/methods/{self.name}.md"

    @property
    def search_space(self) -> dict[str, Any]:
        """The parameters that set this method's strength and the ranges to tune them over
        (``dropkit.search_space.Range`` values; empty for block methods). See ``dropkit.search_space``."""
        from dropkit.search_space import search_space

        return search_space(self.name)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (defaults rendered with ``repr`` when they are not plain values)."""

        def plain(v: Any) -> Any:
            return v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)

        return {
            "name": self.name,
            "family": self.family,
            "kind": self.kind,
            "paper": self.paper,
            "summary": self.summary,
            "taxonomy": dict(self.taxonomy),
            "defaults": {k: plain(v) for k, v in self.defaults.items()},
            "required": list(self.required),
            "schedule": None if self.schedule is None else dict(self.schedule),
        }


_REGISTRY: dict[str, MethodCard] = {}


def _validate_taxonomy(name: str, taxonomy: Mapping[str, str]) -> dict[str, str]:
    missing = set(TAXONOMY_AXES) - set(taxonomy)
    extra = set(taxonomy) - set(TAXONOMY_AXES)
    if missing or extra:
        raise ValueError(f"register({name!r}): taxonomy needs exactly the axes {list(TAXONOMY_AXES)}; "
                         f"missing {sorted(missing)}, unknown {sorted(extra)}")
    for axis, value in taxonomy.items():
        base = value[: -len(_TIME_SUFFIX)] if axis == "theta" and value.endswith(_TIME_SUFFIX) else value
        if base not in TAXONOMY_AXES[axis]:
            raise ValueError(f"register({name!r}): taxonomy[{axis!r}] must be one of {TAXONOMY_AXES[axis]}"
                             f"{' (theta may end in +time)' if axis == 'theta' else ''}, got {value!r}")
    return dict(taxonomy)


def _signature_defaults(factory: Callable[..., Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    defaults: dict[str, Any] = {}
    required: list[str] = []
    for pname, param in inspect.signature(factory).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or pname == "self":
            continue
        if param.default is inspect.Parameter.empty:
            required.append(pname)
        else:
            defaults[pname] = param.default
    return defaults, tuple(required)


def _set_method_name(factory: Callable[..., Any], name: str) -> None:
    """Give a class factory its registered name as ``method_name``; refuse a different name set by hand."""
    if not isinstance(factory, type):
        return
    own = factory.__dict__.get("method_name")
    if own is not None and own != name:
        raise ValueError(f"register({name!r}): {factory.__qualname__}.method_name is {own!r}; register sets it "
                         f"from the registered name, so leave it out of the class")
    factory.method_name = name


def register(
    name: str,
    *,
    family: str,
    kind: str,
    paper: str,
    taxonomy: Mapping[str, str],
    summary: str = "",
    schedule: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Decorator that registers a method factory (a class, usually) under ``name`` with its card.

    A class factory also gets ``method_name = name`` (the name its error messages use), so a method file names
    its method once: in ``register``. A class that sets a different ``method_name`` of its own is refused.
    """
    if family not in FAMILIES:
        raise ValueError(f"register({name!r}): family must be one of {FAMILIES}, got {family!r}")
    if kind not in KINDS:
        raise ValueError(f"register({name!r}): kind must be one of {KINDS}, got {kind!r}")
    checked = _validate_taxonomy(name, taxonomy)

    def decorator(factory: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"register: a method named {name!r} is already registered")
        _set_method_name(factory, name)
        defaults, required = _signature_defaults(factory)
        _REGISTRY[name] = MethodCard(
            name=name, family=family, kind=kind, paper=paper, taxonomy=MappingProxyType(checked),
            defaults=MappingProxyType(defaults), summary=summary,
            schedule=None if schedule is None else MappingProxyType(dict(schedule)),
            required=required, factory=factory,
        )
        return factory

    return decorator


def _ensure_loaded() -> None:
    # Importing the methods package registers every method module it holds.
    import dropkit.methods  # noqa: F401


def get_card(name: str) -> MethodCard:
    """The card registered under ``name``; ``ValueError`` with the closest names otherwise."""
    _ensure_loaded()
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown method name {name!r}{hint} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def create(name: str, **params: Any) -> torch.nn.Module:
    """Build method ``name`` with the card's defaults, overridden by ``params``.

    Raises:
        ValueError: unknown method name (the message lists the closest names), an unknown parameter (the
            message lists the allowed ones), or a missing required parameter. Out-of-range values are refused
            by the method's own constructor with a message naming the parameter.
    """
    card = get_card(name)
    allowed = set(card.defaults) | set(card.required)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"{name}: unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    missing = [r for r in card.required if r not in params]
    if missing:
        raise ValueError(f"{name}: missing required parameter(s) {missing}")
    return card.factory(**params)


def methods(
    pattern: str | None = None, *, family: str | None = None, kind: str | None = None
) -> list[MethodCard]:
    """Registered method cards, ordered by family (as in ``FAMILIES``), then as in ``CANONICAL_ORDER``.

    Args:
        pattern: optional shell-style filter on the name, e.g. ``"*dropblock*"``.
        family, kind: optional exact filters.
    """
    _ensure_loaded()
    if family is not None and family not in FAMILIES:
        raise ValueError(f"methods: family must be one of {FAMILIES}, got {family!r}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"methods: kind must be one of {KINDS}, got {kind!r}")
    cards = [
        c for c in _REGISTRY.values()
        if (pattern is None or fnmatch.fnmatchcase(c.name, pattern))
        and (family is None or c.family == family)
        and (kind is None or c.kind == kind)
    ]
    family_rank = {f: i for i, f in enumerate(FAMILIES)}
    name_rank = {n: i for i, n in enumerate(CANONICAL_ORDER)}
    return sorted(cards, key=lambda c: (family_rank[c.family], name_rank.get(c.name, len(name_rank)), c.name))
