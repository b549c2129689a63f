"""CorrDrop: correlation-based dropout (Zeng, Dai, Chen, Xia & Lu, "Correlation-based structural dropout for
convolutional neural networks", Pattern Recognition 120:108117, 2021; first as ICASSP 2020). Official code:
``Sandy-Zeng/CorrDrop``.

Units are scored by feature orthogonality (eqs. 1–3): with the unit features A (U × K) row-L2-normalised to Â,
``P = |Â·Âᵀ − I|`` and ``F_u = (1/U) Σ_v P_uv``. Drop probabilities fall with the score (eq. 4,
``γ_u = 1 − softmax_u(F)``): a correlation mask ``M_u ~ Bernoulli(1 − γ_u)`` shields a few units, the others are
dropped with the adjusted rate ``p̂ = p · numel(M) / (numel(M) − sum(M))`` (eqs. 5–8), so the expected dropped
fraction of the units stays p.

* ``corrdrop_spatial`` (SCD, eqs. 9–12): k×k average pooling with stride k (H' = ⌈H/k⌉, W' = ⌈W/k⌉); units are
  the H'W' pooled positions with their C-vectors as features; the rate is adjusted to
  ``p' = (p/k²)·HW/(H'W')`` (eq. 10); the pooled mask is upsampled by nearest neighbour (each dropped unit becomes
  a k×k block, cropped at the bottom/right border) and shared by all channels. The tiles are disjoint, so the
  fraction of *positions* dropped is p' itself: p only when k divides H and W, less on ragged maps (0.128 instead
  of 0.2 on 8×8 with k = 5, where the border tiles are cropped). ``rate_correction=True`` drops each pooled unit
  at rate p instead, so that p positions in expectation are dropped on any map.
* A block as large as the map would leave a single pooled unit, which eq. 4's softmax always shields: the layer
  would be the identity (the official default k = 9 on CIFAR's 8×8 stage). Like the official code, which sets
  k = H − 1 when k > H, the block is shrunk to max(H, W) − 1 whenever k ≥ max(H, W), so any map of at least 2
  positions has at least two pooled units (without mutating ``block_size``).
* ``corrdrop_channel`` (CCD, eqs. 13–14): units are the C channels with their H·W maps as features; whole channels
  are dropped with rate p.

Reading implemented (``docs/methods/corrdrop_spatial.md``, ``docs/methods/corrdrop_channel.md``):

* Eq. 4's softmax mapping is the default (``mapping="softmax"``). Because Σ softmax = 1, on average only one unit
  per sample is shielded, so the correlation changes each unit's drop probability by a factor 1 − O(1/U): the
  layer behaves close to DropBlock / channel dropout at rate p. ``mapping="minmax"`` (protection probability
  (F − min F)/(max F − min F), not in the paper) lets the correlation matter much more, at the price of no
  longer reproducing the official numbers.
* ``p̂``: the official code divides by the realised sum(M) of the whole batch mask, which couples the samples
  (a NaN in one sample changed every other sample's mask). Here each sample uses the expected count instead,
  ``p̂_n = p·U / (U − Σ_u (1 − γ_u))`` — for the softmax mapping Σ_u (1 − γ_u) = 1, so p̂ = p·U/(U − 1), the
  value the batch ratio concentrates around — clipped to [0, 1]. Samples are independent and each sample's
  expected dropped fraction is exactly p (before clipping). Non-finite scores (NaN/Inf inputs) count as 0.
* With one unit (C = 1 for CCD, a 1×1 map for SCD) eq. 4 shields it always and nothing would ever drop: the
  softmax mapping refuses such inputs with a ValueError instead of silently doing nothing.
* Renormalisation: the official code multiplies by numel/sum of the whole batch mask (``rescale=True``, default); the paper's eq. 12 has none (``rescale=False``).
* The block grid starts at the top-left corner (the paper does not place it; the official code pads and crops
  roughly centred).
* The drop rate ramp (official code: 0 → p over the first 200 forward calls, advanced inside ``forward``) is done
  by a schedule object outside the layer, over the same 200 training steps (card:
  ``{"type": "linear_ramp", "param": "p", "steps": 200}``, read by ``dropkit.schedule.from_card``).
* Memory: the correlation matrix is N·U² floats. Both functions refuse U > ``max_units`` (default 2048) with an
  error that says which block size would fit, instead of building an (HW)² matrix on a large map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dropkit.base import DropkitModule
from dropkit.masks import keep_fraction_scale, sample_uniform
from dropkit.registry import register
from dropkit.validation import (
    check_bool,
    check_choice,
    check_float_tensor,
    check_generator,
    check_ndim,
    check_positive_int,
    check_probability,
)

__all__ = ["corrdrop_spatial", "corrdrop_channel", "CorrDropSpatial", "CorrDropChannel", "correlation_scores",
           "effective_block_size", "realised_spatial_rate"]

_SPATIAL = "corrdrop_spatial"
_CHANNEL = "corrdrop_channel"

_PAPER = ("Zeng, Dai, Chen, Xia & Lu, Correlation-based structural dropout for CNNs, Pattern Recognition "
          "120:108117 (2021); ICASSP 2020")
_MAPPINGS = ("softmax", "minmax")
_TAXONOMY_BASE = {"element": "architecture", "space": "hidden", "theta": "p(θ|x)+time", "sampling": "adaptive",
                  "phase": "train", "generality": "generic"}
#: the official code ramps p from 0 over its first 200 forward calls (np.linspace(0, p, 200))
RAMP_STEPS = 200
_SCHEDULE = {"type": "linear_ramp", "param": "p", "steps": RAMP_STEPS}


def correlation_scores(units: torch.Tensor) -> torch.Tensor:
    """Feature-orthogonality scores F (eqs. 1–3) of U units with K-dim features.

    Args:
        units: (N, U, K) tensor; reduced in float32.

    Returns:
        (N, U) float32 scores in [0, (U−1)/U]: 0 for mutually orthogonal units, (U−1)/U when all are parallel.
        A zero feature vector has score 0 (the diagonal of P is removed explicitly, not through −I).
    """
    a = units.float()
    # Gram of the raw features, then cosines from its diagonal: no normalised copy of the (possibly large) features.
    gram = torch.bmm(a, a.transpose(1, 2))
    diag = gram.diagonal(dim1=1, dim2=2)  # Σ a², never negative (a sum of squares, also in floating point)
    inv_norm = (diag + 1e-8).rsqrt_()  # 1 / the official code's sqrt(Σa² + 1e-8)
    # Σ_v |G_uv| / (n_u n_v) = (1/n_u) · Σ_v |G_uv| · (1/n_v): the U×U matrix is scaled once, in place (the row
    # scale 1/n_u is applied to the (N, U) sums), one full pass over N·U² floats fewer than scaling it twice.
    self_cos = diag * inv_norm  # |G_uu| / n_u; times 1/n_u below gives |cos_uu|
    row = gram.abs_().mul_(inv_norm.unsqueeze(1)).sum(dim=2)
    return row.sub_(self_cos).mul_(inv_norm).div_(units.shape[1])


def _protection_probability(scores: torch.Tensor, mapping: str) -> torch.Tensor:
    if mapping == "softmax":  # eq. 4: 1 − γ_u = softmax_u(F)
        return torch.softmax(scores, dim=1)
    low = scores.amin(dim=1, keepdim=True)
    span = scores.amax(dim=1, keepdim=True) - low
    return torch.where(span > 0, (scores - low) / span.clamp_min(1e-12), torch.zeros_like(scores))


def _sample_drop(
    protect: torch.Tensor, p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Eqs. 5–8: True where a unit is dropped. ``protect`` is (N, U) in [0, 1]; ``p`` the target drop rate.

    Eq. 6's p̂ uses each sample's expected number of candidates, U − Σ_u protect_u, not the batch's realised
    count: samples stay independent (one sample's scores never move another's mask) and each sample's expected
    dropped fraction is exactly p whenever p̂ ≤ 1.
    """
    n, u = protect.shape
    noise = sample_uniform((2, n, u), protect, generator)
    candidate = noise[0] >= protect  # M_u = 0: not shielded by the correlation mask
    expected_candidates = (u - protect.sum(dim=1, keepdim=True)).clamp_min(1e-6)
    p_hat = (p * u / expected_candidates).clamp(max=1.0)  # eq. 6, (N, 1)
    return candidate & (noise[1] < p_hat)  # eqs. 7–8: S = 0 where M = 0 and B = 0


