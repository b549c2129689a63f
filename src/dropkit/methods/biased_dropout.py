"""Biased dropout and crossmap dropout (Poernomo & Kang, Neural Networks 104, 2018).

Page: ``docs/methods/biased_dropout.md``. The paper's abstract confirms two facts
only: biased dropout splits a layer's hidden units into **two equal groups by response** and gives each group its
own rate (lower for the strong group), and crossmap dropout **shares one mask across feature maps**, so the units
at one spatial coordinate of every map are dropped or kept together. The rates and the magnitude criterion are
not stated there and are design decisions here:

* ``p`` is the **mean** drop rate of the two groups and ``bias`` splits it: the strong group drops with
  ``p·(1 − bias)``, the weak group with ``p·(1 + bias)`` (the weak rate is capped at 1, the strong rate then
  takes the rest, so the mean stays ``p``). Defaults ``p = 0.5, bias = 0.4`` give 0.3 / 0.7 (a library choice). Keeping ``p``
  the mean lets a drop-rate schedule ramp one knob, and ``bias = 0`` is plain dropout of the chosen unit.
* Each group is rescaled by its own keep rate (inverted dropout), so ``E[out] = x`` for every unit.
* Response = the unit's activation value (``criterion="value"``; post-ReLU this is the magnitude); the option
  ``criterion="abs"`` ranks by |activation| for signed features (a library choice).
* Unit (``unit``): ``"channel"`` (default) ranks the entries along dim 1 of each sample: the features of an
  (N, F) layer, and whole feature maps of an (N, C, H, W) layer by their mean response. ``"element"`` ranks every
  neuron of a sample (C·H·W of them), the literal per-neuron reading for conv layers; it needs an exact
  per-sample median and one random draw per element, about 20× the channel form on CPU, so it is an option (a library choice).
  Ties at the median are split by ``torch.topk``'s order, so the groups are always ⌊n/2⌋ strong and ⌈n/2⌉ weak.

Crossmap dropout draws one Bernoulli(1 − p) per (sample, spatial position), a mask of shape (N, 1, *spatial)
broadcast over C (SpatialDropout's mask is (N, C, 1, 1)), scaled by 1/(1 − p). Its default rate is not stated;
0.5 (the classic hidden-unit rate) is used.
"""

from __future__ import annotations

import torch

from dropkit.base import DropkitModule
from dropkit.masks import apply_keep_mask, sample_keep_mask, sample_uniform, select_top_k
from dropkit.registry import register
from dropkit.validation import (
    check_choice,
    check_float_tensor,
    check_generator,
    check_ndim,
    check_probability,
    check_real,
)

__all__ = ["biased_dropout", "biased_group_rates", "BiasedDropout", "crossmap_dropout", "CrossmapDropout"]

_BIASED = "biased_dropout"
_CROSSMAP = "crossmap_dropout"

_PAPER = ("Poernomo & Kang, \"Biased Dropout and Crossmap Dropout: Learning towards effective Dropout "
          "regularization in convolutional neural network\", Neural Networks 104 (2018), doi:10.1016/j.neunet.2018.03.016")
_UNITS = ("channel", "element")
_CRITERIA = ("value", "abs")


def biased_group_rates(p: float, bias: float) -> tuple[float, float]:
    """(strong-group drop rate, weak-group drop rate) with mean ``p``: p·(1 − bias), p·(1 + bias), the weak rate
    capped at 1 and the strong rate taking the remainder."""
    weak = min(1.0, p * (1.0 + bias))
    strong = max(0.0, 2.0 * p - weak)
    return strong, weak


def _unit_scores(x: torch.Tensor, unit: str, criterion: str) -> torch.Tensor:
    """(N, U) responses in float32: per channel (mean over the spatial positions) or per element."""
    r = x.abs() if criterion == "abs" else x
    if unit == "element" or x.ndim == 2:
        return r.reshape(x.shape[0], -1).float()
    return r.mean(dim=tuple(range(2, x.ndim)), dtype=torch.float32)


