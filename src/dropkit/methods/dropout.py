"""Element-wise dropout (Srivastava et al., JMLR 2014) and Gaussian dropout (same paper, §10).

``dropout`` is inverted dropout: each element is kept with probability 1 − p and survivors are scaled by
1/(1 − p), so E[y] = x and eval is the identity. The mask is drawn as U[0, 1) < 1 − p rather than with
``bernoulli_`` (``nn.Dropout``'s kernel): on the CPU that is about twice as fast, forward and backward.

``gaussian_dropout`` multiplies every element by noise ~ N(1, p/(1 − p)): the same mean and variance as the
inverted Bernoulli mask, without the zeros (Srivastava et al. §10, Wang & Manning 2013).

Memory kept for backward: ``dropout`` keeps its mask as bool (one byte per element); with ``recompute=True`` it
keeps only the generator state and redraws the mask in backward (``dropkit.replay``). Gaussian noise is
real-valued, so no one-byte form of it is exact: ``gaussian_dropout`` recomputes by default (``recompute=False``
keeps the float noise, the activation's own size, and skips the second draw).
"""

from __future__ import annotations

import math

import torch

from dropkit.base import DropkitModule
from dropkit.masks import apply_keep_mask, sample_keep_bool, sample_normal
from dropkit.registry import register
from dropkit.replay import apply_recomputed_mask
from dropkit.triton_dropout import triton_dropout
from dropkit.validation import check_bool, check_choice, check_float_tensor, check_generator, check_probability

BACKENDS = ("torch", "triton")

__all__ = ["dropout", "Dropout", "gaussian_dropout", "gaussian_noise_multiplier", "GaussianDropout"]

_SRIVASTAVA = "Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov, JMLR 15 (2014)"


def dropout(
    x: torch.Tensor, p: float = 0.5, *, training: bool = True, generator: torch.Generator | None = None,
    recompute: bool = False, backend: str = "torch",
) -> torch.Tensor:
    """Inverted element-wise dropout.

    Args:
        x: any floating tensor (N, *).
        p: drop probability in [0, 1]; p = 1 gives zeros.
        training: when False, ``x`` is returned unchanged.
        generator: optional generator for the mask.
        recompute: keep the generator state instead of the bool mask and redraw the mask in backward (same
            output and gradient, bit for bit; no activation-sized memory kept, one more draw in backward).
        backend: ``"torch"`` (default) or ``"triton"``: an opt-in fused kernel (``dropkit.triton_dropout``) that
            draws the mask in-kernel with Philox and regenerates it in backward; its speed is not yet measured,
            its random stream differs from the torch backend's, and its output is contiguous.
    """
    check_float_tensor(x, "dropout")
    p = check_probability(p, "p", "dropout")
    generator = check_generator(generator, x, "dropout")
    check_bool(recompute, "recompute", "dropout")
    check_choice(backend, "backend", "dropout", BACKENDS)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    if backend == "triton":
        return triton_dropout(x, p, generator)
    keep_prob, scale = 1.0 - p, 1.0 / (1.0 - p)
    if recompute:
        return apply_recomputed_mask(x, x.shape, lambda u: (u < keep_prob, scale), generator=generator)
    keep = sample_keep_bool(x, keep_prob, x.shape, generator)
    return apply_keep_mask(x, keep, scale)


@register(
    "dropout",
    family="random",
    kind="activation",
    paper=_SRIVASTAVA,
    summary="each element dropped independently with probability p, survivors scaled by 1/(1-p)",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ)", "sampling": "random",
              "unit": "element", "phase": "train", "generality": "generic"},
)
class Dropout(DropkitModule):
    """Module form of :func:`dropout`. Args: p (default 0.5, the paper's hidden-unit rate), generator, recompute
    (default False: a bool mask, one byte per element, is kept for backward), backend (default ``"torch"``;
    ``"triton"`` is opt-in and not yet measured)."""

    repr_fields = ("recompute", "backend")

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None, recompute: bool = False,
                 backend: str = "torch") -> None:
        super().__init__(p, generator=generator)
        self.recompute = check_bool(recompute, "recompute", self.method_name)
        self.backend = check_choice(backend, "backend", self.method_name, BACKENDS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return dropout(x, self.p, training=True, generator=self.generator, recompute=self.recompute,
                       backend=self.backend)


def gaussian_noise_multiplier(normal: torch.Tensor, p: float, dtype: torch.dtype) -> torch.Tensor:
    """N(0, 1) noise (float32) → the multiplier 1 + σ·noise, σ² = p/(1 − p), in ``dtype``; no grad."""
    with torch.no_grad():
        return normal.mul(math.sqrt(p / (1.0 - p))).add_(1.0).to(dtype)


def gaussian_dropout(
    x: torch.Tensor, p: float = 0.5, *, training: bool = True, generator: torch.Generator | None = None,
    recompute: bool = True,
) -> torch.Tensor:
    """Multiplicative Gaussian noise with mean 1 and variance p/(1 − p).

    Args:
        x: any floating tensor.
        p: the equivalent Bernoulli drop probability, in [0, 1). p = 1 (infinite variance) is refused.
        training: when False, ``x`` is returned unchanged.
        generator: optional generator for the noise.
        recompute: keep only the generator state and redraw the noise in backward (default: the noise is
            real-valued, so keeping it would cost the activation's size); False keeps the noise and skips the
            second draw. Output and gradient are the same bit for bit either way.
    """
    check_float_tensor(x, "gaussian_dropout")
    p = check_probability(p, "p", "gaussian_dropout", allow_one=False)
    generator = check_generator(generator, x, "gaussian_dropout")
    check_bool(recompute, "recompute", "gaussian_dropout")
    if not training or p == 0.0:
        return x
    dtype = x.dtype
    if recompute:
        return apply_recomputed_mask(x, x.shape, lambda n: (gaussian_noise_multiplier(n, p, dtype), None),
                                     normal=True, generator=generator)
    noise = gaussian_noise_multiplier(sample_normal(x.shape, x, generator), p, dtype)
    return x * noise


@register(
    "gaussian_dropout",
    family="random",
    kind="activation",
    paper=_SRIVASTAVA + ", §10 (multiplicative Gaussian noise)",
    summary="every element multiplied by N(1, p/(1-p)) noise: dropout's mean and variance without zeros",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ)", "sampling": "random",
              "unit": "element", "phase": "train", "generality": "generic"},
)
class GaussianDropout(DropkitModule):
    """Module form of :func:`gaussian_dropout`. Args: p in [0, 1) (default 0.5), generator, recompute (default
    True: only the generator state is kept for backward)."""

    p_allows_one = False  # the noise variance p/(1 − p) is infinite at p = 1
    repr_fields = ("recompute",)

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None, recompute: bool = True) -> None:
        super().__init__(p, generator=generator)
        self.recompute = check_bool(recompute, "recompute", self.method_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return gaussian_dropout(x, self.p, training=True, generator=self.generator, recompute=self.recompute)
