"""What the advisor compares: arms. An arm is the baseline (nothing inserted), one method at its insertion points,
or a cocktail of two methods at different points; each arm becomes a ``RunConfig`` once its strengths are chosen.

Insertion points come from the model itself (``find_insertion_points``: one traced batch), unless the user names
them with ``at``. A method that cannot fit the model is not an arm; the reason is kept for the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

import dropkit
from dropkit.search_space import Range, fit_to_maps

__all__ = ["Member", "Arm", "BASELINE_ARM", "plan_arms", "cocktail", "arm_config", "attach_code"]


@dataclass(frozen=True)
class Member:
    """One method of an arm and where it goes.

    Attributes:
        method: a registered method name.
        at: the submodule names it is attached to (as in ``model.named_modules()``).
        where: ``"after"`` (on the submodule's output) or ``"before"`` (on its input).
        shapes: the feature shape at each point, batch dimension excluded (clips pixel-sized parameters).
    """

    method: str
    at: tuple[str, ...]
    where: str = "after"
    shapes: tuple[tuple[int, ...], ...] = ()

    def space(self) -> dict[str, Range]:
        """The card's search space, block sizes clipped to the maps at this member's points."""
        return fit_to_maps(dropkit.get_card(self.method).search_space, self.shapes)


@dataclass(frozen=True)
class Arm:
    """The baseline (no members), a single method (one member) or a cocktail (two members at different points)."""

    members: tuple[Member, ...] = ()

    @property
    def name(self) -> str:
        return "+".join(m.method for m in self.members) or "none"

    @property
    def is_baseline(self) -> bool:
        return not self.members

    def space(self) -> dict[str, Range]:
        """The joint search space, parameters named ``"<method>.<parameter>"`` (fixed ranges left out)."""
        return {f"{m.method}.{name}": rng for m in self.members for name, rng in m.space().items() if not rng.fixed}

    def params(self, flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """``{"dropout.p": 0.3}`` → ``{"dropout": {"p": 0.3}}`` with the fixed ranges' single values filled in."""
        out: dict[str, dict[str, Any]] = {m.method: {} for m in self.members}
        for m in self.members:
            for name, rng in m.space().items():
                if rng.fixed:
                    out[m.method][name] = int(rng.low) if rng.integer else rng.low
        for key, value in flat.items():
            method, _, name = key.partition(".")
            out[method][name] = value
        return out

    def describe_points(self) -> str:
        return "; ".join(f"{m.method} {m.where} {', '.join(m.at)}" for m in self.members) or "—"


BASELINE_ARM = Arm()


def _points_for(model: nn.Module, sample: Any, method: str, at: Sequence[str] | None) -> tuple[list[str], str]:
    """Where ``method`` goes in ``model``: the user's ``at``, else the automatic insertion points."""
    from dropkit.lab.insertion import find_insertion_points

    card = dropkit.get_card(method)
    if at:
        where = "before" if card.taxonomy.get("space") == "input" else "after"
        return list(at), where
    points = find_insertion_points(model, sample).for_method(card)
    wheres = {p.where for p in points}
    if len(wheres) != 1:  # attach takes one `where` per call; the finder gives one per method
        raise ValueError(f"{method}: insertion points mix 'before' and 'after' ({points}); pass --at")
    return [p.name for p in points], wheres.pop()


def plan_arms(model: nn.Module, sample: Any, methods: Sequence[str], *, at: Sequence[str] | None = None
              ) -> tuple[list[Arm], dict[str, str]]:
    """The baseline and one arm per method that fits ``model``; ``skipped`` maps the others to the reason.

    Args:
        model: the network as built (nothing attached).
        sample: a small batch of inputs (shapes are traced with it).
        methods: method names; a ``"a+b"`` entry is an explicit cocktail.
        at: submodule names overriding the automatic points for every method.
    """
    from dropkit.lab.insertion import MethodDoesNotFit
    from dropkit.lab.models import feature_shapes

    arms, skipped, singles = [BASELINE_ARM], {}, {}
    for entry in methods:
        parts = entry.split("+")
        members = []
        for method in parts:
            if method in singles:
                members.append(singles[method])
                continue
            card = dropkit.get_card(method)
            if not card.search_space:
                skipped[entry] = (f"{card.kind} method: it is built into a model, not inserted, so there is no "
                                  "insertion strength to tune")
                break
            try:
                names, where = _points_for(model, sample, method, at)
                shapes = feature_shapes(model, names, sample)
                if where == "before":  # the input of the named module: the shape of what feeds it
                    shapes = _input_shapes(model, names, sample)
                member = Member(method, tuple(names), where, tuple(tuple(shapes[n]) for n in names))
                _check_fits(model, member, sample)
            except (MethodDoesNotFit, ValueError, TypeError, RuntimeError) as err:
                skipped[entry] = str(err)
                break
            singles[method] = member
            members.append(member)
        else:
            if len(members) == 1:
                arms.append(Arm(tuple(members)))
            else:
                combined = cocktail(*members)
                if combined is None:
                    skipped[entry] = f"the methods of {entry} share insertion points; a cocktail needs different ones"
                else:
                    arms.append(combined)
    return arms, skipped


def _input_shapes(model: nn.Module, names: Sequence[str], sample: Any) -> dict[str, tuple[int, ...]]:
    import torch

    shapes: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_pre_hook(
        lambda mod, args, n=n: shapes.setdefault(n, tuple(args[0].shape[1:]))) for n in names]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(sample)
            model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _check_fits(model: nn.Module, member: Member, sample: Any) -> None:
    """Attach the method at its weakest setting and run one batch (a spatial method on flat features fails here)."""
    import copy

    import torch

    trial = copy.deepcopy(model)
    params = {name: (int(r.low) if r.integer else r.low) for name, r in member.space().items()}
    handle = dropkit.attach(trial, member.method, at=list(member.at), where=member.where, **params)
    try:
        trial.train()
        with torch.no_grad():
            trial(sample)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(f"{member.method} does not run at {list(member.at)}: {err}") from err
    finally:
        handle.remove()


