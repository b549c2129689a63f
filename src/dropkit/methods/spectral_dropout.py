"""Spectral dropout (Khan, Hayat & Porikli, Neural Networks 110, 2019, arXiv:1711.08591).

Page: ``docs/methods/spectral_dropout.md``. The activations are decorrelated with a fixed
orthonormal DCT-II, the weak spectral coefficients (|c| ≤ τ) are removed, and the inverse DCT maps back. The paper
casts the transform as fixed conv weights; here it is a pair of (separable) matrix products, vectorised over the
batch and all positions.

Details the paper leaves open, and the choices made here:

* **Which coefficients are dropped, and p** (not stated): a coefficient with |c| > τ is always kept; a weak coefficient
  (|c| ≤ τ) is dropped with probability ``p``. The default ``p = 1`` removes every weak coefficient
  deterministically (the primary reading, "zero the weak coefficients below τ"); 0 < p < 1 is the
  optional stochastic dropping of coefficients, read as in the public student reproduction
  (``gibernas/spectral-dropout``, ``utils/utils.py``: a coefficient is zeroed when it is below the threshold *and*
  a Bernoulli draw says drop). No rescaling: the transform is orthonormal, so the removed energy is exactly the
  energy of the dropped coefficients (≤ that of all coefficients with |c| ≤ τ).
* **The three reshaping variants** (``variant``):
  ``"hypercolumn"`` (default): at every spatial position the C-vector of the feature map is reshaped to an a×b
  patch (a·b = C, a the largest divisor of C not above √C; 8×8 for C = 64, 8×16 for C = 128) and transformed by
  a 2-D DCT; this is the reproduction's hypercolumn transform, generalised to non-square C, and is what a fixed
  1×1 conv layer computes; ``"channel"``: 1-D DCT of the C-vector at each position; ``"spatial"``: 2-D DCT of each
  H×W map. For (N, F) inputs the hypercolumn and channel variants transform the F features.
* **τ** (not stated): absolute threshold on the coefficients, default 0.1 (features of O(1) scale, e.g. after BatchNorm).
* **Eval** (not stated): the paper's test-time behaviour is not verified; as an activation method, eval is the identity.

All separable DCTs are orthonormal (Kronecker products of orthonormal DCT matrices), so τ = 0 gives back the input
up to rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dropkit.base import DropkitModule
from dropkit.masks import sample_uniform
from dropkit.registry import register
from dropkit.validation import check_choice, check_float_tensor, check_generator, check_ndim, check_probability, check_real

__all__ = ["dct_matrix", "hard_threshold", "spectral_dropout", "SpectralDropout"]

_VARIANTS = ("hypercolumn", "channel", "spatial")


def dct_matrix(n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n × n): c = D @ v, v = Dᵀ @ c.

    D[k, i] = s_k · cos(π (2i + 1) k / (2n)), s_0 = √(1/n), s_k = √(2/n).
    """
    i = torch.arange(n, dtype=torch.float64)
    k = i.view(-1, 1)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=dtype)


def _hypercolumn_factors(c: int) -> tuple[int, int]:
    a = max(d for d in range(1, math.isqrt(c) + 1) if c % d == 0)
    return a, c // a


def _along(x: torch.Tensor, d: torch.Tensor, dim: int) -> torch.Tensor:
    """Apply the square matrix ``d`` along dimension ``dim`` of a contiguous tensor, as one batched matmul."""
    lead = math.prod(x.shape[:dim])
    n = x.shape[dim]
    rest = math.prod(x.shape[dim + 1:])
    return torch.matmul(d, x.reshape(lead, n, rest)).view(x.shape)


