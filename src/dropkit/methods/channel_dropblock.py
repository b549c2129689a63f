"""Channel DropBlock (Ding, Dong, Tong, Ma, Xiao & Ling, "Channel DropBlock: An Improved Regularization Method
for Fine-Grained Visual Classification", BMVC 2021, arXiv:2106.03432). Official code:
``PRIS-CV/DropChannelBlock_Pytorch_master``.

Paper Alg. 1, per image: compute a channel correlation matrix M; pick one row (a *seed* channel) uniformly at
random; drop the ⌊γC⌋ channels most correlated with the seed (a "pattern group", the seed included); multiply by
the nominal keep ratio's inverse 1/(1 − γ) (Alg. 1 step 4, as in the official code). Eval is the identity.

Correlation metrics (``metric``):

* ``"max_activation"``: smooth each channel with 3×3 average pooling (stride 1, zero padding counted; computed
  as separable box sums, which have the same argmax), take its
  argmax position (row = idx // W, col = idx mod W — floor division, the official code's ``loc / w`` is wrong on
  modern PyTorch), and rank channels by the Euclidean distance of their peak to the seed's peak (closest = most
  correlated). γ defaults to 0.2.
* ``"bilinear"``: ``M = N(X)·N(X)ᵀ`` with X the C × HW matrix and N row-L2 normalisation (cosine similarity).
  γ defaults to 0.05.

Only the seed's row of M is ever used, so dropkit computes that row alone: O(C·HW) per image instead of
O(C²·HW), and no C×C matrix. Ranking by −distance equals ranking by the official min–max-normalised similarity.

Ties (``ties``): many channels often share one peak position, so "the top ⌊γC⌋" is ambiguous.
``"random"`` (default) drops exactly ⌊γC⌋ channels, breaking ties uniformly at random — Alg. 1's count, and the
count the 1/(1 − γ) normalisation assumes. ``"all"`` follows the official code: every channel at least as
correlated as the ⌊γC⌋-th is dropped (possibly more channels); where the whole row is constant (all channels peak
at one place, the official code's 0/0 → NaN → drop-everything case) only the seed channel is dropped.
At least one channel (the seed) is dropped whenever γ > 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dropkit.base import DropkitModule
from dropkit.masks import sample_uniform
from dropkit.registry import register
from dropkit.validation import check_choice, check_float_tensor, check_generator, check_ndim, check_probability

__all__ = ["channel_dropblock", "ChannelDropBlock", "METRIC_DEFAULT_P", "peak_positions"]

_NAME = "channel_dropblock"
_METRICS = ("max_activation", "bilinear")
_TIES = ("random", "all")
#: γ of the official code for each metric
METRIC_DEFAULT_P = {"max_activation": 0.2, "bilinear": 0.05}


def _resolve_p(p: float | None, metric: str, method: str) -> float:
    if p is None:
        return METRIC_DEFAULT_P[metric]
    return check_probability(p, "p", method, allow_one=False)


def _box3_sum(x: torch.Tensor) -> torch.Tensor:
    """3×3 box sums with zero padding: 9 × ``avg_pool2d(x, 3, 1, 1)`` (padding counted), the same argmax.

    Separable, as four vectorised adds over a padded copy: cheaper on the CPU than the pooling kernel's 9 reads.
    """
    padded = F.pad(x, (1, 1, 1, 1))
    rows = padded[..., :-2] + padded[..., 1:-1]
    rows += padded[..., 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :]
    box += rows[..., 2:, :]
    return box


def _box3_argmax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column, each (N, C) int64, of the maximum of every map's 3×3 box sums (zero padding).

    The same positions as ``_box3_sum(x).flatten(2).argmax(dim=2)``: the box sums are the same floats (the same
    additions in the same order, ((left + centre) + right), then ((up + centre) + down), a zero-padded neighbour
    left out rather than added as 0, which can only change the sign of a zero sum) and ties go to the first position
    in row-major order. The work is laid out for the CPU:

    * both passes are two shifted adds over the whole activation read as one flat vector (no slicing of short
      rows, no padded copy); the first and last column of every row and the first and last row of every map,
      where those adds run into the neighbouring row or map, are rewritten with strided ops over 2/W and 2/H of
      the data. Two activation-sized buffers in all, where a padded layout took two of (W + 1)/W the size and
      its padding pass: fresh large buffers cost page faults on the CPU;
    * the argmax is found as the first position equal to the row maximum, with vectorised max-reductions:
      ``argmax`` along a row is ~5× slower here. NaN box sums count as +inf (``argmax`` would prefer a NaN to
      an earlier +inf; both only arise from non-finite inputs).
    """
    n, c, h, w = x.shape
    m = n * c
    length = h * w
    data = x.contiguous().view(m * h, w)
    rows = torch.empty((m * h, w), device=x.device, dtype=x.dtype)  # horizontal 3-sums
    if w == 1:
        rows.copy_(data)
    else:
        flat, rows_flat = data.view(-1), rows.view(-1)
        torch.add(flat[:-1], flat[1:], out=rows_flat[1:])  # left + centre
        rows_flat[1:-1] += flat[2:]  # + right
        rows[:, 0] = data[:, 0] + data[:, 1]  # first column: centre + right (no left)
        rows[:, w - 1] = data[:, w - 2] + data[:, w - 1]  # last column: left + centre (no right)
    # The vertical pass over the flat vector too (``out=`` must be contiguous under torch.compile); the first row of
    # every map, which took the previous map's last row as "up", is rewritten, and the last row, which would take
    # the next map's first row as "down", is kept aside and put back.
    rows_flat = rows.view(-1)
    box = torch.empty((m, length), device=x.device, dtype=x.dtype)
    box_flat = box.view(-1)
    torch.add(rows_flat[w:], rows_flat[:-w], out=box_flat[w:])  # centre + up
    rows = rows.view(m, length)
    box[:, :w] = rows[:, :w]  # the first row has no up
    last = box[:, length - w:].clone()  # the last row has no down
    box_flat[:-w] += rows_flat[w:]  # + down
    box[:, length - w:] = last
    box = box.nan_to_num_(nan=math.inf)
    # The ramp must hold every integer up to H·W exactly: float32 (or float64 beyond 2**24), not bf16/fp16.
    index_dtype = torch.float32 if length < 2**24 else torch.float64
    hit = rows if x.dtype == index_dtype else torch.empty((m, length), device=x.device, dtype=index_dtype)
    hit = torch.eq(box, box.amax(dim=1, keepdim=True), out=hit)
    ramp = torch.arange(length, 0, -1, device=x.device, dtype=index_dtype)
    first = length - hit.mul_(ramp).amax(dim=1).long()
    row = torch.div(first, w, rounding_mode="floor")
    return row.view(n, c), (first - row * w).view(n, c)


