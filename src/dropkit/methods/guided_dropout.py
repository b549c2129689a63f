"""Guided dropout (Keshari, Singh & Vatsa, AAAI 2019, arXiv:1812.03965): drop units by a learned strength.

Page: ``docs/methods/guided_dropout.md``. Every unit j of the layer gets a learnable scalar
**strength** t_j that multiplies its activation and is trained with the weights. After a warm-up during which
only the strengths (and the network) learn, the units are dropped by strength instead of at random:

* ``selection="top_k"`` (default, the paper's "guided dropout (top-k)"): the k = round(p·U) units with the largest
  |t| are dropped, so that the weaker units must learn;
* ``selection="bottom_k"``: the k weakest units are dropped (a variant);
* ``selection="active_random"`` (the paper's "DR" variant): the strengths are histogrammed in 100 bins of
  |t| / max|t|; the most populated bin is the "inactive region" and is always kept, every other ("active") unit
  is dropped at random with probability p, independently per sample.

What is settled and what is not: the strength parameter, top-k by strength and "strengths stay at test time" are
from the paper's abstract. The variant mechanics, the warm-up length and the rates are not stated
there; the choices here follow the public unofficial PyTorch reproduction (``lingjivoo/guided-dropout-pytorch``,
``models/guided_dropout.py``, ``models/mlp.py``): strength initialised U(0, 1) and used as |t|; the top-k/bottom-k
masks are deterministic and shared by the whole batch (they depend on t only); no rescaling of the survivors (the
strengths absorb the scale); drop rate 0.2; the top-k schedule starts dropping at epoch 40. That code's top-k keeps
the k-th strongest unit (``strength <= th``), dropping k − 1; here exactly k are dropped.

The layer never counts steps: the warm-up is driven from outside through ``enabled`` (``DropkitModule``): a
training loop sets ``layer.enabled = False`` for the warm-up epochs given in the card's ``schedule`` and ``True``
after. ``enabled`` switches only the dropping; the strengths always scale the activations, in training and at
eval (at eval the layer is ``x * t``, the identity apart from the strength scaling).

``num_features=None`` makes the strength lazy: it is created at the first forward from ``x.shape[dim]``, so the
layer can be built from the card's defaults and attached anywhere.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from dropkit.base import DropkitModule
from dropkit.masks import sample_uniform, select_top_k
from dropkit.registry import register
from dropkit.validation import (
    check_choice,
    check_float_tensor,
    check_generator,
    check_positive_int,
    check_probability,
)

__all__ = ["guided_dropout", "guided_drop_mask", "GuidedDropout"]

_NAME = "guided_dropout"

_SELECTIONS = ("top_k", "bottom_k", "active_random")
_INITS = ("uniform", "ones")
_BINS = 100  # histogram of |t| / max|t| for the "active_random" (DR) variant, as in the reference code


def _feature_dim(x: torch.Tensor, dim: int, method: str) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{method}: dim must be an int, got {dim!r}")
    if x.ndim < 2:
        raise ValueError(f"{method}: input must be at least 2-D (N, ..., U), got shape {tuple(x.shape)}")
    d = dim + x.ndim if dim < 0 else dim
    if not 1 <= d < x.ndim:
        raise ValueError(f"{method}: dim must index a non-batch dimension of a {x.ndim}-D input "
                         f"(1..{x.ndim - 1} or -{x.ndim - 1}..-1), got {dim}")
    return d


@torch.no_grad()
def guided_drop_mask(
    strength: torch.Tensor,
    p: float,
    *,
    selection: str = "top_k",
    batch: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Keep mask over the units, from their strengths.

    Returns:
        bool (U,) for ``"top_k"``/``"bottom_k"`` (True = kept; exactly round(p·U) False), or (batch, U) for
        ``"active_random"`` (the inactive region always True, active units Bernoulli(1 − p) per row).
    """
    s = strength.detach().abs().float()
    n = s.shape[0]
    if selection in ("top_k", "bottom_k"):
        k = min(n, int(round(p * n)))
        return ~select_top_k(s, k, dim=0, largest=selection == "top_k")
    # "active_random": the most populated strength bin is the inactive region.
    top = s.max()
    bins = torch.where(top > 0, s / top.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(s))
    bins = (bins * _BINS).long().clamp_(0, _BINS)
    counts = torch.zeros(_BINS + 1, dtype=torch.float32, device=s.device).scatter_add_(0, bins, torch.ones_like(s))
    inactive = bins == counts.argmax()
    drawn = sample_uniform((batch, n), strength, generator) >= p
    return drawn | inactive


