"""FocusedDropout (Xie, Liu, Deng, Cheng, Wang & Liu, arXiv:2103.15425, 2021; journal version Liu, Xie, Cheng,
Deng, Yang, Wang & Liu, Applied Sciences 12(15):7682, 2022).

Per image (paper Alg. 1, eqs. 1–5): the channel with the highest global average activation is the *reference
channel*; its peak value P sets a threshold τ = γ·P with γ random; the positions where the reference channel
exceeds τ form the "focused area", and every channel keeps only that area (one spatial mask shared by all
channels). Nothing is rescaled. Eval is the identity.

Reading implemented (``docs/methods/focused_dropout.md``):

* γ range: the text (eq. 4, §5.1, the experiments) says U(0.3, 0.6) — the default ``gamma_range``; Algorithm 1
  says U(0.6, 0.9) — pass ``gamma_range=(0.6, 0.9)`` for that reading.
* γ granularity is not stated: one γ per image (``gamma_per="sample"``, default) reads eq. 4 literally; the
  public reproduction (Kunhong Yu) draws one per position (``gamma_per="position"``).
* The peak position itself is always kept (the mask is ``ref > τ or ref == peak``): with γ < 1 and a positive
  peak this changes nothing, and it keeps an all-zero or non-positive reference channel from blanking the image.
* Participation rate: the paper regularizes only ~10 % of the mini-batches (all samples of a chosen batch, a
  per-batch Bernoulli decision) and raises the weight decay on those batches. The module does this by itself:
  each training forward participates with probability ``participation`` (default 0.1), drawn from torch's RNG
  (or the module's generator) as a 0-D tensor, so the forward still compiles without a graph break; whether the
  last training forward participated is in ``layer.participating``. A ``dropkit.schedule.Participation``
  attached from outside (the lab's, which spreads the batches evenly) takes over: it flips ``layer.enabled`` per
  batch and the module then regularizes every enabled batch. :class:`ParticipationWeightDecay` below raises the
  optimizer's weight decay on the participating batches, reading either source.
* ``p`` (default 1.0, the paper) is the probability that a sample of a regularized batch is focused; values
  below 1 apply the mask to a random subset of samples (the 2021 reproduction's per-sample variant).

Weight decay rule: the paper "magnifies weight decay" (MWD) on the batches that use FocusedDropout; its
Fig. 6c sweeps that weight decay and finds 1e-3 best (CIFAR ResNets, whose base weight decay is 5e-4). The
exact base value is not in the text retrieved, so :class:`ParticipationWeightDecay` takes either the absolute
value used on participating batches (default 1e-3) or a factor of the base value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dropkit.base import DropkitModule
from dropkit.masks import sample_uniform
from dropkit.registry import register
from dropkit.validation import (
    check_choice,
    check_float_tensor,
    check_generator,
    check_ndim,
    check_probability,
    check_real,
)

__all__ = ["focused_dropout", "FocusedDropout", "ParticipationWeightDecay"]

_NAME = "focused_dropout"
_GAMMA_PER = ("sample", "position")
#: weight decay on participating batches, paper Fig. 6c
PAPER_WEIGHT_DECAY = 1e-3


def _check_gamma_range(value: Any, method: str) -> tuple[float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise TypeError(f"{method}: gamma_range must be a pair (low, high) with 0 <= low <= high < 1, got {value!r}")
    low = check_real(value[0], "gamma_range[0]", method, low=0.0, high=1.0, high_open=True)
    high = check_real(value[1], "gamma_range[1]", method, low=0.0, high=1.0, high_open=True)
    if low > high:
        raise ValueError(f"{method}: gamma_range must satisfy low <= high, got {tuple(value)!r}")
    return (low, high)


def focused_dropout(
    x: torch.Tensor,
    p: float = 1.0,
    *,
    gamma_range: tuple[float, float] = (0.3, 0.6),
    gamma_per: str = "sample",
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FocusedDropout on one batch (the caller decides whether this batch participates).

    Args:
        x: input of shape (N, C, H, W).
        p: probability that each sample is focused (1.0 in the paper: every sample of a participating batch).
        gamma_range: (low, high) of the uniform threshold ratio γ, 0 ≤ low ≤ high < 1.
        gamma_per: ``"sample"`` (one γ per image) or ``"position"`` (one per spatial position).
        training: when False, ``x`` is returned unchanged.
        generator: optional generator for γ (and for the per-sample draw when p < 1).

    Returns:
        ``x * mask`` with mask of shape (N, 1, H, W) in {0, 1}; no rescaling.
    """
    check_float_tensor(x, _NAME)
    check_ndim(x, _NAME, (4,), "(N, C, H, W)")
    p = check_probability(p, "p", _NAME)
    low, high = _check_gamma_range(gamma_range, _NAME)
    check_choice(gamma_per, "gamma_per", _NAME, _GAMMA_PER)
    generator = check_generator(generator, x, _NAME)
    if not training or p == 0.0:
        return x
    return x * focus_keep_mask(x, p, low, high, gamma_per, generator).to(x.dtype)


