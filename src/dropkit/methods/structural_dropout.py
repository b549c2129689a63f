"""Structural Dropout for model width compression: Knodt, arXiv:2205.06906 (2022).

During training, with probability ``p`` one cut index c is drawn per forward call (shared by the whole batch);
every feature at index ≥ c is dropped and the kept prefix is scaled by H/c ("normalize the expectation by the
number of dropped features"); with probability 1 − p the full network runs unscaled, as indirect supervision
for the smaller ones. The network so learns an importance ordering of its features: every prefix of width e
is a working sub-network, and ``dropkit.slim`` cuts the model down to one of them for real.

Semantics follow the paper-time reference code (``JulianKnodt/structural_dropout`` @ f16c8a7, ``src/ctrl.py``),
not the later HEAD commit whose schedule is dead code and changes ``p``'s meaning (``docs/methods/structural_dropout.md``):

* ``p`` is the probability of *applying* a cut, not a per-unit rate;
* c is uniform on ``range(lower_bound, H, step)`` (H itself excluded); ``lower_bound ≥ H`` leaves no cut, which
  the reference's ``random.randrange`` refuses, and so does this layer (a layer that never cuts is a silent no-op);
* eval: identity when ``eval_size`` is None or ≥ H, else ``x[:e] · H/e`` (the same normalisation as training).

Deviations, both options: the reference returns the *truncated* tensor (``zero_pad=False``) and relies on
hand-written layers that slice their weights; an unmodified model needs a shape-preserving layer, so the
default here is ``zero_pad=True`` (zeros beyond the cut; the compute saving is realised by ``dropkit.slim``).
``zero_pad=False`` returns the narrow tensor (one host sync per call, so not ``torch.compile``-friendly). The
cut is drawn from torch's RNG (optionally a ``generator``), where the reference used Python's ``random``. The
fused ``pre_apply_linear`` of the reference is not reproduced: ``slim`` gives the same saving at inference.
The paper assumes one width for all layers: ``dropkit.slim`` and ``dropkit.width_sweep`` set it on every layer.

The feature axis must be the producing layer's: axis 1 after a ``ConvNd`` (its channels), the last axis after a
``Linear`` (on (N, H) both are axis 1; on (B, T, C) tokens it is −1). Slicing another axis of the same size would
be silently wrong, so ``producer`` (``"conv"`` or ``"linear"``; set by ``dropkit.attach`` from the module the
layer follows, and checked by ``dropkit.slim``) makes ``forward`` refuse a ``dim`` that is not that axis.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dropkit.base import DropkitModule
from dropkit.masks import sample_uniform
from dropkit.registry import register
from dropkit.validation import (
    check_bool,
    check_choice,
    check_float_tensor,
    check_generator,
    check_positive_int,
    check_probability,
)

__all__ = ["structural_dropout", "StructuralDropout", "producer_axis"]

_METHOD = "structural_dropout"
_PRODUCERS = ("conv", "linear")


def producer_axis(producer: str, ndim: int) -> int:
    """The non-negative feature axis of an ``ndim``-D output of a ``"conv"`` (channels: 1) or ``"linear"`` (last)
    layer."""
    return 1 if producer == "conv" else ndim - 1


def _check_axis(x: torch.Tensor, dim: int, producer: str | None) -> None:
    if producer is not None and dim % x.ndim != producer_axis(producer, x.ndim):
        axis = "axis 1 (channels)" if producer == "conv" else f"the last axis (dim=-1, here {x.ndim - 1})"
        raise ValueError(f"{_METHOD}: dim={dim} is not the feature axis of its {producer} producer: on an input of "
                         f"shape {tuple(x.shape)} the features are on {axis}")


def _check_cut_range(lower_bound: int, h: int) -> None:
    if lower_bound >= h:
        raise ValueError(f"{_METHOD}: lower_bound={lower_bound} leaves no cut on H = {h} features (the cut is drawn "
                         f"from range(lower_bound, H)); use a lower_bound in [1, {h - 1}]")


def _feature_dim(x: torch.Tensor, dim: int) -> int:
    check_float_tensor(x, _METHOD)
    if x.ndim < 2 or not -x.ndim <= dim < x.ndim or dim % x.ndim == 0:
        raise ValueError(f"{_METHOD}: dim={dim} must be a non-batch axis of the input, got shape {tuple(x.shape)}")
    return dim % x.ndim


def _prefix_weights(h: int, width: torch.Tensor, normalize: bool, like: torch.Tensor) -> torch.Tensor:
    """(H,) float32: H/c (or 1) on the first c features, 0 after."""
    scale = h / width.float() if normalize else torch.ones((), device=like.device)
    idx = torch.arange(h, device=like.device)
    return torch.where(idx < width, scale, torch.zeros((), device=like.device))


def structural_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    *,
    lower_bound: int = 1,
    step: int = 1,
    normalize: bool = True,
    zero_pad: bool = True,
    dim: int = 1,
    training: bool = True,
    eval_size: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Structural-Dropout call; returns ``(output, width)`` with width the kept prefix (H when uncut).

    Args:
        x: (N, H) features or (N, C, *spatial) channels; the features are on ``dim``.
        p: probability of cutting on this call (one decision and one cut for the whole batch).
        lower_bound, step: the cut c is uniform on ``range(lower_bound, H, step)``.
        normalize: scale the kept prefix by H/c.
        zero_pad: keep the shape (zeros beyond c); False returns the truncated tensor (width c on ``dim``).
        training: False applies ``eval_size`` deterministically.
        eval_size: the eval width e; None (or ≥ H) gives the identity in eval.
        generator: optional generator for the two uniforms drawn per call.
    """
    dim = _feature_dim(x, dim)
    p = check_probability(p, "p", _METHOD)
    lower_bound = check_positive_int(lower_bound, "lower_bound", _METHOD)
    step = check_positive_int(step, "step", _METHOD)
    if eval_size is not None:
        eval_size = check_positive_int(eval_size, "eval_size", _METHOD)
    generator = check_generator(generator, x, _METHOD)
    h = x.shape[dim]
    shape = [1] * x.ndim
    shape[dim] = h
    if not training:
        if eval_size is None or eval_size >= h:
            return x, torch.tensor(h, device=x.device)
        width = torch.tensor(eval_size, device=x.device)
    else:
        _check_cut_range(lower_bound, h)
        if p == 0.0:
            return x, torch.tensor(h, device=x.device)
        choices = (h - lower_bound + step - 1) // step  # len(range(lower_bound, h, step))
        with torch.no_grad():
            u = sample_uniform((2,), x, generator)
            cut = lower_bound + step * torch.clamp((u[1] * choices).long(), max=choices - 1)
            width = torch.where(u[0] < p, cut, torch.full_like(cut, h))
    with torch.no_grad():
        weights = _prefix_weights(h, width, normalize, x).view(shape).to(x.dtype)
    if zero_pad:
        return x * weights, width
    c = int(width)  # host sync: the truncated output has a data-dependent shape
    return x.narrow(dim, 0, c) * weights.narrow(dim, 0, c), width


