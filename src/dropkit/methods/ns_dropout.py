"""Neuron-Specific Dropout (NSDropout): Shunk, arXiv:2201.06938 (2022).

A deterministic, label-aware dropout: the layer compares, unit by unit, the per-class mean activation of a
training batch with the per-class mean of a validation batch (taken from a held-out 20 % of the *training* data),
and drops the ``floor(p·H)`` units whose training values lie farthest from the validation means. ``p`` is a
fraction of units, not a probability; nothing is sampled. The mask is stored in the ``mask`` buffer (saved in
``state_dict``) and the last one is kept at test time ("the thinned networks cannot be unthinned").

Implemented reading (``docs/methods/ns_dropout.md``; the exact formula is unverified, a reconstruction):

* score: per-class means over the batch, for the classes present in *both* batches; per-unit discrepancy
  ``d_j = Σ_c w_c |μ^tr_cj − μ^val_cj|`` (``distance="class_mean"``, default, ``w_c = 1``;
  ``class_weighting="frequency"`` weights by the training class frequency; ``squared=True`` squares the
  difference). The alternative reading ``distance="sample_to_val_mean"`` compares each training sample with the
  validation mean of its own class: ``d_j = mean_n |X_nj − μ^val_{y_n j}|``.
* select: the k = floor(p·H) largest ``d_j``, ties broken by the lower index (a stable sort), so the mask is a
  pure function of the inputs and no RNG is touched.
* fill: one mask for the whole batch, ``X * m``; no 1/(1−p) rescaling (train and test use the same mask);
  ``rescale=True`` multiplies by H/(H−k).
* conv features ``(N, C, *spatial)``: the unit is the channel and its value the spatial mean.
* if no class is shared by the two batches the mask is kept and ``num_skipped`` counts it.

The layer gets labels and validation batches through :mod:`dropkit.protocol` (``supervise`` around the training
forward, ``feed_validation`` before it); each supervised training forward after a ``feed_validation`` recomputes
the mask once and consumes the validation statistics, so a training forward without a fresh validation batch
keeps the mask. Cost, as the paper states, is about 4× a plain network per step: one extra
(no-grad) forward for the validation batch plus the per-class statistics.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dropkit.base import DropkitModule
from dropkit.protocol import ProtocolLayer
from dropkit.registry import register
from dropkit.validation import check_bool, check_choice, check_float_tensor, check_positive_int

__all__ = ["ns_dropout_mask", "NSDropout"]

_METHOD = "ns_dropout"
_DISTANCES = ("class_mean", "sample_to_val_mean")
_WEIGHTINGS = ("uniform", "frequency")


def _unit_values(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, H) float32 detached: the unit axis ``dim`` kept, every other non-batch axis averaged."""
    x = x.detach().movedim(dim, 1)
    return x.reshape(x.shape[0], x.shape[1], -1).float().mean(-1)