def cocktail(first: Member, second: Member) -> Arm | None:
    """Two methods at disjoint points as one arm, or None when their points overlap (or it is one method)."""
    if first.method == second.method or set(first.at) & set(second.at):
        return None
    return Arm((first, second))


def arm_config(base: Any, arm: Arm, params: Mapping[str, Mapping[str, Any]], *, seed: int) -> Any:
    """The ``RunConfig`` that trains ``arm`` with ``params`` (method → its parameters) under ``seed``."""
    if arm.is_baseline:
        return dataclasses.replace(base, method="none", params={}, placement=None, where="after", also=[], seed=seed)
    first, *rest = arm.members
    also = [{"method": m.method, "params": dict(params.get(m.method, {})), "placement": list(m.at), "where": m.where}
            for m in rest]
    return dataclasses.replace(base, method=first.method, params=dict(params.get(first.method, {})),
                               placement=list(first.at), where=first.where, also=also, seed=seed)


def attach_code(arm: Arm, params: Mapping[str, Mapping[str, Any]]) -> str:
    """The Python lines that apply ``arm`` with ``params`` to a user's ``model``."""
    if arm.is_baseline:
        return "# nothing to attach: train the model as it is"
    lines = ["import dropkit", ""]
    for m in arm.members:
        args = ", ".join(f"{k}={_literal(v)}" for k, v in params.get(m.method, {}).items())
        where = "" if m.where == "after" else f", where={m.where!r}"
        lines.append(f"dropkit.attach(model, {m.method!r}, at={list(m.at)!r}{where}{', ' + args if args else ''})")
    return "\n".join(lines)


def _literal(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return repr(value)
