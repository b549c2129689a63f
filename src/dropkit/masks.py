"""Mask primitives shared by every dropkit method: sample, expand, select, apply.

Conventions:

* A *keep mask* holds 1 where a unit survives and 0 where it is dropped, in the input's dtype, with a shape that
  broadcasts against the input (``(N, C, 1, 1)`` for channels, ``(N, 1, 1, 1)`` for samples, ...). Small
  broadcast masks keep the input's memory format (channels_last stays channels_last) for free.
* Masks are built under ``torch.no_grad()`` on the input's device; randomness comes only from torch, with an
  optional ``torch.Generator``, so every ``forward`` can be compiled with ``fullgraph=True``.
* Normalisers are reduced in float32 and only then cast to the input dtype: a bf16/fp16 sum over a large mask
  loses whole units of precision.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "Unit",
    "keep_mask_shape",
    "sample_keep_bool",
    "sample_keep_mask",
    "sample_uniform",
    "sample_normal",
    "expand_blocks",
    "select_top_k",
    "keep_fraction_scale",
    "apply_keep_mask",
    "block_seed_rate",
    "block_mask_plan",
    "block_keep_bool_from_noise",
    "sample_block_keep_bool",
    "sample_block_keep_mask",
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
    if generator is None:  # (passing generator=None breaks dynamo's tracing of dynamic shapes)
        return torch.rand(tuple(shape), device=like.device, dtype=torch.float32)
    return torch.rand(tuple(shape), generator=generator, device=like.device, dtype=torch.float32)


def sample_normal(
    shape: Sequence[int], like: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """N(0, 1) noise of ``shape`` in float32 on ``like``'s device."""
    if generator is None:
        return torch.randn(tuple(shape), device=like.device, dtype=torch.float32)
    return torch.randn(tuple(shape), generator=generator, device=like.device, dtype=torch.float32)