def _class_sums(u: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    sums = torch.zeros(num_classes, u.shape[1], device=u.device, dtype=torch.float32).index_add_(0, y, u)
    counts = torch.bincount(y, minlength=num_classes)[:num_classes].to(torch.float32)
    return sums, counts


def _pad_classes(t: torch.Tensor, k: int) -> torch.Tensor:
    if t.shape[0] >= k:
        return t
    pad = torch.zeros((k - t.shape[0], *t.shape[1:]), device=t.device, dtype=t.dtype)
    return torch.cat([t, pad])


def _drop_count(p: float, h: int) -> int:
    # floor(p·H) with a guard against float error (0.29·100 = 28.999999999999996 must give 29)
    return min(h, int(math.floor(p * h + 1e-9)))


@torch.no_grad()
def _mask_from_stats(
    u: torch.Tensor,
    y: torch.Tensor,
    val_sums: torch.Tensor,
    val_counts: torch.Tensor,
    p: float,
    distance: str,
    class_weighting: str,
    squared: bool,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep mask (H,) float32, 0-D bool: some class shared). Fully tensorised (no host sync)."""
    tr_sums, tr_counts = _class_sums(u, y, num_classes)
    val_sums, val_counts = _pad_classes(val_sums, num_classes), _pad_classes(val_counts, num_classes)
    shared = (tr_counts > 0) & (val_counts > 0)
    val_means = val_sums / val_counts.clamp_min(1.0)[:, None]
    if distance == "class_mean":
        diff = tr_sums / tr_counts.clamp_min(1.0)[:, None] - val_means
        diff = diff.square() if squared else diff.abs()
        weight = shared.float()
        if class_weighting == "frequency":
            weight = weight * tr_counts / (weight * tr_counts).sum().clamp_min(1.0)
        scores = (weight[:, None] * diff).sum(0)
    else:  # sample_to_val_mean
        diff = u - val_means[y]
        diff = diff.square() if squared else diff.abs()
        rows = shared[y].float()
        scores = (rows[:, None] * diff).sum(0) / rows.sum().clamp_min(1.0)
    scores = torch.nan_to_num(scores, nan=float("inf"))  # a unit producing NaN is the farthest of all
    h = scores.shape[0]
    k = _drop_count(p, h)
    keep = torch.ones(h, device=u.device, dtype=torch.float32)
    if k > 0:
        order = torch.sort(scores, descending=True, stable=True).indices  # stable: ties go to the lower index
        keep[order[:k]] = 0.0
    return keep, shared.any()


def ns_dropout_mask(
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    p: float = 0.2,
    *,
    distance: str = "class_mean",
    class_weighting: str = "uniform",
    squared: bool = False,
    dim: int = 1,
    num_classes: int | None = None,
) -> torch.Tensor:
    """The NSDropout keep mask from the paper's four inputs (train features/labels, validation features/labels).

    Args:
        x: training-batch layer input (N, H) or (N, C, *spatial) (units on ``dim``).
        y: integer labels (N,).
        x_val, y_val: the same layer's input on a validation batch and its labels.
        p: fraction of units dropped, k = floor(p·H).
        distance, class_weighting, squared: see the module docstring.
        dim: the unit axis (1 for (N, H) and for channels of (N, C, H, W)).
        num_classes: K; inferred as max label + 1 when None.

    Returns:
        Keep mask (H,) of 0/1 float32. When no class is shared by the two batches, all ones.
    """
    layer = NSDropout(p, distance=distance, class_weighting=class_weighting, squared=squared, dim=dim,
                      num_classes=num_classes)
    layer._record_validation(x_val, y_val)
    layer._update_mask(x, y)
    return layer.mask.clone()


@register(
    _METHOD,
    family="aware",
    kind="stateful",
    paper="Shunk, Neuron-Specific Dropout, arXiv:2201.06938 (2022)",
    summary="drops the floor(p·H) units whose per-class train means lie farthest from the validation means; "
            "deterministic, mask kept at test time",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ|D)", "sampling": "deterministic",
              "unit": "element", "phase": "train+test", "generality": "generic"},
)
class NSDropout(ProtocolLayer, DropkitModule):
    """Neuron-Specific Dropout as a layer for an unmodified model (labels via :mod:`dropkit.protocol`).

    Args:
        p: fraction of units dropped (default 0.2, the paper's worked example).
        distance: ``"class_mean"`` (default) or ``"sample_to_val_mean"``.
        class_weighting: ``"uniform"`` (default) or ``"frequency"`` (``class_mean`` only).
        squared: square the train–validation differences instead of taking absolute values.
        rescale: multiply kept units by H/(H−k) (default False: train and test use the same mask).
        num_classes: K; when None it is inferred from the labels at each update (one host sync per update).
        dim: the unit axis (default 1: features of (N, H), channels of (N, C, *spatial)).
        num_features: H, to allocate the mask up front; otherwise it is sized by the first forward.
        strict: when True a training forward outside ``dropkit.supervise`` raises ``RuntimeError`` instead of
            silently applying the stored mask.

    Buffers (all saved in ``state_dict``): ``mask`` (H,), ``num_updates``, ``num_skipped`` (updates skipped
    because no class was shared), ``mask_changes`` (total units that flipped), ``last_mask_changes``.

    Shapes: input (N, H) or (N, C, *spatial) → same shape, dtype and memory format.
    """

    repr_fields = ("distance", "rescale", "dim")
    needs_targets = True
    needs_validation = True

    def __init__(
        self,
        p: float = 0.2,
        distance: str = "class_mean",
        class_weighting: str = "uniform",
        squared: bool = False,
        rescale: bool = False,
        num_classes: int | None = None,
        dim: int = 1,
        num_features: int | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(p)
        self.distance = check_choice(distance, "distance", _METHOD, _DISTANCES)
        self.class_weighting = check_choice(class_weighting, "class_weighting", _METHOD, _WEIGHTINGS)
        self.squared = check_bool(squared, "squared", _METHOD)
        self.rescale = check_bool(rescale, "rescale", _METHOD)
        self.strict = check_bool(strict, "strict", _METHOD)
        self.num_classes = None if num_classes is None else check_positive_int(num_classes, "num_classes", _METHOD)
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"{_METHOD}: dim must be an int, got {dim!r}")
        if dim == 0:
            raise ValueError(f"{_METHOD}: dim must not be 0 (the batch axis)")
        self.dim = dim
        h = 0 if num_features is None else check_positive_int(num_features, "num_features", _METHOD)
        self.register_buffer("mask", torch.ones(h))
        for name in ("num_updates", "num_skipped", "mask_changes", "last_mask_changes"):
            self.register_buffer(name, torch.zeros((), dtype=torch.long))
        self._val_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- helpers -----------------------------------------------------------------------------------------------
    def _unit_dim(self, x: torch.Tensor) -> int:
        check_float_tensor(x, _METHOD)
        if x.ndim < 2:
            raise ValueError(f"{_METHOD}: input must be at least 2-D (N, H, ...), got shape {tuple(x.shape)}")
        if not -x.ndim <= self.dim < x.ndim or self.dim % x.ndim == 0:
            raise ValueError(f"{_METHOD}: dim={self.dim} is not a non-batch axis of a {x.ndim}-D input")
        dim = self.dim % x.ndim
        h = x.shape[dim]
        if self.mask.numel() == 0:
            self.mask = torch.ones(h, device=x.device)
        elif self.mask.numel() != h:
            raise ValueError(f"{_METHOD}: input has {h} units on dim {self.dim} but the layer's mask has "
                             f"{self.mask.numel()} (num_features is fixed by the first forward)")
        return dim

    def _labels(self, y: Any, n: int, name: str) -> tuple[torch.Tensor, int]:
        if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.shape[0] != n:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"{_METHOD}: {name} must be (N,) = ({n},) integer labels matching the batch, got {shape}")
        if n == 0:
            return y.to(self.mask.device, torch.long), self.num_classes or 0
        k = self.num_classes
        if k is None:  # one host sync per update; pass num_classes to avoid it
            lo, hi = int(y.min()), int(y.max())
            if lo < 0:
                raise ValueError(f"{_METHOD}: {name} must be non-negative class indices, got min {lo}")
            k = hi + 1
        elif not torch.compiler.is_compiling():
            # eager: a clear error instead of an index error deep in index_add (compiled: no host sync, no check)
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= k:
                raise ValueError(f"{_METHOD}: {name} must be class indices in [0, num_classes) = [0, {k}), got "
                                 f"values in [{lo}, {hi}]")
        return y.to(self.mask.device, torch.long), k

    def _record_validation(self, x: torch.Tensor, y: torch.Tensor) -> None:
        dim = self._unit_dim(x)
        if x.shape[0] == 0:  # an empty validation batch carries no statistics
            self._labels(y, 0, "validation labels")
            return
        y, k = self._labels(y, x.shape[0], "validation labels")
        self._val_stats = _class_sums(_unit_values(x, dim), y, k)

    def _update_mask(self, x: torch.Tensor, y: torch.Tensor) -> None:
        dim = self._unit_dim(x)
        if x.shape[0] == 0:  # an empty batch: nothing to compare, the mask (and the validation batch) are kept
            self._labels(y, 0, "targets")
            return
        y, k = self._labels(y, x.shape[0], "targets")
        if self._val_stats is None:
            return  # no validation batch since the last update → the mask is kept
        val_sums, val_counts = self._val_stats
        self._val_stats = None
        k = max(k, val_sums.shape[0])
        keep, shared = _mask_from_stats(_unit_values(x, dim), y, val_sums, val_counts, self.p, self.distance,
                                        self.class_weighting, self.squared, k)
        with torch.no_grad():
            new = torch.where(shared, keep, self.mask)
            changed = (new != self.mask).sum()
            self.mask.copy_(new)
            self.last_mask_changes.copy_(changed)
            self.mask_changes.add_(changed)
            self.num_updates.add_(shared.long())
            self.num_skipped.add_((~shared).long())

    # -- forward -----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self._unit_dim(x)
        phase = self.protocol_phase
        if phase == "validation":
            self._record_validation(x, self.protocol_targets)
        elif self.training and self.enabled:
            if phase == "train":
                self._update_mask(x, self.protocol_targets)
            elif phase is None and self.strict:
                raise RuntimeError(f"{_METHOD}: training forward outside dropkit.supervise(model, targets); the "
                                   f"mask cannot be updated without labels (strict=True)")
        if not self.enabled:
            return x
        keep = self.mask
        if self.rescale:
            keep = keep * (keep.numel() / keep.sum().clamp_min(1.0))
        shape = [1] * x.ndim
        shape[dim] = keep.numel()
        return x * keep.to(x.dtype).view(shape)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # A lazily sized layer (num_features=None, no forward yet) takes its size from the checkpoint.
        incoming = state_dict.get(prefix + "mask")
        if incoming is not None and self.mask.numel() == 0:
            self.mask = torch.ones(incoming.shape, device=self.mask.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
