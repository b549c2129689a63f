"""Where a method goes in a network no one here wrote: insertion points found from one traced batch.

One batch runs through the model in eval mode, without gradients, with a forward hook on every leaf module, and
gives each leaf call's input and output shape, in the order of the forward pass. From these:

- **spatial stages** are the runs of consecutive leaf calls whose outputs (C, *S) share one resolution S, among
  the calls with spatial outputs (a 1×1 or flat output, e.g. a squeeze-excitation branch or ``Flatten``, neither
  joins nor breaks a run), and that hold a leaf with parameters (a run of bare reshapes is no stage). A stage's
  point is *after* its last leaf; where that leaf is called more than once (a shared ``ReLU``: a hook would act at
  every call) or is the model's output layer, *before* that last leaf or the next leaf call instead;
- the **classifier** point is *before* the last ``nn.Linear`` called (its input);
- the **input** point is *before* the first leaf called (the model's input, unless the forward transforms it with
  functional calls first).

A functional activation (``F.relu``) between a layer and the next leaf is invisible to module hooks, so a point
after that layer sees pre-activation features; name the point explicitly when that matters.

``InsertionPoints.for_method`` then places a method by its card, with the lab's rule (``dropkit.lab.placement``):
channel, block and region methods after the last two spatial stages, element methods before the classifier (after
the last two stages in a model without ``nn.Linear``, e.g. a U-Net), weight methods (DropConnect) wrap the
classifier, input-space methods at the input. It tries the method once on a random batch of the point's shape
(without touching the global random state) and raises :class:`MethodDoesNotFit` with the method's own reason when
it does not fit, e.g. a 2-D spatial method on signals or flat features.

Points are written ``NAME`` (after the submodule, its output) or ``NAME:in`` (before it, its input), as in
``--placement``; names are those of ``model.named_modules()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dropkit.lab.config import WHERE, parse_point
from dropkit.lab.placement import attach_params, preferred_group

__all__ = ["Point", "InsertionPoints", "MethodDoesNotFit", "find_insertion_points", "check_fit", "parse_point",
           "point_shapes", "explicit_points", "attach_points", "WHERE", "AUTO_GROUPS"]

#: the built-in models' group names that automatically found points answer to
AUTO_GROUPS = ("conv", "fc", "input")


class MethodDoesNotFit(ValueError):
    """A method cannot be placed in a model (no such place, or the features there have the wrong rank)."""


@dataclass(frozen=True)
class Point:
    """One place to insert a method.

    Attributes:
        name: a submodule name as in ``model.named_modules()``.
        where: ``"after"`` (its output) or ``"before"`` (its input), as ``dropkit.attach(where=...)``.
        shape: the feature shape there, batch dimension excluded.
    """

    name: str
    where: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.where not in WHERE:
            raise ValueError(f"Point.where must be one of {WHERE}, got {self.where!r}")

    @property
    def spec(self) -> str:
        """``NAME`` (after) or ``NAME:in`` (before): the text form ``parse_point`` reads."""
        return self.name if self.where == "after" else f"{self.name}:in"


@dataclass(frozen=True)
class InsertionPoints:
    """The places found in one model (see the module docstring)."""

    stages: list[Point]
    classifier: Point | None
    input: Point | None
    #: why a place is missing, e.g. a classifier that is called twice; shown in MethodDoesNotFit messages
    notes: tuple[str, ...] = field(default=(), compare=False)

    def group(self, name: str) -> list[Point]:
        """The points of a built-in model's group name: ``"conv"`` (the last two stages), ``"fc"`` (the
        classifier's input) or ``"input"``; empty when the model has no such place."""
        if name == "conv":
            return list(self.stages[-2:])
        if name == "fc":
            return [] if self.classifier is None else [self.classifier]
        if name == "input":
            return [] if self.input is None else [self.input]
        raise ValueError(f"placement group must be one of {AUTO_GROUPS} for a model whose points are found "
                         f"automatically, got {name!r}")

    def for_method(self, card: Any, params: Mapping[str, Any] | None = None) -> list[Point]:
        """Where method ``card`` goes (module docstring), checked by one trial of the method at each point.

        Args:
            card: the method's card (``dropkit.get_card(name)``).
            params: the method's explicit parameters for the trial (the card's defaults fill the rest, and an
                unset ``block_size`` is fitted to the maps as the lab does).

        Raises:
            MethodDoesNotFit: the model has no place of the kind the method needs, or the method refuses the
                features there; the message says which and why.
        """
        name, unit = card.name, card.taxonomy.get("unit")
        if card.kind == "block":
            raise MethodDoesNotFit(f"{name} is a block (a whole layer with the regularizer built in); it replaces "
                                   "a layer of the model and cannot be inserted at a point")
        group = preferred_group(card)
        if group == "branch":
            raise MethodDoesNotFit(f"{name} drops residual branches, which are not found automatically; name the "
                                   "branch modules explicitly (e.g. --placement 'layer2.0.bn2+layer3.0.bn2')")
        if unit == "weight":
            if self.classifier is None:
                raise MethodDoesNotFit(f"{name} drops weights of the classifier, but the model has no nn.Linear "
                                       f"classifier{self._why()}")
            return [self.classifier]  # a wrapper: it replaces the Linear itself, whatever `where` says
        points = self.group(group)
        if not points and group == "fc" and self.stages:
            points = self.group("conv")  # element methods in a model without a classifier (a U-Net): its maps
        if not points:
            wanted = {"conv": "spatial feature maps (C, H, W) or (C, L), found at the ends of conv stages",
                      "fc": "the input of an nn.Linear classifier", "input": "the model's input"}[group]
            raise MethodDoesNotFit(f"{name} ({unit} unit) needs {wanted}, and the model has none{self._why()}")
        check_fit(card, points, params or {})
        return points

    def _why(self) -> str:
        return f" ({'; '.join(self.notes)})" if self.notes else ""