def _scores(units: torch.Tensor) -> torch.Tensor:
    """Correlation scores with non-finite values (from NaN/Inf activations) counted as 0, so such a sample still
    gets an ordinary mask (its NaN passes through, as in ``nn.Dropout``)."""
    return torch.nan_to_num(correlation_scores(units), nan=0.0, posinf=0.0, neginf=0.0)


def _check_more_than_one_unit(method: str, units: int, mapping: str, what: str) -> None:
    if units == 1 and mapping == "softmax":
        raise ValueError(f"{method}: x has {what}, a single unit, which eq. 4's softmax (= 1) always shields: "
                         "nothing would ever be dropped; use mapping='minmax' or an input with more units")


def effective_block_size(h: int, w: int, block_size: int) -> int:
    """The block side SCD uses on an H×W map: ``block_size``, shrunk to max(H, W) − 1 when it would leave a single
    pooled unit (the official code sets k = H − 1 when k > H); 1 on a 1×1 map."""
    return max(1, min(block_size, max(h, w) - 1))


def realised_spatial_rate(p: float, h: int, w: int, block_size: int, rate_correction: bool = False) -> float:
    """Expected fraction of the H×W positions that SCD drops at rate ``p`` (before the softmax clip of p̂).

    Without correction it is eq. 10's ``p' = (p/k²)·HW/(H'W')`` with k the effective block side: the pooled tiles
    are disjoint, so the position rate equals the unit rate; with ``rate_correction`` it is p.
    """
    k = effective_block_size(h, w, block_size)
    hp, wp = math.ceil(h / k), math.ceil(w / k)
    return p if rate_correction else min(1.0, p / (k * k) * (h * w) / (hp * wp))