def peak_positions(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each channel peaks after 3×3 average smoothing: the ``"max_activation"`` metric's positions.

    Args:
        x: (N, C, H, W) tensor (read without gradient).

    Returns:
        Row and column, each (N, C) int64, of the first maximum (row-major) of every map's 3×3 box sums with zero
        padding (the argmax of ``avg_pool2d(x, 3, 1, 1)`` with padding counted); NaN counts as +inf.
    """
    with torch.no_grad():
        return _box3_argmax(x.detach())


def _seed_similarity(xd: torch.Tensor, seed: torch.Tensor, metric: str) -> torch.Tensor:
    """Row ``seed`` of the correlation matrix for every sample: (N, C) float32, larger = more correlated."""
    n, c, h, w = xd.shape
    if metric == "max_activation":
        row, col = _box3_argmax(xd)  # (N, C) each
        pos = torch.stack((row, col), dim=2).float()  # (N, C, 2)
        seed_pos = pos.gather(1, seed.view(n, 1, 1).expand(n, 1, 2))
        return -((pos - seed_pos) ** 2).sum(dim=2)  # −squared distance: integers, exact ties
    feats = xd.flatten(2).float()  # (N, C, HW)
    norms = torch.linalg.vector_norm(feats, dim=2)  # (N, C)
    seed_feat = feats.gather(1, seed.view(n, 1, 1).expand(n, 1, h * w))  # (N, 1, HW)
    dots = torch.bmm(feats, seed_feat.transpose(1, 2)).squeeze(2)  # (N, C)
    seed_norm = norms.gather(1, seed.view(n, 1))
    return dots / (norms * seed_norm).clamp_min(1e-12)


def channel_dropblock(
    x: torch.Tensor,
    p: float | None = None,
    *,
    metric: str = "max_activation",
    ties: str = "random",
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Channel DropBlock.

    Args:
        x: input of shape (N, C, H, W).
        p: γ, the fraction of channels in the dropped group, in [0, 1); None picks the official default of the
            metric (0.2 for ``"max_activation"``, 0.05 for ``"bilinear"``).
        metric: ``"max_activation"`` or ``"bilinear"``.
        ties: ``"random"`` (exactly max(1, ⌊γC⌋) channels) or ``"all"`` (official code's threshold rule).
        training: when False, ``x`` is returned unchanged.
        generator: optional generator for the seed channel and the tie-breaking.

    Returns:
        ``x * mask / (1 − γ)`` with mask of shape (N, C, 1, 1).
    """
    check_float_tensor(x, _NAME)
    check_ndim(x, _NAME, (4,), "(N, C, H, W)")
    check_choice(metric, "metric", _NAME, _METRICS)
    check_choice(ties, "ties", _NAME, _TIES)
    p = _resolve_p(p, metric, _NAME)
    generator = check_generator(generator, x, _NAME)
    if not training or p == 0.0:
        return x

    n, c = x.shape[:2]
    k = min(c, max(1, math.floor(p * c)))
    with torch.no_grad():
        # Alg. 1 step 2: one seed row per sample, uniform over the C channels (⌊u·C⌋, not torch.randint: passing
        # generator=None explicitly breaks dynamo's retrace when the batch size changes).
        seed = sample_uniform((n,), x, generator).mul_(c).long().clamp_max_(c - 1)
        sim = _seed_similarity(x.detach(), seed, metric)
        if ties == "random" and metric == "max_activation":
            # Lexicographic (similarity descending, then u ascending) order in one topk instead of two argsorts
            # of (N, C): the similarities are integers (−squared distances), so sim − u orders exactly so, and
            # float64 holds every sim − u exactly; the seed channel (always in its own group) gets +inf.
            u = sample_uniform((n, c), x, generator)
            key = sim.double().sub_(u).scatter_(1, seed.view(n, 1), math.inf)
            top = key.topk(k, dim=1).indices
            # Alg. 1 step 4: 1/(1 − γ) on the kept channels, 0 on the group (the same floats as (~drop) / (1 − γ)).
            multiplier = torch.ones((n, c), device=x.device).div_(1.0 - p).scatter_(1, top, 0.0)
        else:
            multiplier = _group_multiplier(sim, seed, k, p, ties, generator)
        multiplier = multiplier.to(x.dtype).view(n, c, 1, 1)
    return x * multiplier


def _group_multiplier(
    sim: torch.Tensor, seed: torch.Tensor, k: int, p: float, ties: str, generator: torch.Generator | None
) -> torch.Tensor:
    """(N, C) float32 1/(1 − γ) on the kept channels, 0 on each sample's group, for ties="all" or the bilinear
    metric (general similarities)."""
    n, c = sim.shape
    seed_hot = torch.zeros((n, c), dtype=torch.bool, device=sim.device).scatter(1, seed.view(n, 1), True)
    ranked = sim.masked_fill(seed_hot, math.inf)  # the seed channel is always in its own group
    if ties == "random":
        # Lexicographic (similarity, random) order: shuffle, then a stable sort by similarity.
        shuffle = sample_uniform((n, c), sim, generator).argsort(dim=1)
        order = ranked.gather(1, shuffle).argsort(dim=1, descending=True, stable=True)
        top = shuffle.gather(1, order[:, :k])
        drop = torch.zeros((n, c), dtype=torch.bool, device=sim.device).scatter(1, top, True)
    else:
        threshold = ranked.topk(k, dim=1).values[:, -1:]
        constant = sim.amax(dim=1, keepdim=True) == sim.amin(dim=1, keepdim=True)
        drop = torch.where(constant, seed_hot, ranked >= threshold)
    return (~drop).to(torch.float32) / (1.0 - p)  # Alg. 1 step 4


@register(
    _NAME,
    family="guided",
    kind="activation",
    paper="Ding, Dong, Tong, Ma, Xiao & Ling, Channel DropBlock: An Improved Regularization Method for "
          "Fine-Grained Visual Classification, BMVC 2021, arXiv:2106.03432",
    summary="per sample, a random seed channel and its group of most correlated channels (peak position or "
            "cosine similarity) are dropped together; rescaled by 1/(1-p)",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ|x)", "sampling": "adaptive",
              "unit": "channel", "phase": "train", "generality": "generic"},
)
class ChannelDropBlock(DropkitModule):
    """Module form of :func:`channel_dropblock`.

    Args:
        p: γ in [0, 1); None (default) means the official default of ``metric`` (0.2 max_activation, 0.05 bilinear).
        metric: ``"max_activation"`` (default) or ``"bilinear"``.
        ties: ``"random"`` (default) or ``"all"``.
        generator: optional ``torch.Generator``.
    """

    repr_fields = ("metric", "ties")
    p_allows_one = False  # γ = 1 would divide by zero in the 1/(1 − γ) normalisation

    def __init__(
        self,
        p: float | None = None,
        metric: str = "max_activation",
        ties: str = "random",
        generator: torch.Generator | None = None,
    ) -> None:
        check_choice(metric, "metric", self.method_name, _METRICS)
        super().__init__(_resolve_p(p, metric, self.method_name), generator=generator)
        self.metric = metric
        self.ties = check_choice(ties, "ties", self.method_name, _TIES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return channel_dropblock(x, self.p, metric=self.metric, ties=self.ties, training=True,
                                 generator=self.generator)
