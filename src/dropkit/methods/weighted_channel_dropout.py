"""Weighted Channel Dropout (Hou & Wang, "Weighted Channel Dropout for Regularization of Deep Convolutional
Neural Network", AAAI 2019, pp. 8425–8432).

Per image, channels are rated by global average pooling (eq. 2), ``M = round(wrs_ratio · C)`` of them are chosen
by weighted random selection without replacement with weights ∝ score (Alg. 1, Efraimidis–Spirakis keys
``r^(1/score)``, eq. 4), a per-channel Bernoulli "random number generator" with keep probability ``q`` is ANDed
with that selection (eq. 5), and the survivors are rescaled by ``α = Σ_all score / Σ_kept score`` computed from the
*final* mask (eq. 6), so that each image keeps its total GAP mass. Eval is the identity.

Reading implemented where the paper leaves room (``docs/methods/weighted_channel_dropout.md``):

* Names. The paper's ``q`` is the RNG *keep* probability; dropkit's convention is that ``p`` is a drop
  probability, so the module's ``p`` is ``1 − q`` (paper default ``q = 0.9`` → ``p = 0.1``). ``wrs_ratio`` keeps
  the paper's name. Table 1: ``wrs_ratio = 0.8, q = 0.9`` almost everywhere (``0.9 / 0.5`` after VGG pool5).
* ``wrs_ratio = 1`` is channel-wise dropout with keep ``q`` (whose α is the realised, not the nominal, ratio);
  ``p = 0`` (q = 1) is pure WRS, which still regularizes, so the layer is active while ``wrs_ratio < 1`` even at p = 0.
* The paper leaves the rounding of ``N · wrs_ratio`` open: dropkit rounds to the nearest integer, at least 1.
* The paper assumes post-ReLU (non-negative) inputs; negative channel means are clamped to 0 for the scores
  (such channels are never preferred by WRS and carry no mass in α). A tiny ε keeps the keys finite, so a sample
  whose channels all score 0 (e.g. an all-zero map) falls back to a uniform random choice and α = 1: no NaN.
"""

from __future__ import annotations

import torch

from dropkit.base import DropkitModule
from dropkit.masks import sample_uniform
from dropkit.registry import register
from dropkit.validation import (
    check_float_tensor,
    check_generator,
    check_ndim,
    check_probability,
    check_real,
)

__all__ = ["weighted_channel_dropout", "WeightedChannelDropout"]

_NAME = "weighted_channel_dropout"
_EPS = 1e-12


def _check_wrs_ratio(value: float, method: str) -> float:
    return check_real(value, "wrs_ratio", method, low=0.0, high=1.0, low_open=True)


def weighted_channel_dropout(
    x: torch.Tensor,
    p: float = 0.1,
    *,
    wrs_ratio: float = 0.8,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Weighted Channel Dropout.

    Args:
        x: input of shape (N, C, *spatial), 1 to 3 spatial dims; the paper's input is post-ReLU.
        p: drop probability of the per-channel random number generator, ``1 − q`` in the paper's notation.
        wrs_ratio: fraction of channels kept by weighted random selection, in (0, 1].
        training: when False, ``x`` is returned unchanged.
        generator: optional generator for the selection keys and the RNG.

    Returns:
        Tensor of ``x``'s shape, dtype and memory format: kept channels scaled by the per-sample α, others zero.
    """
    check_float_tensor(x, _NAME)
    check_ndim(x, _NAME, (3, 4, 5), "(N, C, *spatial)")
    p = check_probability(p, "p", _NAME)
    wrs_ratio = _check_wrs_ratio(wrs_ratio, _NAME)
    generator = check_generator(generator, x, _NAME)
    if not training or (p == 0.0 and wrs_ratio == 1.0):
        return x

    n, c = x.shape[:2]
    m = min(c, max(1, int(round(wrs_ratio * c))))
    with torch.no_grad():
        # Step 1, rating channels (eq. 2): GAP, reduced in float32.
        scores = x.detach().mean(dim=tuple(range(2, x.ndim)), dtype=torch.float32).clamp_min(0.0)  # (N, C)
        # Step 2a, WRS (Alg. 1): keys r^(1/s) compared through their logs, log(r)/s, which are finite for s ≥ ε.
        if m < c:
            r = sample_uniform((n, c), x, generator)
            keys = torch.log(r) / (scores + _EPS)
            top = keys.topk(m, dim=1).indices
            keep = torch.zeros((n, c), dtype=torch.bool, device=x.device).scatter(1, top, True)
        else:
            keep = torch.ones((n, c), dtype=torch.bool, device=x.device)
        # Step 2b, RNG (eq. 5): an independent Bernoulli(q) per channel, ANDed with the WRS mask.
        if p > 0.0:
            keep &= sample_uniform((n, c), x, generator) >= p
        # Step 3, rescale (eq. 6): α from the final mask, per sample; α = 1 when nothing with mass is kept.
        kept_mass = (scores * keep).sum(dim=1, keepdim=True)
        alpha = torch.where(kept_mass > 0, scores.sum(dim=1, keepdim=True) / kept_mass.clamp_min(_EPS),
                            torch.ones_like(kept_mass))
        multiplier = (keep * alpha).to(x.dtype).reshape(n, c, *([1] * (x.ndim - 2)))
    return x * multiplier


@register(
    _NAME,
    family="guided",
    kind="activation",
    paper="Hou & Wang, Weighted Channel Dropout for Regularization of Deep CNN, AAAI 2019 (pp. 8425-8432)",
    summary="channels kept by activation-weighted random selection (GAP scores) ANDed with a per-channel "
            "Bernoulli; survivors rescaled so each sample keeps its total GAP mass",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ|x)", "sampling": "adaptive",
              "unit": "channel", "phase": "train", "generality": "generic"},
)
class WeightedChannelDropout(DropkitModule):
    """Module form of :func:`weighted_channel_dropout`.

    Args:
        p: RNG drop probability, ``1 − q`` of the paper (default 0.1, i.e. the paper's q = 0.9).
        wrs_ratio: fraction of channels kept by weighted random selection (default 0.8, paper Table 1).
        generator: optional ``torch.Generator``.
    """

    repr_fields = ("wrs_ratio",)

    def __init__(self, p: float = 0.1, wrs_ratio: float = 0.8, generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator=generator)
        self.wrs_ratio = wrs_ratio

    @property
    def wrs_ratio(self) -> float:
        return self._wrs_ratio

    @wrs_ratio.setter
    def wrs_ratio(self, value: float) -> None:
        self._wrs_ratio = _check_wrs_ratio(value, self.method_name)

    @property
    def active(self) -> bool:
        """Training and enabled, and either the RNG drops (p > 0) or WRS selects (wrs_ratio < 1)."""
        return self.training and self.enabled and (self.p > 0.0 or self._wrs_ratio < 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return weighted_channel_dropout(x, self.p, wrs_ratio=self._wrs_ratio, training=True,
                                        generator=self.generator)