def _check_units(method: str, units: int, max_units: int, what: str, hint: str) -> None:
    if units > max_units:
        raise ValueError(f"{method}: {what} gives U = {units} units, more than max_units = {max_units}: the "
                         f"correlation matrix would hold N·U² = N·{units * units} floats; {hint}")


def _check_common(x, p, mapping, rescale, max_units, generator, method):
    check_float_tensor(x, method)
    check_ndim(x, method, (4,), "(N, C, H, W)")
    p = check_probability(p, "p", method)
    check_choice(mapping, "mapping", method, _MAPPINGS)
    check_bool(rescale, "rescale", method)
    max_units = check_positive_int(max_units, "max_units", method)
    return p, max_units, check_generator(generator, x, method)


def corrdrop_spatial(
    x: torch.Tensor,
    p: float = 0.2,
    *,
    block_size: int = 5,
    mapping: str = "softmax",
    rescale: bool = True,
    max_units: int = 2048,
    rate_correction: bool = False,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Spatial-wise CorrDrop (SCD): drop k×k blocks, less often where the pooled features are more correlated.

    Args:
        x: input of shape (N, C, H, W).
        p: target drop rate (official README: 0.2 on CIFAR-10 without cutout, 0.03 with cutout).
        block_size: k, the pooling window, stride and block side (README: 5); shrunk to max(H, W) − 1 on maps
            where it would leave a single pooled unit (see :func:`effective_block_size`).
        mapping: ``"softmax"`` (eq. 4) or ``"minmax"`` (stronger, non-paper alternative).
        rescale: multiply by numel/sum of the batch mask (official code) or not (paper eq. 12).
        max_units: refuse maps with more than this many pooled units ⌈H/k⌉·⌈W/k⌉.
        rate_correction: False (paper eq. 10 and official code): each pooled unit is dropped at
            p' = (p/k²)·HW/(H'W'), which is also the realised fraction of dropped positions, below p on maps
            that k does not divide (0.128 for p = 0.2 on 8×8 with k = 5). True: units dropped at p, so a
            fraction p of the positions is dropped on any map.
        training: when False, ``x`` is returned unchanged.
        generator: optional generator for the two Bernoulli masks.

    Returns:
        ``x * mask`` (times the batch rescale), mask of shape (N, 1, H, W) constant on each k×k tile.
    """
    method = _SPATIAL
    p, max_units, generator = _check_common(x, p, mapping, rescale, max_units, generator, method)
    k = check_positive_int(block_size, "block_size", method)
    check_bool(rate_correction, "rate_correction", method)
    if not training or p == 0.0:
        return x
    n, c, h, w = x.shape
    _check_more_than_one_unit(method, h * w, mapping, f"a {h}×{w} map")
    k = effective_block_size(h, w, k)
    hp, wp = math.ceil(h / k), math.ceil(w / k)
    if hp * wp > max_units:
        fit = next(b for b in range(k, max(h, w) + 1) if math.ceil(h / b) * math.ceil(w / b) <= max_units)
        _check_units(method, hp * wp, max_units, f"a {h}×{w} map with block_size {k}",
                     f"use block_size ≥ {fit} or raise max_units")
    with torch.no_grad():
        # eq. 9: k×k average pooling, stride k, ceil mode (only each position's direction matters for F).
        kh, kw = min(k, h), min(k, w)
        pooled = F.avg_pool2d(x.detach(), (kh, kw), stride=(kh, kw), ceil_mode=True)  # (N, C, H', W')
        scores = _scores(pooled.flatten(2).transpose(1, 2))  # (N, H'W')
        p_pooled = realised_spatial_rate(p, h, w, k, rate_correction)  # eq. 10 (or p, corrected)
        drop = _sample_drop(_protection_probability(scores, mapping), p_pooled, generator)
        # eq. 11: nearest upsampling, each pooled unit becomes a k×k block; crop to H×W.
        keep = (~drop).view(n, 1, hp, 1, wp, 1).expand(n, 1, hp, k, wp, k).reshape(n, 1, hp * k, wp * k)
        keep = keep[:, :, :h, :w].to(x.dtype)
        if rescale:
            keep = keep * keep_fraction_scale(keep, x.dtype)
    return x * keep


def corrdrop_channel(
    x: torch.Tensor,
    p: float = 0.2,
    *,
    mapping: str = "softmax",
    rescale: bool = True,
    max_units: int = 2048,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Channel-wise CorrDrop (CCD): drop whole channels, less often for channels correlated with many others.

    Args:
        x: input of shape (N, C, H, W).
        p: target drop rate (official README: 0.2 on CIFAR-100 without cutout, 0.1 with cutout).
        mapping, rescale, training, generator: as in :func:`corrdrop_spatial`.
        max_units: refuse inputs with more than this many channels (the C×C matrix per sample).

    Returns:
        ``x * mask`` (times the batch rescale), mask of shape (N, C, 1, 1).
    """
    method = _CHANNEL
    p, max_units, generator = _check_common(x, p, mapping, rescale, max_units, generator, method)
    if not training or p == 0.0:
        return x
    n, c = x.shape[:2]
    _check_units(method, c, max_units, f"an input with {c} channels", "raise max_units if the memory allows it")
    _check_more_than_one_unit(method, c, mapping, "C = 1 channel")
    with torch.no_grad():
        scores = _scores(x.detach().flatten(2))  # eqs. 13: U = C units, K = HW features
        drop = _sample_drop(_protection_probability(scores, mapping), p, generator)  # eq. 14
        # A float32 0/1 mask in one op, scaled in place (an (N, C) mask: dispatch, not arithmetic, is its cost).
        keep = torch.logical_not(drop, out=torch.empty((n, c), device=x.device, dtype=torch.float32))
        if rescale:
            keep = keep.mul_(keep_fraction_scale(keep))
        keep = keep.to(x.dtype).view(n, c, 1, 1)
    return x * keep


class _CorrDropBase(DropkitModule):
    def _check_mapping(self, mapping: str) -> str:
        return check_choice(mapping, "mapping", self.method_name, _MAPPINGS)


@register(
    _SPATIAL,
    family="guided",
    kind="activation",
    paper=_PAPER,
    summary="k×k blocks of the pooled map dropped with rates that fall with the feature-orthogonality correlation "
            "of their channel vectors; batch-renormalised",
    taxonomy={**_TAXONOMY_BASE, "unit": "block"},
    schedule=_SCHEDULE,
)
class CorrDropSpatial(_CorrDropBase):
    """Module form of :func:`corrdrop_spatial` (SCD).

    Args:
        p: target drop rate (default 0.2, official README for CIFAR-10); ramp it from 0 with a schedule.
        block_size: k (default 5, official README); shrunk on maps it would cover in one tile.
        mapping: ``"softmax"`` (eq. 4, default) or ``"minmax"``.
        rescale: batch renormalisation as in the official code (default True) or none as in eq. 12.
        max_units: largest number of pooled units accepted (default 2048).
        rate_correction: drop a fraction p of the positions on ragged maps too (default False: eq. 10, whose
            realised rate is (p/k²)·HW/(H'W'); see :func:`corrdrop_spatial`).
        generator: optional ``torch.Generator``.
    """

    repr_fields = ("block_size", "mapping", "rescale", "rate_correction")

    def __init__(
        self,
        p: float = 0.2,
        block_size: int = 5,
        mapping: str = "softmax",
        rescale: bool = True,
        max_units: int = 2048,
        rate_correction: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator=generator)
        self.block_size = check_positive_int(block_size, "block_size", self.method_name)
        self.mapping = self._check_mapping(mapping)
        self.rescale = check_bool(rescale, "rescale", self.method_name)
        self.max_units = check_positive_int(max_units, "max_units", self.method_name)
        self.rate_correction = check_bool(rate_correction, "rate_correction", self.method_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return corrdrop_spatial(x, self.p, block_size=self.block_size, mapping=self.mapping, rescale=self.rescale,
                                max_units=self.max_units, rate_correction=self.rate_correction, training=True,
                                generator=self.generator)


@register(
    _CHANNEL,
    family="guided",
    kind="activation",
    paper=_PAPER,
    summary="whole channels dropped with rates that fall with their feature-orthogonality correlation to the "
            "other channels; batch-renormalised",
    taxonomy={**_TAXONOMY_BASE, "unit": "channel"},
    schedule=_SCHEDULE,
)
class CorrDropChannel(_CorrDropBase):
    """Module form of :func:`corrdrop_channel` (CCD).

    Args:
        p: target drop rate (default 0.2, official README for CIFAR-100); ramp it from 0 with a schedule.
        mapping, rescale, max_units, generator: as in :class:`CorrDropSpatial` (max_units bounds C).
    """

    repr_fields = ("mapping", "rescale")

    def __init__(
        self,
        p: float = 0.2,
        mapping: str = "softmax",
        rescale: bool = True,
        max_units: int = 2048,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator=generator)
        self.mapping = self._check_mapping(mapping)
        self.rescale = check_bool(rescale, "rescale", self.method_name)
        self.max_units = check_positive_int(max_units, "max_units", self.method_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return corrdrop_channel(x, self.p, mapping=self.mapping, rescale=self.rescale, max_units=self.max_units,
                                training=True, generator=self.generator)