def check_fit(card: Any, points: Sequence[Point], params: Mapping[str, Any]) -> None:
    """Run method ``card`` once, in training mode, on a random batch of each point's shape (the global random
    state is left as it was); its refusal becomes :class:`MethodDoesNotFit` naming the point and the shape.

    Args:
        params: the method's explicit parameters (an unset ``block_size`` is fitted to the maps, as the lab does).
    """
    import dropkit

    if card.kind == "wrapper":
        return  # it wraps a layer; nothing to run on features
    passed = attach_params(card, params, {p.spec: p.shape for p in points})
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # the run's masks must not depend on this trial
        for point in points:
            try:
                layer = dropkit.create(card.name, **passed)
                layer.train()
                layer(torch.randn(2, *point.shape))
            except (ValueError, TypeError, RuntimeError, IndexError) as err:
                raise MethodDoesNotFit(f"{card.name} does not fit the features {point.shape} at {point.spec}: "
                                       f"{err}") from err


# ------------------------------------------------------------------------------------------------- tracing
@dataclass
class _Call:
    name: str
    module: nn.Module
    inp: torch.Tensor | None
    out: torch.Tensor | None


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from dropkit.base import DropkitModule

    return [(n, m) for n, m in model.named_modules()
            if n and next(m.children(), None) is None and not isinstance(m, DropkitModule)]


@torch.no_grad()
def _trace(model: nn.Module, sample: torch.Tensor) -> tuple[list[_Call], Any]:
    calls: list[_Call] = []

    def record(name: str, module: nn.Module, args: tuple, out: Any) -> None:
        inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
        calls.append(_Call(name, module, inp, out if isinstance(out, torch.Tensor) else None))

    hooks = [m.register_forward_hook(lambda mod, args, out, n=n: record(n, mod, args, out))
             for n, m in _leaves(model)]
    was_training = model.training
    try:
        model.eval()
        output = model(sample)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return calls, output


def _shape(t: torch.Tensor | None) -> tuple[int, ...] | None:
    return None if t is None else tuple(int(s) for s in t.shape[1:])


def _resolution(t: torch.Tensor | None) -> tuple[int, ...] | None:
    """S of a (N, C, *S) output with more than one position; None for flat or 1×1 outputs."""
    shape = _shape(t)
    if shape is None or len(shape) < 2 or math.prod(shape[1:]) <= 1:
        return None
    return shape[1:]


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _stage_point(run: list[_Call], after: _Call | None, counts: Mapping[str, int], output: Any) -> Point | None:
    """The point at the end of one stage (module docstring); None when every candidate is shared."""
    last = run[-1]
    is_output = last.out is output
    if counts[last.name] == 1 and not is_output:
        return Point(last.name, "after", _shape(last.out))
    if counts[last.name] == 1 and _resolution(last.inp) == _resolution(last.out):
        return Point(last.name, "before", _shape(last.inp))  # the output layer's input: the last feature maps
    if after is not None and counts[after.name] == 1 and after.inp is last.out:
        return Point(after.name, "before", _shape(after.inp))
    for call in reversed(run[:-1]):
        if counts[call.name] == 1 and call.out is not output:
            return Point(call.name, "after", _shape(call.out))
    return None