@torch.no_grad()
def sample_keep_bool(
    like: torch.Tensor,
    keep_prob: float,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Boolean Bernoulli(``keep_prob``) keep mask of ``shape`` on ``like``'s device.

    Drawn as U[0, 1) < keep_prob: on the CPU ``torch.rand`` is more than twice as fast as ``bernoulli_``, which
    is what lets element-wise ``dropout`` beat ``nn.Dropout``.
    """
    return sample_uniform(shape, like, generator) < keep_prob


@torch.no_grad()
def sample_keep_mask(
    like: torch.Tensor,
    keep_prob: float,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bernoulli(``keep_prob``) keep mask of ``shape`` as 0/1 in ``like``'s dtype and device."""
    return sample_keep_bool(like, keep_prob, shape, generator).to(like.dtype)


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
    # A bool mask is counted as integers: summing it in float32 first casts the whole mask (3× slower on the CPU).
    kept = torch.count_nonzero(keep).to(torch.float32) if keep.dtype == torch.bool else keep.sum(dtype=torch.float32)
    scale = torch.where(kept > 0, keep.numel() / kept.clamp_min(1.0), torch.zeros_like(kept))
    return scale if dtype is None else scale.to(dtype)


def _bool_to(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``keep.to(dtype)`` for a bool mask. On the CPU the mask is read as uint8 (the same bytes, 0/1): this build
    casts uint8 to float with a vectorised kernel and bool without one (1 M elements: 0.11 ms against 0.74 ms,
    measured here)."""
    if keep.device.type != "cpu" or torch.compiler.is_compiling():
        return keep.to(dtype)
    return keep.view(torch.uint8).to(dtype)


def _times_bool_mask(t: torch.Tensor, keep: torch.Tensor, scale: float | torch.Tensor | None) -> torch.Tensor:
    """t · keep · scale for a bool ``keep``. The mask is cast to ``t``'s dtype first: a bool × float product has no
    vectorised CPU kernel (about 3× slower than the cast plus a float product, measured here), and the cast reads
    the mask as uint8 (:func:`_bool_to`). A tensor scale (0-d,
    already in the dtype) is folded into the cast mask; a Python float multiplies the product, in the op's float32
    arithmetic, so a bf16 output is rounded once."""
    mask = _bool_to(keep, t.dtype)
    if isinstance(scale, torch.Tensor):
        return t * mask.mul_(scale)
    out = t * mask
    return out if scale is None else out.mul_(scale)


class _BoolMaskMul(torch.autograd.Function):
    """y = x · keep · scale that keeps the bool mask (one byte per element) for backward, never a float copy."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float | torch.Tensor | None) -> torch.Tensor:  # noqa: ANN001
        if isinstance(scale, torch.Tensor):
            ctx.save_for_backward(keep, scale)
            ctx.scale_value = None
        else:
            ctx.save_for_backward(keep)
            ctx.scale_value = scale
        return _times_bool_mask(x, keep, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        saved = ctx.saved_tensors
        scale = saved[1] if len(saved) > 1 else ctx.scale_value
        return _times_bool_mask(grad, saved[0], scale), None, None


def apply_keep_mask(x: torch.Tensor, keep: torch.Tensor, scale: float | torch.Tensor | None = None) -> torch.Tensor:
    """``x * keep * scale``.

    A float mask is scaled first (masks are usually small: per channel, per sample). A boolean mask (usually full
    size) is what autograd keeps for backward — one byte per element — and is cast to ``x``'s dtype on the fly in
    forward and backward, never stored as floats.

    Gradients flow to ``x`` only, as ``keep * scale``; NaN/Inf in ``x`` propagate as in ``torch.nn.Dropout``
    (a kept NaN stays NaN, and 0·NaN is NaN), they never raise.
    """
    if keep.dtype == torch.bool:
        if not (x.requires_grad and torch.is_grad_enabled()):
            return _times_bool_mask(x, keep, scale)
        return _BoolMaskMul.apply(x, keep, scale)
    if scale is not None:
        keep = keep * scale
    return x * keep


# ------------------------------------------------------------------------------------------------------------
# Block masks: Bernoulli(γ) seeds over the valid region, grown into blocks.
# ------------------------------------------------------------------------------------------------------------

# Truncation of the seed count: the sparse sampler draws at most K seeds per map, K chosen so that
# P(Binomial(V, γ) > K) < this bound; beyond it, counts are clipped (a bias far below any statistical test).
_SEED_COUNT_TAIL = 1e-10
# Above this many candidate seeds per map the dense sampler (one Bernoulli draw per valid position) is cheaper.
_SPARSE_MAX_SEEDS = 32


# The table sampler holds the keep mask of every one of the 2^V seed patterns of a map with V valid positions; it
# is used (on the CPU) while that table stays this small.
_TABLE_MAX_BYTES = 1 << 20
_TABLE_MAX_VALID = 16


# Above this Bernstein bound the exact quantile is not searched: the sparse sampler needs K ≤ 62 anyway.
_EXACT_SEARCH_LIMIT = 64


def _seed_count_bound(n: int, prob: float, tail: float) -> int:
    """A K with P(Binomial(n, prob) > K) < ``tail``: the exact smallest one when it is small (where the sparse
    sampler's cost depends on it), else Bernstein's closed-form bound. Cached (``_max_seed_count``): DropBlock calls
    it on every forward, and the exact search was O(K) Python steps (K ≈ n·prob: ~10⁵ on a 128³ volume).

    Bernstein: P(X ≥ μ + t) ≤ exp(−t² / (2(σ² + t/3))) for a sum of independent variables within 1 of their
    means; with L = ln(1/tail) the root t = L/3 + √(L²/9 + 2Lσ²) makes the bound equal ``tail``, so
    K = ⌊μ + t⌋ is a valid upper bound for every n and prob (not an approximation).
    """
    if prob <= 0.0:
        return 0
    if prob >= 1.0:
        return n
    mean, var = n * prob, n * prob * (1.0 - prob)
    log_inv_tail = math.log(1.0 / tail)
    bound = min(n, math.floor(mean + log_inv_tail / 3.0 + math.sqrt(log_inv_tail ** 2 / 9.0 + 2.0 * log_inv_tail * var)))
    if bound > _EXACT_SEARCH_LIMIT:
        return bound
    # The pmf by its recurrence pmf(k+1) = pmf(k)·(n−k)/(k+1)·p/(1−p), from pmf(0) = (1−p)^n: relative error
    # ~1e-16 per step, where lgamma(n+1) − lgamma(n−k+1) cancels ~1e-9 away on large maps (more than the tail).
    odds = prob / (1.0 - prob)
    pmf = math.exp(n * math.log1p(-prob))
    total = 0.0
    for k in range(bound + 1):  # at most 65 steps, and only once per (shape, rate)
        total += pmf
        if 1.0 - total < tail:
            return k
        pmf *= (n - k) / (k + 1) * odds
    return bound


#: :func:`_seed_count_bound` cached per (shape, rate) for eager calls; a compiled forward computes it once at trace
#: time instead (dynamo warns about, and traces through, an lru_cache wrapper).
_max_seed_count = functools.lru_cache(maxsize=1024)(_seed_count_bound)


def _table_fits(n_valid: int, map_size: int) -> bool:
    return n_valid <= _TABLE_MAX_VALID and (1 << n_valid) * map_size <= _TABLE_MAX_BYTES


def _build_block_pattern_table(spatial: tuple[int, ...], block: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(2^V, ∏ spatial) uint8 keep masks, row i the map whose seeds are the set bits of i over the V valid
    positions (row-major): the dense sampler's mask for every possible seed pattern."""
    valid = tuple(s - b + 1 for s, b in zip(spatial, block))
    n_valid = math.prod(valid)
    patterns = torch.arange(1 << n_valid, device=device)[:, None]
    bits = torch.arange(n_valid, device=device)
    seeds = ((patterns >> bits) & 1).to(torch.float32).reshape(-1, *valid)
    return (expand_blocks(seeds, block) == 0).to(torch.uint8).reshape(1 << n_valid, -1)


#: Per (spatial, block, device): a forward on the same shape reuses its table.
_block_pattern_table = functools.lru_cache(maxsize=64)(_build_block_pattern_table)


def block_seed_rate(p: float, spatial: Sequence[int], block: Sequence[int]) -> float:
    """DropBlock's γ: p / Π b_i · Π S_i / Π (S_i − b_i + 1), clipped to 1 (Ghiasi et al. 2018, eq. 1)."""
    area = math.prod(spatial)
    block_area = math.prod(block)
    valid = math.prod([s - b + 1 for s, b in zip(spatial, block)])
    return min(1.0, p * area / (block_area * valid))


def block_mask_plan(
    like: torch.Tensor, lead_shape: Sequence[int], block: Sequence[int], gamma: float, algorithm: str = "auto"
) -> tuple[str, int, tuple[int, ...]]:
    """How a block keep mask of (*lead_shape, *spatial) is drawn: ``(sampler, k, noise_shape)``.

    ``sampler`` is ``"dense"``, ``"table"``, ``"sparse"`` or ``"none"`` (γ so small that no seed is expected:
    nothing drops); ``k`` the sparse sampler's seeds per map; ``noise_shape`` the shape of the single U[0, 1) draw
    the mask is a deterministic function of (:func:`block_keep_bool_from_noise`), which is what lets backward
    redraw it. ``"table"`` draws the same noise as ``"dense"`` and gives the same mask from it.
    """
    d = len(block)
    spatial = tuple(like.shape[like.ndim - d:])
    valid = tuple(s - b + 1 for s, b in zip(spatial, block))
    n_valid = math.prod(valid)
    rows = math.prod(lead_shape)
    bound = _seed_count_bound if torch.compiler.is_compiling() else _max_seed_count
    k = bound(n_valid, gamma, _SEED_COUNT_TAIL)
    if algorithm not in ("auto", "dense", "sparse", "table"):
        raise ValueError(f"sample_block_keep_mask: algorithm must be 'auto', 'dense', 'sparse' or 'table', "
                         f"got {algorithm!r}")
    if algorithm == "auto":
        # On a GPU these maps are launch-bound, not bandwidth-bound: the dense sampler's ~10 kernels beat the
        # sparse one's ~40 small ones (H200, (64, 64, 16, 16): sparse 1.10 ms fwd+bwd against 0.74 ms for the
        # textbook algorithm). On the CPU the sparse sampler wins by an order of magnitude, and the table
        # sampler's five ops beat the sparse one's ~35 where few positions can hold a seed (a map just larger
        # than the block: (32, 128, 8, 8) with b = 7 has V = 4).
        if like.device.type != "cpu":
            algorithm = "dense"
        elif _table_fits(n_valid, math.prod(spatial)):
            algorithm = "table"
        else:
            algorithm = "sparse" if k <= _SPARSE_MAX_SEEDS else "dense"
    if k == 0:  # γ = 0: nothing to drop
        return "none", 0, ()
    if algorithm == "table":
        if not _table_fits(n_valid, math.prod(spatial)):
            raise ValueError(f"sample_block_keep_mask: the table sampler holds 2^V masks and allows V ≤ "
                             f"{_TABLE_MAX_VALID} valid positions per map within {_TABLE_MAX_BYTES} bytes; this map "
                             f"has V = {n_valid}; use algorithm='dense' or 'sparse'")
        return "table", k, (*lead_shape, *valid)
    if algorithm == "dense" or gamma >= 1.0:
        return "dense", k, (*lead_shape, *valid)
    if k > 62:
        raise ValueError(f"sample_block_keep_mask: the sparse sampler packs seeds in int64 words and allows at most "
                         f"62 seeds per map, this map needs {k}; use algorithm='dense'")
    return "sparse", k, (rows, k)


def _zero_to_bool_(scratch: torch.Tensor) -> torch.Tensor:
    """``scratch == 0`` as a bool tensor, computed in place in ``scratch`` (which is consumed). On the CPU this
    build's comparison into a bool (or any other dtype's) output has no vectorised kernel, while an in-place
    comparison and a cast to uint8 do: (4096, 16, 16) int32 words, 0.26 ms against 0.79 ms, measured here. The
    uint8 holds 0/1, so its bool view is exact."""
    if scratch.device.type != "cpu" or torch.compiler.is_compiling():
        return scratch == 0
    return scratch.eq_(0).to(torch.uint8).view(torch.bool)


@torch.no_grad()
def block_keep_bool_from_noise(
    noise: torch.Tensor,
    spatial: Sequence[int],
    lead_shape: Sequence[int],
    block: Sequence[int],
    gamma: float,
    plan: tuple[str, int, tuple[int, ...]],
) -> torch.Tensor:
    """The bool keep mask (*lead_shape, *spatial) that the U[0, 1) ``noise`` of ``plan`` determines (see
    :func:`sample_block_keep_mask`); deterministic, so the same noise always gives the same mask. It takes the
    spatial size, not the input, so that a caller recomputing the mask in backward need not keep the input."""
    sampler, k, _ = plan
    if sampler == "none":
        raise ValueError("block_keep_bool_from_noise: the plan draws no noise (sampler 'none'): nothing drops")
    d = len(block)
    spatial = tuple(spatial)
    device = noise.device
    valid = tuple(s - b + 1 for s, b in zip(spatial, block))
    n_valid = math.prod(valid)
    rows = math.prod(lead_shape)
    if sampler == "dense":
        seeds = (noise < gamma).to(torch.float32)
        return _zero_to_bool_(expand_blocks(seeds, block))
    if sampler == "table":
        # The V seed draws of a map, read as the bits of an integer, index the map's mask in the table of all 2^V
        # patterns: one gather instead of a dilation of every map (same noise, same mask as "dense").
        build = _build_block_pattern_table if torch.compiler.is_compiling() else _block_pattern_table
        table = build(spatial, tuple(block), device)
        powers = torch.pow(2.0, torch.arange(n_valid, device=device, dtype=torch.float32))
        seeds = (noise.reshape(rows, n_valid) < gamma).to(torch.float32)
        index = (seeds @ powers).to(torch.long)  # exact: at most 2^16 − 1 in float32
        return table.index_select(0, index).view(torch.bool).reshape(*lead_shape, *spatial)

    # Skip sampling: the gaps between successes of a Bernoulli(γ) sequence are i.i.d. Geometric(γ), so the
    # first k seed positions (in row-major order of the valid region) are cumulative sums of k geometric draws.
    positions = noise.clamp_min(torch.finfo(torch.float32).tiny)
    # log(u) / log(1 − γ) is a Geometric(γ) gap; + 1 per seed, prefix sum, − 1: the 0-based positions. In place:
    # these are small tensors, where allocation and dispatch, not arithmetic, are the cost.
    positions.log_().mul_(1.0 / math.log1p(-gamma)).floor_().add_(1.0)
    positions = positions.cumsum(dim=1).sub_(1.0)
    active = positions < n_valid
    flat_positions = positions.clamp_max_(n_valid - 1).long()

    starts = []
    remainder = flat_positions
    for axis in range(d - 1, 0, -1):
        starts.append(remainder % valid[axis])
        remainder = remainder // valid[axis]
    starts.append(remainder)  # the first axis: already below valid[0]
    starts.reverse()
    # int32 words (int64 beyond 31 seeds): the broadcast AND of narrower types has no vectorised kernel on the
    # CPU (uint8: 0.9 ms against 0.16 ms for int32 on a (4096, 16, 16) mask, measured here).
    word_dtype = torch.int32 if k <= 31 else torch.long
    # Seed j owns bit j; an inactive seed owns no bit, which voids its whole block.
    bits = torch.tensor([1 << j for j in range(k)], dtype=word_dtype, device=device)
    bits = torch.where(active, bits, 0)
    covered = None
    for axis in range(d):
        # words[r, i] = OR of the bits of the seeds whose interval [start, start + b) covers i. The bits are
        # distinct powers of two, so the OR is a sum: +bit at start, −bit at start + b, then a prefix sum.
        events = torch.zeros(rows, spatial[axis] + 1, dtype=word_dtype, device=device)
        events.scatter_add_(1, starts[axis], bits)
        events.scatter_add_(1, starts[axis] + block[axis], -bits)
        words = events[:, :-1].cumsum(dim=1, dtype=word_dtype)  # (rows, S_a)
        if covered is None:
            covered = words
        else:
            covered = covered[..., None] & words.reshape(rows, *([1] * axis), spatial[axis])
    return _zero_to_bool_(covered).reshape(*lead_shape, *spatial)


@torch.no_grad()
def sample_block_keep_bool(
    like: torch.Tensor,
    lead_shape: Sequence[int],
    block: Sequence[int],
    gamma: float,
    generator: torch.Generator | None = None,
    algorithm: str = "auto",
) -> torch.Tensor:
    """Bool keep mask of shape (*lead_shape, *spatial): False on the union of blocks whose corners are Bernoulli(γ)
    seeds over the valid region (the positions where a whole block of size ``block`` fits).

    ``like`` supplies the spatial size (its trailing len(block) dims) and the device. A bool mask, because it is
    what autograd keeps for backward: one byte per element instead of four.

    Three samplers with the same distribution:

    * ``"dense"``: one Bernoulli draw per valid position, then a separable box dilation (``expand_blocks``).
    * ``"sparse"``: skip sampling. The gaps between successes of a Bernoulli(γ) sequence over the V valid
      positions are i.i.d. Geometric(γ), so K geometric draws per map give its seeds exactly (K chosen so that
      P(more than K seeds) < 1e-10). Seed j's block is the product of one interval per axis; each axis's
      intervals are packed as bit j of an integer word per coordinate (built by a prefix sum of ±bit events),
      so a position is covered iff the AND of its coordinates' words is non-zero: one full-size integer AND
      instead of a pooling pass. It draws K numbers
      per map instead of V, which is why DropBlock costs a fraction of the convolution it regularizes.
    * ``"table"``: the dense sampler's draws, with each map's mask looked up in a table of the masks of all 2^V
      seed patterns of its V valid positions (V ≤ 16, table ≤ 1 MiB): one gather instead of a dilation.
    * ``"auto"``: on the CPU, table where it fits, else sparse when at most 32 candidate seeds per map suffice,
      else dense; on other devices dense (kernel launches, not memory traffic, bound these small maps there).

    Each is one U[0, 1) draw (:func:`block_mask_plan`) followed by a deterministic function of it
    (:func:`block_keep_bool_from_noise`).
    """
    plan = block_mask_plan(like, lead_shape, block, gamma, algorithm)
    spatial = like.shape[like.ndim - len(block):]
    if plan[0] == "none":
        return torch.ones((*lead_shape, *spatial), device=like.device, dtype=torch.bool)
    return block_keep_bool_from_noise(sample_uniform(plan[2], like, generator), spatial, lead_shape, block, gamma, plan)


@torch.no_grad()
def sample_block_keep_mask(
    like: torch.Tensor,
    lead_shape: Sequence[int],
    block: Sequence[int],
    gamma: float,
    generator: torch.Generator | None = None,
    algorithm: str = "auto",
) -> torch.Tensor:
    """:func:`sample_block_keep_bool` as 0/1 in ``like``'s dtype."""
    return sample_block_keep_bool(like, lead_shape, block, gamma, generator, algorithm).to(like.dtype)
