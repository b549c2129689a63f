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
from dropkit.lab.insertion import Point
from dropkit.search_space import Range, fit_to_maps

__all__ = ["Member", "Arm", "BASELINE_ARM", "plan_arms", "cocktail", "arm_config", "attach_code"]


@dataclass(frozen=True)
class Member:
    """One method of an arm and where it goes.

    Attributes:
        method: a registered method name.
        points: where (``dropkit.lab.insertion.Point``: submodule name, after/before, feature shape).
    """

    method: str
    points: tuple[Point, ...]

    @property
    def specs(self) -> list[str]:
        """The points as ``RunConfig.placement`` writes them: ``NAME`` (after) or ``NAME:in`` (before)."""
        return [p.spec for p in self.points]

    def space(self) -> dict[str, Range]:
        """The card's search space, pixel sizes clipped to the maps at this member's points."""
        return fit_to_maps(dropkit.get_card(self.method).search_space, [p.shape for p in self.points])


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
        """``"flatten"`` for one method, ``"spatial_dropout at a, b; dropout at c"`` for a cocktail."""
        if len(self.members) == 1:
            return ", ".join(self.members[0].specs)
        return "; ".join(f"{m.method} at {', '.join(m.specs)}" for m in self.members) or "—"


BASELINE_ARM = Arm()


def _points_for(model: nn.Module, sample: Any, card: Any, at: Sequence[str] | None) -> list[Point]:
    """Where a method goes: the user's ``at`` (``NAME`` or ``NAME:in``), else as a lab run would place it (the
    model's own groups, or points found automatically in a model that names none), checked by one trial."""
    from dropkit.lab.insertion import check_fit
    from dropkit.lab.train import method_points

    _, points = method_points(list(at) if at else None, {}, card, model, sample)
    weakest = {name: (int(r.low) if r.integer else r.low) for name, r in card.search_space.items()}
    check_fit(card, points, weakest)
    return list(points)


def plan_arms(model: nn.Module, sample: Any, methods: Sequence[str], *, at: Sequence[str] | None = None
              ) -> tuple[list[Arm], dict[str, str]]:
    """The baseline and one arm per method that fits ``model``; ``skipped`` maps the others to the reason.

    Args:
        model: the network as built (nothing attached).
        sample: a small batch of inputs (shapes are traced with it).
        methods: method names; a ``"a+b"`` entry is an explicit cocktail.
        at: points (``NAME`` after a submodule, ``NAME:in`` before it) overriding the automatic ones for every
            method.
    """
    from dropkit.lab.insertion import MethodDoesNotFit

    arms, skipped, singles = [BASELINE_ARM], {}, {}
    for entry in methods:
        members = []
        for method in entry.split("+"):
            if method not in singles:
                card = dropkit.get_card(method)
                if not card.search_space:
                    skipped[entry] = (f"a {card.kind} method: it is built into a model, not inserted, so there is "
                                      "no insertion strength to tune")
                    break
                try:
                    singles[method] = Member(method, tuple(_points_for(model, sample, card, at)))
                except (MethodDoesNotFit, ValueError, TypeError) as err:
                    skipped[entry] = str(err)
                    break
            members.append(singles[method])
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


def cocktail(first: Member, second: Member) -> Arm | None:
    """Two methods at disjoint points as one arm, or None when their points overlap (or it is one method)."""
    if first.method == second.method or {p.name for p in first.points} & {p.name for p in second.points}:
        return None
    return Arm((first, second))


def arm_config(base: Any, arm: Arm, params: Mapping[str, Mapping[str, Any]], *, seed: int) -> Any:
    """The ``RunConfig`` that trains ``arm`` with ``params`` (method → its parameters) under ``seed``."""
    if arm.is_baseline:
        return dataclasses.replace(base, method="none", params={}, placement=None, also=[], seed=seed)
    first, *rest = arm.members
    also = [{"method": m.method, "params": dict(params.get(m.method, {})), "placement": m.specs} for m in rest]
    return dataclasses.replace(base, method=first.method, params=dict(params.get(first.method, {})),
                               placement=first.specs, also=also, seed=seed)


def attach_code(arm: Arm, params: Mapping[str, Mapping[str, Any]]) -> str:
    """The Python lines that apply ``arm`` with ``params`` to a user's ``model``."""
    if arm.is_baseline:
        return "# nothing to attach: train the model as it is"
    lines = ["import dropkit", ""]
    for m in arm.members:
        args = "".join(f", {k}={_literal(v)}" for k, v in params.get(m.method, {}).items())
        for where in ("after", "before"):
            names = [p.name for p in m.points if p.where == where]
            if names:
                place = "" if where == "after" else ", where='before'"
                lines.append(f"dropkit.attach(model, {m.method!r}, at={names!r}{place}{args})")
    return "\n".join(lines)


def _literal(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return repr(value)