@register(
    _METHOD,
    family="structural",
    kind="stateful",
    paper="Knodt, Structural Dropout for Model Width Compression, arXiv:2205.06906 (2022)",
    summary="with probability p, one uniform cut per batch: features beyond it zeroed, the prefix scaled by H/c; "
            "eval at a chosen width; dropkit.slim cuts the model to it",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ)", "sampling": "random",
              "unit": "prefix", "phase": "train+test", "generality": "generic"},
)
class StructuralDropout(DropkitModule):
    """Structural Dropout layer (paper-time semantics, see the module docstring).

    Args:
        p: probability of cutting on a training call (default 0.5, the reference default).
        lower_bound: smallest cut (default 1).
        step: spacing of the possible cuts (default 1).
        eval_size: eval width e in [1, H], or None for the full width (identity). Saved in ``state_dict``.
        zero_pad: True (default here) keeps the shape; False returns the truncated tensor as the reference does.
        normalize: scale the kept prefix by H/c (default True).
        dim: the feature axis (default 1: features of (N, H), channels of (N, C, *spatial)).
        num_features: H, to validate ``eval_size`` and ``lower_bound`` early; otherwise learnt from the first
            forward (which then checks them).
        producer: ``"conv"`` or ``"linear"``, the kind of layer producing the input, or None (unchecked):
            ``forward`` refuses a ``dim`` that is not its feature axis. ``dropkit.attach`` sets it.
        generator: optional generator for the cut.

    Attributes:
        last_width: 0-D tensor, the width kept by the latest forward (H when uncut).
        input_ndim: the number of dimensions of the inputs seen (None before the first forward); with
            ``num_features`` it tells ``dropkit.slim`` which axis the features are on.
    """

    repr_fields = ("lower_bound", "step", "eval_size", "zero_pad", "dim", "producer")

    def __init__(
        self,
        p: float = 0.5,
        lower_bound: int = 1,
        step: int = 1,
        eval_size: int | None = None,
        zero_pad: bool = True,
        normalize: bool = True,
        dim: int = 1,
        num_features: int | None = None,
        producer: str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator=generator)
        self.lower_bound = check_positive_int(lower_bound, "lower_bound", _METHOD)
        self.step = check_positive_int(step, "step", _METHOD)
        self.zero_pad = check_bool(zero_pad, "zero_pad", _METHOD)
        self.normalize = check_bool(normalize, "normalize", _METHOD)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim == 0:
            raise ValueError(f"{_METHOD}: dim must be a non-zero int (a non-batch axis), got {dim!r}")
        self.dim = dim
        self.num_features = None if num_features is None else check_positive_int(num_features, "num_features",
                                                                                 _METHOD)
        if self.num_features is not None:
            _check_cut_range(self.lower_bound, self.num_features)
        self.producer = None if producer is None else check_choice(producer, "producer", _METHOD, _PRODUCERS)
        self.eval_size = eval_size
        self.input_ndim: int | None = None
        self.register_buffer("last_width", torch.zeros((), dtype=torch.long), persistent=False)

    @property
    def eval_size(self) -> int | None:
        return self._eval_size

    @eval_size.setter
    def eval_size(self, value: int | None) -> None:
        if value is not None:
            value = check_positive_int(value, "eval_size", _METHOD)
            h = getattr(self, "num_features", None)
            if h is not None and value > h:
                raise ValueError(f"{_METHOD}: eval_size must be in [1, H] = [1, {h}] or None, got {value}")
        self._eval_size = value

    def attached_to(self, module: nn.Module, where: str) -> None:
        """Called by ``dropkit.attach``: after a Linear or ConvNd, remember it as the producer (axis check)."""
        if where != "after":
            return
        if isinstance(module, nn.Linear):
            self.producer = "linear"
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            self.producer = "conv"

    def set_latent_budget(self, width: int | None) -> None:
        """The reference code's name for setting ``eval_size``."""
        self.eval_size = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = _feature_dim(x, self.dim)
        _check_axis(x, self.dim, self.producer)
        h = x.shape[dim]
        if self.num_features is None:
            # the first forward learns H: check what could not be checked before it
            _check_cut_range(self.lower_bound, h)
            if self._eval_size is not None and self._eval_size > h:
                raise ValueError(f"{_METHOD}: eval_size must be in [1, H] = [1, {h}] or None, got {self._eval_size} "
                                 f"(H = {h} features on dim {self.dim})")
            self.num_features = h
            self.input_ndim = x.ndim
        elif self.num_features != h:
            raise ValueError(f"{_METHOD}: input has {h} features on dim {self.dim}, the layer expects "
                             f"{self.num_features}")
        if self.training and not self.enabled:
            return x
        out, width = structural_dropout(
            x, self.p, lower_bound=self.lower_bound, step=self.step, normalize=self.normalize,
            zero_pad=self.zero_pad, dim=self.dim, training=self.training, eval_size=self._eval_size,
            generator=self.generator,
        )
        with torch.no_grad():
            self.last_width.copy_(width)
        return out

    # eval_size and the learnt H are plain Python values, kept in state_dict through the extra state.
    def get_extra_state(self) -> Any:
        return {"eval_size": self._eval_size, "num_features": self.num_features, "producer": self.producer,
                "input_ndim": self.input_ndim}

    def set_extra_state(self, state: Any) -> None:
        self.num_features = state.get("num_features")
        self.producer = state.get("producer", self.producer)
        self.input_ndim = state.get("input_ndim", self.input_ndim)
        self.eval_size = state.get("eval_size")
