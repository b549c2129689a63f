"""Mask primitives shared by every dropkit method: sample, expand, select, apply.

Conventions (see ``shared/design.md`` §3):

* A *keep mask* holds 1 where a unit survives and 0 where it is dropped, in the input's dtype, with a shape that
  broadcasts against the input (``(N, C, 1, 1)`` for channels, ``(N, 1, 1, 1)`` for samples, ...). Small
  broadcast masks keep the input's memory format (channels_last stays channels_last) for free.
* Masks are built under ``torch.no_grad()`` on the input's device; randomness comes only from torch, with an
  optional ``torch.Generator``, so every ``forward`` can be compiled with ``fullgraph=True``.
* Normalisers are reduced in float32 and only then cast to the input dtype: a bf16/fp16 sum over a large mask
  loses whole units of precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "Unit",
    "keep_mask_shape",
    "sample_keep_mask",
    "sample_uniform",
    "expand_blocks",
    "select_top_k",
    "keep_fraction_scale",
    "apply_keep_mask",
]

Unit = Literal["element", "channel", "sample"]


def keep_mask_shape(x: torch.Tensor, unit: Unit, per_sample: bool = True) -> tuple[int, ...]:
    """Shape of a keep mask that drops ``unit``s of ``x`` (N, C, *spatial) independently.

    ``per_sample=False`` shares one draw across the batch (leading dimension 1).
    """
    n = x.shape[0] if per_sample else 1
    if unit == "element":
        return (n, *x.shape[1:])
    if unit == "channel":
        return (n, x.shape[1], *([1] * (x.ndim - 2)))
    if unit == "sample":
        return (n, *([1] * (x.ndim - 1)))
    raise ValueError(f"keep_mask_shape: unit must be 'element', 'channel' or 'sample', got {unit!r}")


def sample_uniform(
    shape: Sequence[int], like: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """U[0, 1) noise of ``shape`` in float32 on ``like``'s device (float32 whatever the input dtype, so that a
    small probability such as a DropBlock seed rate is not rounded away in bf16)."""
    return torch.rand(tuple(shape), generator=generator, device=like.device, dtype=torch.float32)


@torch.no_grad()
def sample_keep_mask(
    like: torch.Tensor,
    keep_prob: float,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bernoulli(``keep_prob``) keep mask of ``shape`` in ``like``'s dtype and device."""
    mask = torch.empty(tuple(shape), device=like.device, dtype=torch.float32)
    mask.bernoulli_(keep_prob, generator=generator)
    return mask if like.dtype == torch.float32 else mask.to(like.dtype)


@torch.no_grad()
def expand_blocks(seeds: torch.Tensor, block_size: Sequence[int]) -> torch.Tensor:
    """Grow each seed into a block that starts at the seed: (…, V_1, …, V_d) → (…, V_1+b_1-1, …, V_d+b_d-1).

    ``seeds`` is a float tensor of 0/1 whose last d = len(block_size) dimensions index the *valid region* of a
    feature map, i.e. the top-left corners at which a whole block fits. The result holds 1 on the union of the
    blocks, so every block lies inside the map and none is truncated by the border.

    Why a separable running maximum instead of one ``max_pool`` with a b×b kernel: a union of boxes is the
    dilation of the seeds by a box, and a box dilation factorises into one 1-D dilation per axis, so the cost
    per element is Σ b_i instead of Π b_i (b=7 in 2-D: 14 comparisons instead of 49).
    """
    d = len(block_size)
    out = seeds
    for axis, b in enumerate(block_size):
        if b == 1:
            continue
        dim = seeds.ndim - d + axis
        # Move the axis last, dilate it with a 1-D max-pool over a zero-padded copy, move it back.
        moved = out.movedim(dim, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        flat = F.max_pool1d(F.pad(flat, (b - 1, b - 1)), kernel_size=b, stride=1)
        out = flat.reshape(*shape[:-1], shape[-1] + b - 1).movedim(-1, dim)
    return out


@torch.no_grad()
def select_top_k(scores: torch.Tensor, k: int, dim: int = -1, largest: bool = True) -> torch.Tensor:
    """Boolean mask, True at the ``k`` largest (or smallest) entries of ``scores`` along ``dim``.

    Ties are broken by ``torch.topk``'s order; ``k`` is clipped to [0, size].
    """
    size = scores.shape[dim]
    k = max(0, min(int(k), size))
    selected = torch.zeros_like(scores, dtype=torch.bool)
    if k == 0:
        return selected
    index = scores.topk(k, dim=dim, largest=largest).indices
    return selected.scatter(dim, index, True)


@torch.no_grad()
def keep_fraction_scale(keep: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """numel(keep) / sum(keep), summed in float32: the inverse of the realised keep fraction of the whole mask.

    Returns 0-D tensor; an all-dropped mask gives scale 0 (the output is zero anyway) instead of inf/NaN.
    """
    kept = keep.sum(dtype=torch.float32)
    scale = torch.where(kept > 0, keep.numel() / kept.clamp_min(1.0), torch.zeros_like(kept))
    return scale if dtype is None else scale.to(dtype)


def apply_keep_mask(x: torch.Tensor, keep: torch.Tensor, scale: float | torch.Tensor | None = None) -> torch.Tensor:
    """``x * keep * scale``, with the scale folded into the (small) mask first.

    Gradients flow to ``x`` only, as ``keep * scale``; NaN/Inf in ``x`` propagate as in ``torch.nn.Dropout``
    (a kept NaN stays NaN, and 0·NaN is NaN), they never raise.
    """
    if scale is not None:
        keep = keep * scale
    return x * keep