def guided_dropout(
    x: torch.Tensor,
    strength: torch.Tensor,
    p: float = 0.2,
    *,
    selection: str = "top_k",
    dim: int = 1,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scale units by their strength and, in training, drop units chosen by strength.

    Args:
        x: (N, ..., U, ...) with the U units along ``dim`` (default 1: features of (N, F), channels of
            (N, C, H, W)); use ``dim=-1`` for (N, T, F).
        strength: (U,) learnable strengths t (|t| ranks the units).
        p: fraction of units dropped (top-k/bottom-k) or drop probability of an active unit (active_random).
        selection: ``"top_k"``, ``"bottom_k"`` or ``"active_random"``.
        dim: the units' dimension.
        training: when False, only the strength scaling is applied.
        generator: optional generator (used by ``"active_random"`` only).

    Returns:
        ``x · t`` (broadcast along ``dim``) with the dropped units zeroed; no rescaling.
    """
    method = _NAME
    check_float_tensor(x, method)
    check_float_tensor(strength, method, "strength")
    d = _feature_dim(x, dim, method)
    if strength.ndim != 1 or strength.shape[0] != x.shape[d]:
        raise ValueError(f"{method}: strength must have shape ({x.shape[d]},) to match input dim {dim} of shape "
                         f"{tuple(x.shape)}, got {tuple(strength.shape)}")
    p = check_probability(p, "p", method)
    check_choice(selection, "selection", method, _SELECTIONS)
    generator = check_generator(generator, x, method)
    shape = [1] * x.ndim
    shape[d] = x.shape[d]
    factor = strength.to(x.dtype)
    if training and p > 0.0:
        # Fold the keep mask into the (small) strength factor: one pass over x forward, one backward.
        keep = guided_drop_mask(strength, p, selection=selection, batch=x.shape[0], generator=generator)
        factor = factor * keep.to(x.dtype)
        if keep.ndim == 2:
            shape[0] = x.shape[0]
    return x * factor.view(shape)


@register(
    _NAME,
    family="related",
    kind="stateful",
    paper="Keshari, Singh & Vatsa, \"Guided Dropout\", AAAI 2019, arXiv:1812.03965",
    summary="a learnable strength per unit scales its activation; after a warm-up the k = p·U strongest units "
            "are dropped (options: weakest, or random outside the inactive region)",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ|D)+time", "sampling": "deterministic",
              "unit": "channel", "phase": "train", "generality": "generic"},
    schedule={"type": "warmup", "fraction": 0.2,
              "note": "enabled=False for the first 20 % of training (strengths learn), then True: 40 of the "
                      "unofficial reproduction's 200 epochs; the paper does not state the warm-up length"},
)
class GuidedDropout(LazyModuleMixin, DropkitModule):
    """Module form of :func:`guided_dropout`, holding the strengths ``self.strength`` (U,).

    Args:
        num_features: U, the number of units along ``dim``; None creates the strength at the first forward.
        p: drop fraction (default 0.2, the reproduction's rate; the paper's is not stated).
        selection: ``"top_k"`` (default), ``"bottom_k"`` or ``"active_random"``.
        dim: the units' dimension (default 1).
        init: strength initialisation, ``"uniform"`` (U(0, 1), as the reproduction) or ``"ones"``.
        generator: optional ``torch.Generator`` (``"active_random"`` only).
    """

    repr_fields = ("selection", "dim", "init")
    cls_to_become = None

    def __init__(
        self,
        num_features: int | None = None,
        p: float = 0.2,
        selection: str = "top_k",
        dim: int = 1,
        init: str = "uniform",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator=generator)
        self.selection = check_choice(selection, "selection", self.method_name, _SELECTIONS)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim == 0:
            raise ValueError(f"{self.method_name}: dim must be a non-zero int (dim 0 is the batch), got {dim!r}")
        self.dim = dim
        self.init = check_choice(init, "init", self.method_name, _INITS)
        if num_features is None:
            self.strength = UninitializedParameter()
        else:
            num_features = check_positive_int(num_features, "num_features", self.method_name)
            self.strength = nn.Parameter(torch.empty(num_features))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.has_uninitialized_params():
            return
        with torch.no_grad():
            if self.init == "uniform":
                self.strength.uniform_(0.0, 1.0)
            else:
                self.strength.fill_(1.0)

    def initialize_parameters(self, x: torch.Tensor) -> None:  # called by LazyModuleMixin before the 1st forward
        if self.has_uninitialized_params():
            d = _feature_dim(x, self.dim, self.method_name)
            with torch.no_grad():
                self.strength.materialize((x.shape[d],), device=x.device, dtype=torch.float32)
            self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return guided_dropout(x, self.strength, self.p, selection=self.selection, dim=self.dim,
                              training=self.active, generator=self.generator)