def find_insertion_points(model: nn.Module, sample: torch.Tensor) -> InsertionPoints:
    """The spatial stages, the classifier input and the input of ``model``, from one batch ``sample``.

    Args:
        model: any ``nn.Module`` (left in the train/eval mode it was in).
        sample: a batch (N, *input_shape) on the model's device; one or two inputs suffice.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"find_insertion_points: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(sample, torch.Tensor) or sample.ndim < 2:
        raise TypeError(f"find_insertion_points: sample must be a batch tensor (N, ...), got {sample!r:.80}")
    calls, output = _trace(model, sample)
    if not calls:
        raise ValueError(f"find_insertion_points: {type(model).__name__} called no leaf module on the sample")
    counts: dict[str, int] = {}
    for c in calls:
        counts[c.name] = counts.get(c.name, 0) + 1
    notes: list[str] = []

    # spatial stages: runs of one resolution among the calls with spatial outputs
    runs: list[list[int]] = []
    for i, c in enumerate(calls):
        res = _resolution(c.out)
        if res is None:
            continue
        if runs and _resolution(calls[runs[-1][-1]].out) == res:
            runs[-1].append(i)
        else:
            runs.append([i])
    stages: list[Point] = []
    for run in runs:
        members = [calls[i] for i in run]
        if not any(_has_parameters(c.module) for c in members):
            continue
        after = calls[run[-1] + 1] if run[-1] + 1 < len(calls) else None
        point = _stage_point(members, after, counts, output)
        if point is None:
            notes.append(f"the stage at resolution {_resolution(members[-1].out)} ends in modules called more "
                         "than once")
        elif point not in stages:
            stages.append(point)

    linears = [c for c in calls if isinstance(c.module, nn.Linear) and c.inp is not None]
    classifier = None
    if linears:
        last = linears[-1]
        if counts[last.name] == 1:
            classifier = Point(last.name, "before", _shape(last.inp))
        else:
            notes.append(f"the last nn.Linear {last.name!r} is called {counts[last.name]} times")
    first = calls[0]
    model_input = None
    if counts[first.name] == 1 and first.inp is not None:
        model_input = Point(first.name, "before", _shape(first.inp))
    return InsertionPoints(stages=stages, classifier=classifier, input=model_input, notes=tuple(notes))


# ------------------------------------------------------------------------------------------ explicit points
@torch.no_grad()
def point_shapes(model: nn.Module, points: Sequence[tuple[str, str]], sample: torch.Tensor
                 ) -> list[tuple[int, ...]]:
    """The feature shape (batch excluded) at each (name, where) of ``model`` for ``sample`` (eval mode).

    Raises:
        ValueError: a name that is not a submodule, a bad ``where``, or a submodule the sample never reaches.
    """
    import difflib

    modules = dict(model.named_modules())
    for name, where in points:
        if where not in WHERE:
            raise ValueError(f"where must be one of {WHERE}, got {where!r}")
        if not name or name not in modules:
            close = difflib.get_close_matches(str(name), [n for n in modules if n], n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"no submodule named {name!r} in {type(model).__name__}{hint}")
    found: dict[tuple[str, str], tuple[int, ...]] = {}

    def keep(key: tuple[str, str], value: Any) -> None:
        if isinstance(value, torch.Tensor) and key not in found:  # the first call counts
            found[key] = _shape(value)

    hooks = []
    for name, where in dict.fromkeys(points):
        module = modules[name]
        if where == "after":
            hooks.append(module.register_forward_hook(lambda _m, _a, out, k=(name, where): keep(k, out)))
        else:
            hooks.append(module.register_forward_pre_hook(
                lambda _m, args, k=(name, where): keep(k, args[0] if args else None)))
    was_training = model.training
    try:
        model.eval()
        model(sample)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    missing = [Point(n, w, ()).spec for n, w in points if (n, w) not in found]
    if missing:
        raise ValueError(f"{type(model).__name__}: the forward pass sends no tensor through {missing}")
    return [found[p] for p in points]


def explicit_points(model: nn.Module, specs: Sequence[str], sample: torch.Tensor) -> list[Point]:
    """Points from their text form (``NAME`` / ``NAME:in`` / ``NAME:out``), checked, with their shapes."""
    if isinstance(specs, str) or not isinstance(specs, Sequence) or not specs:
        raise ValueError(f"placement must be a non-empty list of points 'NAME' or 'NAME:in', got {specs!r}")
    pairs = [parse_point(s) for s in specs]
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"placement names a point twice: {list(specs)}")
    return [Point(n, w, s) for (n, w), s in zip(pairs, point_shapes(model, pairs, sample))]


def attach_points(model: nn.Module, method: str, points: Sequence[Point], **params: Any) -> list[Any]:
    """``dropkit.attach`` the method at every point, after or before as each says; one handle per ``where``."""
    import dropkit

    handles = []
    try:
        for where in WHERE:
            names = [p.name for p in points if p.where == where]
            if names:
                handles.append(dropkit.attach(model, method, at=names, where=where, **params))
    except Exception:
        for h in handles:
            h.remove()
        raise
    return handles
