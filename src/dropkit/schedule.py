"""Schedules that drive dropkit layers from outside: the layers never count steps themselves.

A schedule holds the list of dropkit layers it drives (all of a model's, or those of chosen methods) and sets
their ``p`` (or ``enabled``) each time the training loop calls ``step()`` — once per training batch, before the
forward pass. Its position is in ``state_dict()``, so a resumed run continues its ramp where it stopped.

    >>> ramp = dropkit.schedule.LinearRamp(model, n_steps=len(loader) * epochs // 2)   # 0 → each layer's p
    >>> for x, y in loader:
    ...     ramp.step(); loss = criterion(model(x), y); ...

Why outside: a counter inside ``forward`` (CorrDrop's official code, mmdet's DropBlock) makes the ramp length
depend on how many forward calls happen — gradient-accumulation micro-steps, evaluation passes — and is lost
on resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from dropkit.attach import dropkit_layers
from dropkit.base import DropkitModule
from dropkit.validation import check_choice, check_positive_int, check_probability

__all__ = ["Schedule", "LinearRamp", "Constant", "Participation", "WarmUp", "from_card"]


class Schedule:
    """Base: collects the layers; subclasses implement ``_apply(t)`` for the step index ``t`` (0-based)."""

    name = "schedule"

    def __init__(self, model: nn.Module | Iterable[DropkitModule], methods: Iterable[str] | str | None = None) -> None:
        if isinstance(model, nn.Module):
            self.layers = [layer for _, layer in dropkit_layers(model, methods)]
        else:
            self.layers = list(model)
            bad = [type(m).__name__ for m in self.layers if not isinstance(m, DropkitModule)]
            if bad:
                raise TypeError(f"{self.name}: can only drive dropkit layers, got {bad}")
        if not self.layers:
            raise ValueError(f"{self.name}: the model holds no dropkit layer"
                             f"{'' if methods is None else f' of method(s) {methods!r}'} to schedule")
        self.t = 0

    def step(self) -> None:
        """Set the layers for the next batch, then advance."""
        self._apply(self.t)
        self.t += 1

    def _apply(self, t: int) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.t = check_positive_int(int(state["t"]), "t", self.name, minimum=0)


class LinearRamp(Schedule):
    """p_t = start + (stop − start) · min(t / n_steps, 1): DropBlock's "gradually decreasing keep_prob".

    Args:
        model: a model (its dropkit layers are driven) or an iterable of dropkit layers.
        n_steps: steps over which the ramp runs; afterwards p stays at ``stop``.
        start: p at step 0 (default 0).
        stop: final p; None ramps each layer to the p it had when the schedule was built.
        methods: only layers of these method names.
    """

    name = "LinearRamp"

    def __init__(self, model, n_steps: int, start: float = 0.0, stop: float | None = None, methods=None) -> None:
        super().__init__(model, methods)
        self.n_steps = check_positive_int(n_steps, "n_steps", self.name)
        self.start = check_probability(start, "start", self.name)
        self.stops = [layer.p if stop is None else check_probability(stop, "stop", self.name) for layer in self.layers]
        self._apply(0)

    def value(self, t: int, stop: float) -> float:
        return self.start + (stop - self.start) * min(t / self.n_steps, 1.0)

    def _apply(self, t: int) -> None:
        for layer, stop in zip(self.layers, self.stops):
            layer.p = self.value(t, stop)


class Constant(Schedule):
    """Sets every driven layer's p to ``p`` at each step (useful to override a schedule for a phase)."""

    name = "Constant"

    def __init__(self, model, p: float, methods=None) -> None:
        super().__init__(model, methods)
        self.p = check_probability(p, "p", self.name)
        self._apply(0)

    def _apply(self, t: int) -> None:
        for layer in self.layers:
            layer.p = self.p


class Participation(Schedule):
    """Regularize only a fraction ``rate`` of the batches (FocusedDropout's participation rate).

    ``mode="even"`` spreads the participating batches evenly (batch t participates when ⌊(t+1)·rate⌋ > ⌊t·rate⌋,
    so exactly ⌊T·rate⌋ of the first T batches, never front-loaded); ``mode="random"`` draws each batch
    independently with its own seeded generator (so the decision does not consume the global RNG). After
    ``step()``, ``participating`` says whether the coming batch is regularized.

    A layer that draws its own participation (FocusedDropout, ``external_participation``) hands the decision to
    the schedule: it then regularizes every batch the schedule enables.
    """

    name = "Participation"

    def __init__(self, model, rate: float, mode: str = "even", seed: int = 0, methods=None) -> None:
        super().__init__(model, methods)
        self.rate = check_probability(rate, "rate", self.name)
        self.mode = check_choice(mode, "mode", self.name, ("even", "random"))
        self.seed = int(seed)
        self.participating = False
        for layer in self.layers:
            if hasattr(layer, "external_participation"):
                layer.external_participation = True

    def participates(self, t: int) -> bool:
        if self.mode == "even":
            return math.floor((t + 1) * self.rate + 1e-9) > math.floor(t * self.rate + 1e-9)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + t)
        return bool(torch.rand((), generator=generator) < self.rate)

    def _apply(self, t: int) -> None:
        self.participating = self.participates(t)
        for layer in self.layers:
            layer.enabled = self.participating


class WarmUp(Schedule):
    """Keep the layers off (``enabled=False``) for the first ``n_steps`` batches, then on."""

    name = "WarmUp"

    def __init__(self, model, n_steps: int, methods=None) -> None:
        super().__init__(model, methods)
        self.n_steps = check_positive_int(n_steps, "n_steps", self.name, minimum=0)
        self._apply(0)

    def _apply(self, t: int) -> None:
        for layer in self.layers:
            layer.enabled = t >= self.n_steps


def from_card(card, model: nn.Module, total_steps: int) -> Schedule | None:
    """The schedule a method's card asks for, over a run of ``total_steps`` batches, or None.

    Card schedules: ``{"type": "linear_ramp", "fraction": f}`` (ramp over the first f of training, default 1) or
    ``"steps": n`` (over the first n batches, whatever the run's length: CorrDrop's 200),
    ``{"type": "participation", "rate": r, "spread": s}`` (s = ``"even"`` or ``"random"``; ``"mode"`` is read
    where a card has no ``"spread"``), ``{"type": "warmup", "fraction": f}`` or ``"steps": n``.
    """
    spec = card.schedule
    if spec is None:
        return None
    kind = spec.get("type")
    total_steps = check_positive_int(total_steps, "total_steps", "from_card")
    if kind == "linear_ramp":
        if "steps" in spec:
            n = check_positive_int(spec["steps"], "steps", f"from_card ({card.name})")
        else:
            n = max(1, round(total_steps * float(spec.get("fraction", 1.0))))
        return LinearRamp(model, n, start=float(spec.get("start", 0.0)), methods=[card.name])
    if kind == "participation":
        spread = spec.get("spread", spec.get("mode", "even"))
        return Participation(model, float(spec["rate"]), mode=spread, methods=[card.name])
    if kind == "warmup":
        n = int(spec["steps"]) if "steps" in spec else round(total_steps * float(spec.get("fraction", 0.1)))
        return WarmUp(model, n, methods=[card.name])
    raise ValueError(f"from_card: {card.name}'s card has an unknown schedule type {kind!r}; "
                     "allowed: 'linear_ramp', 'participation', 'warmup'")