@torch.no_grad()
def focus_keep_mask(
    x: torch.Tensor, p: float, low: float, high: float, gamma_per: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Boolean (N, 1, H, W) keep mask of eqs. 1–5 for checked arguments (see :func:`focused_dropout`)."""
    n, c, h, w = x.shape
    xd = x.detach()
    # eqs. 1–2: reference channel = argmax of the channel means (float32 reduction).
    ref_index = xd.mean(dim=(2, 3), dtype=torch.float32).argmax(dim=1)  # (N,)
    ref = xd.gather(1, ref_index.view(n, 1, 1, 1).expand(n, 1, h, w)).float()  # (N, 1, H, W)
    # eq. 3: peak of the reference channel; eq. 4: τ = γ·peak.
    peak = ref.amax(dim=(2, 3), keepdim=True)
    gamma_shape = (n, 1, 1, 1) if gamma_per == "sample" else (n, 1, h, w)
    gamma = sample_uniform(gamma_shape, x, generator)
    gamma = gamma * (high - low) + low
    # eq. 5: focused area; the peak itself always stays.
    keep = (ref > gamma * peak) | (ref == peak)
    if p < 1.0:
        unfocused = sample_uniform((n, 1, 1, 1), x, generator) >= p
        keep = keep | unfocused
    return keep


@register(
    _NAME,
    family="guided",
    kind="activation",
    paper="Liu, Xie, Cheng, Deng, Yang, Wang & Liu, FocusedDropout for Convolutional Neural Network, "
          "Applied Sciences 12(15):7682 (2022); arXiv:2103.15425",
    summary="keeps only the area where the highest-mean channel exceeds a random fraction of its peak, in every "
            "channel; no rescaling; applied on ~10% of batches with a raised weight decay",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ|x)", "sampling": "adaptive",
              "unit": "region", "phase": "train", "generality": "generic"},
    schedule={"type": "participation", "rate": 0.1, "spread": "even", "weight_decay": PAPER_WEIGHT_DECAY,
              "weight_decay_rule": "use this weight decay on participating batches, the base value otherwise "
                                   "(paper's MWD, Fig. 6c); see dropkit.methods.focused_dropout."
                                   "ParticipationWeightDecay"},
)
class FocusedDropout(DropkitModule):
    """Module form of :func:`focused_dropout`.

    Args:
        p: probability that a sample of a regularized batch is focused (default 1.0, the paper).
        gamma_range: range of the random threshold ratio (default (0.3, 0.6), the paper's text; Alg. 1: (0.6, 0.9)).
        gamma_per: ``"sample"`` (default) or ``"position"``.
        participation: probability that a training batch is regularized (default 0.1, the paper), drawn by the
            module at each training forward. Ignored while a ``dropkit.schedule.Participation`` drives the
            layer (``external_participation`` is then True and every enabled batch is regularized).
        generator: optional ``torch.Generator``.

    Attributes:
        participating: whether the last training forward regularized its batch (for the weight-decay rule).
        external_participation: True when a participation schedule decides the batches (set by the schedule).
    """

    repr_fields = ("gamma_range", "gamma_per", "participation")

    def __init__(
        self,
        p: float = 1.0,
        gamma_range: tuple[float, float] = (0.3, 0.6),
        gamma_per: str = "sample",
        participation: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator=generator)
        self.gamma_range = _check_gamma_range(gamma_range, self.method_name)
        self.gamma_per = check_choice(gamma_per, "gamma_per", self.method_name, _GAMMA_PER)
        self.participation = participation
        self.external_participation = False
        # A buffer, not a Python attribute: an in-place copy is what a compiled forward can record without a break.
        self.register_buffer("_participated", torch.zeros((), dtype=torch.bool), persistent=False)

    @property
    def participating(self) -> bool:
        """Whether the last training forward regularized its batch (False before the first one)."""
        return bool(self._participated)

    @property
    def participation(self) -> float:
        return self._participation

    @participation.setter
    def participation(self, value: float) -> None:
        self._participation = check_probability(value, "participation", self.method_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if not self.active:
            self._participated.fill_(False)
            return x
        check_float_tensor(x, self.method_name)
        check_ndim(x, self.method_name, (4,), "(N, C, H, W)")
        generator = self._generator_for(x)
        low, high = self.gamma_range
        if self.external_participation or self.participation >= 1.0:
            self._participated.fill_(True)
            keep = focus_keep_mask(x, self.p, low, high, self.gamma_per, generator)
        else:
            # The per-batch Bernoulli(participation) decision as a 0-D tensor: no .item(), no graph break. The mask
            # is built anyway and voided on non-participating batches (it is small next to the layer it follows).
            with torch.no_grad():
                participates = sample_uniform((), x, generator) < self.participation
                self._participated.copy_(participates)
                keep = focus_keep_mask(x, self.p, low, high, self.gamma_per, generator) | ~participates
        return x * keep.to(x.dtype)


class ParticipationWeightDecay:
    """Raise the optimizer's weight decay on the batches where FocusedDropout participates (paper's MWD).

    Call :meth:`step` once per batch, after the participation schedule's ``step()`` and before
    ``optimizer.step()``. On a participating batch every param group whose base weight decay is > 0 gets the
    boosted value; otherwise the base value is restored. Groups with weight decay 0 (e.g. norms and biases kept
    out of decay on purpose) stay at 0.

    Args:
        optimizer: any ``torch.optim.Optimizer`` whose param groups have ``"weight_decay"``.
        participation: where to read whether the batch participates: an object with a bool attribute
            ``participating`` — a ``dropkit.schedule.Participation`` (it knows before the forward) or a standalone
            :class:`FocusedDropout` (it knows after its training forward: call :meth:`step` after
            ``loss.backward()``, before ``optimizer.step()``) — or a callable returning a bool.
        weight_decay: absolute weight decay on participating batches (default 1e-3, paper Fig. 6c).
        factor: instead of ``weight_decay``, multiply each group's base weight decay by this factor (≥ 1).

    Example::

        schedule = dropkit.schedule.Participation(model, 0.1)
        wd = ParticipationWeightDecay(optimizer, schedule)          # 1e-3 on participating batches
        for x, y in loader:
            schedule.step(); wd.step()
            loss = criterion(model(x), y); optimizer.zero_grad(); loss.backward(); optimizer.step()

        # or with the module deciding by itself (no schedule):
        wd = ParticipationWeightDecay(optimizer, model.focused)     # model.focused = FocusedDropout()
        for x, y in loader:
            loss = criterion(model(x), y); optimizer.zero_grad(); loss.backward()
            wd.step(); optimizer.step()
    """

    _METHOD = "ParticipationWeightDecay"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        participation: Any,
        weight_decay: float | None = None,
        *,
        factor: float | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{self._METHOD}: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not (callable(participation) or hasattr(participation, "participating")):
            raise TypeError(f"{self._METHOD}: participation must have a bool attribute 'participating' "
                            f"(e.g. dropkit.schedule.Participation) or be a callable returning a bool, "
                            f"got {type(participation).__name__}")
        if weight_decay is not None and factor is not None:
            raise ValueError(f"{self._METHOD}: give either weight_decay or factor, not both")
        if factor is not None:
            factor = check_real(factor, "factor", self._METHOD, low=1.0)
        elif weight_decay is None:
            weight_decay = PAPER_WEIGHT_DECAY
        if weight_decay is not None:
            weight_decay = check_real(weight_decay, "weight_decay", self._METHOD, low=0.0)
        for i, group in enumerate(optimizer.param_groups):
            if "weight_decay" not in group:
                raise ValueError(f"{self._METHOD}: param group {i} of the optimizer has no 'weight_decay'")
        self.optimizer = optimizer
        self.participation = participation
        self.weight_decay = weight_decay
        self.factor = factor
        self.base = [float(group["weight_decay"]) for group in optimizer.param_groups]
        self.participating = False

    def _read(self) -> bool:
        source = self.participation
        value = source.participating if hasattr(source, "participating") else source()
        if not isinstance(value, bool):
            raise TypeError(f"{self._METHOD}: participation must report a bool, got {value!r}")
        return value

    def boosted(self, base: float) -> float:
        """The weight decay a group with base value ``base`` gets on a participating batch."""
        if base == 0.0:
            return 0.0
        return base * self.factor if self.factor is not None else float(self.weight_decay)

    def step(self, participating: bool | None = None) -> bool:
        """Set every group's weight decay for the coming batch; returns whether it participates.

        ``participating`` overrides what the participation source reports.
        """
        value = self._read() if participating is None else participating
        if not isinstance(value, bool):
            raise TypeError(f"{self._METHOD}: participating must be True, False or None, got {value!r}")
        self.participating = value
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["weight_decay"] = self.boosted(base) if value else base
        return value

    def state_dict(self) -> dict[str, Any]:
        return {"base": list(self.base), "participating": self.participating,
                "weight_decay": self.weight_decay, "factor": self.factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["base"]) != len(self.optimizer.param_groups):
            raise ValueError(f"{self._METHOD}: state has {len(state['base'])} param groups, the optimizer "
                             f"{len(self.optimizer.param_groups)}")
        self.base = [float(b) for b in state["base"]]
        self.weight_decay, self.factor = state["weight_decay"], state["factor"]
        self.step(bool(state["participating"]))