def biased_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    *,
    bias: float = 0.4,
    unit: str = "channel",
    criterion: str = "value",
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Biased dropout: two equal response groups per sample, each with its own rate and rescaling.

    Args:
        x: (N, F) or (N, C, *spatial) features.
        p: mean drop rate of the two groups, in [0, 1].
        bias: in [0, 1]; the strong group drops with p·(1 − bias), the weak group with p·(1 + bias).
        unit: ``"channel"`` (entries along dim 1; whole maps for conv features) or ``"element"`` (every neuron).
        criterion: ``"value"`` (activation value) or ``"abs"`` (|activation|) for the ranking.
        training: when False, ``x`` is returned unchanged.
        generator: optional generator for the mask.

    Returns:
        A tensor like ``x``; every unit is either 0 or x / (1 − rate of its group), so E[out] = x.
    """
    method = _BIASED
    check_float_tensor(x, method)
    check_ndim(x, method, (2, 3, 4, 5), "(N, F) or (N, C, *spatial)")
    p = check_probability(p, "p", method)
    bias = check_real(bias, "bias", method, low=0.0, high=1.0)
    check_choice(unit, "unit", method, _UNITS)
    check_choice(criterion, "criterion", method, _CRITERIA)
    generator = check_generator(generator, x, method)
    if not training or p == 0.0:
        return x
    strong_p, weak_p = biased_group_rates(p, bias)
    with torch.no_grad():
        scores = _unit_scores(x, unit, criterion)  # (N, U)
        n_units = scores.shape[1]
        strong = select_top_k(scores, n_units // 2, dim=1)  # bool (N, U): the ⌊U/2⌋ strongest units
        keep_prob = torch.where(strong, 1.0 - strong_p, 1.0 - weak_p)
        keep = sample_uniform(scores.shape, x, generator) < keep_prob
        # Inverted scaling per group; a group whose rate is 1 keeps nothing (scale 0 instead of inf).
        scale = torch.where(keep_prob > 0, keep_prob.reciprocal(), torch.zeros_like(keep_prob))
        factor = (keep * scale).to(x.dtype)
        if unit == "element" or x.ndim == 2:
            factor = factor.view(x.shape)
        else:
            factor = factor.view(*x.shape[:2], *([1] * (x.ndim - 2)))
    return x * factor


@register(
    _BIASED,
    family="related",
    kind="activation",
    paper=_PAPER,
    summary="units of a sample split by response into two equal groups; the weak group is dropped more often, "
            "each group rescaled by its own keep rate",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ|x)", "sampling": "adaptive",
              "unit": "channel", "phase": "train", "generality": "generic"},
)
class BiasedDropout(DropkitModule):
    """Module form of :func:`biased_dropout`.

    Args:
        p: mean drop rate of the two groups (default 0.5; the paper's is not stated).
        bias: rate split, strong p·(1 − bias) and weak p·(1 + bias) (default 0.4 → 0.3 / 0.7; the paper's are not stated).
        unit: ``"channel"`` (default) or ``"element"``.
        criterion: ``"value"`` (default) or ``"abs"``.
        generator: optional ``torch.Generator``.
    """

    repr_fields = ("bias", "unit", "criterion")

    def __init__(
        self,
        p: float = 0.5,
        bias: float = 0.4,
        unit: str = "channel",
        criterion: str = "value",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator=generator)
        self.bias = check_real(bias, "bias", self.method_name, low=0.0, high=1.0)
        self.unit = check_choice(unit, "unit", self.method_name, _UNITS)
        self.criterion = check_choice(criterion, "criterion", self.method_name, _CRITERIA)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return biased_dropout(x, self.p, bias=self.bias, unit=self.unit, criterion=self.criterion,
                              training=True, generator=self.generator)


def crossmap_dropout(
    x: torch.Tensor, p: float = 0.5, *, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Crossmap dropout: one keep mask of shape (N, 1, *spatial) shared by all C feature maps.

    Args:
        x: (N, C, L), (N, C, H, W) or (N, C, D, H, W).
        p: probability of dropping one spatial position (in every map at once).
        training: when False, ``x`` is returned unchanged.
        generator: optional generator for the mask.
    """
    method = _CROSSMAP
    check_float_tensor(x, method)
    check_ndim(x, method, (3, 4, 5), "(N, C, L), (N, C, H, W) or (N, C, D, H, W)")
    p = check_probability(p, "p", method)
    generator = check_generator(generator, x, method)
    if not training or p == 0.0:
        return x
    keep = sample_keep_mask(x, 1.0 - p, (x.shape[0], 1, *x.shape[2:]), generator)
    return apply_keep_mask(x, keep, 0.0 if p == 1.0 else 1.0 / (1.0 - p))


@register(
    _CROSSMAP,
    family="related",
    kind="activation",
    paper=_PAPER,
    summary="one (N, 1, H, W) mask shared across feature maps: a spatial position is dropped in every map at "
            "once, survivors scaled by 1/(1-p)",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ)", "sampling": "random",
              "unit": "element", "phase": "train", "generality": "generic"},
)
class CrossmapDropout(DropkitModule):
    """Module form of :func:`crossmap_dropout`. Args: p (default 0.5; the paper's is not stated), generator."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return crossmap_dropout(x, self.p, training=True, generator=self.generator)