def _transform(x: torch.Tensor, mats: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    for dim, d in mats:
        x = _along(x, d, dim)
    return x


def hypercolumn_dct_roundtrip(x: torch.Tensor) -> torch.Tensor:
    """The orthonormal DCT over the C-vector at every position of ``x`` (N, C, ...) and straight back, with no
    threshold between: the transform cost every hypercolumn spectral dropout pays (the benchmark's floor for it)."""
    n, c = x.shape[0], x.shape[1]
    a, b = _hypercolumn_factors(c)
    view = (n, a, b, math.prod(x.shape[2:]))
    mats = [(1, dct_matrix(a, dtype=x.dtype, device=x.device)), (2, dct_matrix(b, dtype=x.dtype, device=x.device))]
    inverse = [(dim, d.t().contiguous()) for dim, d in reversed(mats)]
    return _transform(_transform(x.contiguous().view(view), mats), inverse).view(x.shape)


class _HardThreshold(torch.autograd.Function):
    """``F.hardshrink`` that keeps a bool mask for backward instead of its float input (a quarter of the bytes)."""

    @staticmethod
    def forward(ctx, coef: torch.Tensor, tau: float) -> torch.Tensor:  # noqa: ANN001
        kept = F.hardshrink(coef, tau)
        # τ > 0 here, so a kept coefficient (|c| > τ) is never 0: kept ≠ 0 is exactly hardshrink's pass-through set.
        ctx.save_for_backward(kept != 0)
        return kept

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        (passed,) = ctx.saved_tensors
        return torch.where(passed, grad, 0.0), None


def hard_threshold(coef: torch.Tensor, tau: float) -> torch.Tensor:
    """Zero every entry with |c| ≤ ``tau`` (> 0), as ``F.hardshrink``, keeping only a bool mask for backward."""
    return _HardThreshold.apply(coef, tau)


def spectral_dropout(
    x: torch.Tensor,
    p: float = 1.0,
    *,
    tau: float = 0.1,
    variant: str = "hypercolumn",
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DCT → drop coefficients with |c| ≤ τ (each with probability p) → inverse DCT.

    Args:
        x: (N, F) or (N, C, *spatial) for ``"hypercolumn"``/``"channel"``; (N, C, H, W) for ``"spatial"``.
        p: probability that a weak coefficient is dropped (1: all weak coefficients removed, deterministic).
        tau: threshold on |coefficient|, ≥ 0.
        variant: ``"hypercolumn"``, ``"channel"`` or ``"spatial"``.
        training: when False, ``x`` is returned unchanged.
        generator: optional generator (used when 0 < p < 1).
    """
    method = "spectral_dropout"
    check_float_tensor(x, method)
    check_choice(variant, "variant", method, _VARIANTS)
    if variant == "spatial":
        check_ndim(x, method, (4,), "(N, C, H, W) for variant='spatial'")
    else:
        check_ndim(x, method, (2, 3, 4, 5), "(N, F) or (N, C, *spatial)")
    p = check_probability(p, "p", method)
    tau = check_real(tau, "tau", method, low=0.0)
    generator = check_generator(generator, x, method)
    if not training or p == 0.0 or tau == 0.0:
        return x
    channels_last = x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    n, c = x.shape[0], x.shape[1]
    spatial = math.prod(x.shape[2:])
    xc = x.contiguous()
    with torch.no_grad():
        if variant == "spatial":
            h, w = x.shape[2], x.shape[3]
            view = (n * c, h, w)
            mats = [(1, dct_matrix(h, dtype=x.dtype, device=x.device)), (2, dct_matrix(w, dtype=x.dtype, device=x.device))]
        elif variant == "channel":
            view = (n, c, spatial)
            mats = [(1, dct_matrix(c, dtype=x.dtype, device=x.device))]
        else:
            a, b = _hypercolumn_factors(c)
            view = (n, a, b, spatial)
            mats = [(1, dct_matrix(a, dtype=x.dtype, device=x.device)), (2, dct_matrix(b, dtype=x.dtype, device=x.device))]
        inverse = [(dim, d.t().contiguous()) for dim, d in reversed(mats)]
    coef = _transform(xc.view(view), mats)
    if p == 1.0:
        # Deterministic removal of every weak coefficient: hardshrink is the hard threshold in one fused pass;
        # backward passes the gradient where |c| > tau only, read from a bool mask rather than the coefficients.
        kept = hard_threshold(coef, tau)
    else:
        with torch.no_grad():
            drop = (coef.abs() <= tau) & (sample_uniform(coef.shape, x, generator) < p)
        kept = coef.masked_fill(drop, 0.0)
    y = _transform(kept, inverse).view(x.shape)
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y


@register(
    "spectral_dropout",
    family="related",
    kind="activation",
    paper="Khan, Hayat & Porikli, \"Regularization of deep neural networks with spectral dropout\", "
          "Neural Networks 110 (2019), arXiv:1711.08591",
    summary="orthonormal DCT of the features, weak coefficients (|c| <= tau) removed (each with probability p), "
            "inverse DCT",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ|x)", "sampling": "adaptive",
              "unit": "element", "phase": "train", "generality": "generic"},
)
class SpectralDropout(DropkitModule):
    """Module form of :func:`spectral_dropout`.

    Args:
        p: drop probability of a weak coefficient (default 1: deterministic removal below τ; not stated in the paper).
        tau: threshold (default 0.1; not stated in the paper).
        variant: ``"hypercolumn"`` (default), ``"channel"`` or ``"spatial"``.
        generator: optional ``torch.Generator``.
    """

    repr_fields = ("tau", "variant")

    def __init__(
        self, p: float = 1.0, tau: float = 0.1, variant: str = "hypercolumn", generator: torch.Generator | None = None
    ) -> None:
        super().__init__(p, generator=generator)
        self.tau = check_real(tau, "tau", self.method_name, low=0.0)
        self.variant = check_choice(variant, "variant", self.method_name, _VARIANTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return spectral_dropout(x, self.p, tau=self.tau, variant=self.variant, training=True, generator=self.generator)
