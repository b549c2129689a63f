"""Stochastic pooling (Zeiler & Fergus, ICLR 2013, arXiv:1301.3557): sample one activation per pooling region.

Page: ``docs/methods/stochastic_pooling.md``. For every region R of non-negative activations
(per sample and channel), p_i = a_i / Σ_{k∈R} a_k;

    training:   one location i ~ Multinomial(p) is drawn and its a_i is the output (a region whose activations
                are all zero gives 0);
    inference:  probabilistic weighting, Σ_i p_i a_i = Σ a_i² / Σ a_i (0 for an all-zero region).

The gradient of the training output reaches only the sampled location, as with max pooling. The method assumes
non-negative (post-ReLU) inputs; negative entries are given probability 0 (clamped in p, and never sampled), so
a region without a positive entry gives 0 in both modes.

Sampling is vectorised: one U[0, 1) number per region (a quarter of the elements for 2×2 regions), inverted
through the region's cumulative sum. Defaults: 2×2 regions with stride 2, a drop-in for ``nn.MaxPool2d(2)``; the
paper's CIFAR networks used overlapping 3×3 regions with stride 2 (pass ``kernel_size=3, stride=2``) [recollection,
not verified here]. No padding: the last partial row/column is dropped, as ``nn.MaxPool2d`` does.

Why an ``nn.Module`` and not a ``DropkitModule``: there is no drop probability; the randomness is the multinomial
draw over each region, whose probabilities are the activations themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from dropkit.masks import sample_uniform
from dropkit.registry import register
from dropkit.validation import check_float_tensor, check_generator, check_int_tuple, check_ndim

__all__ = ["stochastic_pooling", "StochasticPool2d"]

_NAME = "stochastic_pooling"


def _regions(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) → (N, C, H', W', kh·kw) windows."""
    kh, kw = kernel
    win = x.unfold(2, kh, stride[0]).unfold(3, kw, stride[1])  # (N, C, H', W', kh, kw), a view
    return win.reshape(*win.shape[:4], kh * kw)


def stochastic_pooling(
    x: torch.Tensor,
    kernel_size: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None,
    *,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Stochastic 2-D pooling.

    Args:
        x: (N, C, H, W), non-negative activations (negative entries are treated as probability 0).
        kernel_size: region size (int or (kh, kw)).
        stride: region stride (default: ``kernel_size``).
        training: sample one location per region when True; probability-weighted average when False.
        generator: optional generator for the draws.

    Returns:
        (N, C, H', W') with H' = ⌊(H − kh)/sh⌋ + 1, W' likewise.
    """
    method = _NAME
    check_float_tensor(x, method)
    check_ndim(x, method, (4,), "(N, C, H, W)")
    kernel = check_int_tuple(kernel_size, "kernel_size", method, 2)
    step = kernel if stride is None else check_int_tuple(stride, "stride", method, 2)
    if kernel[0] > x.shape[2] or kernel[1] > x.shape[3]:
        raise ValueError(f"{method}: kernel_size {kernel} must fit in the map {tuple(x.shape[2:])}")
    generator = check_generator(generator, x, method)
    regions = _regions(x, kernel, step)
    weights = regions.detach().float().clamp_min(0.0)
    total = weights.sum(dim=-1)  # (N, C, H', W')
    nonzero = total > 0
    if not training:
        safe = torch.where(nonzero, total, torch.ones_like(total))
        avg = (weights * regions.float()).sum(dim=-1) / safe
        # Gradients flow through the values a_i (the weights p_i are treated as constants, as in max pooling's
        # selection); this keeps the eval layer cheap and NaN-free on all-zero regions.
        out = torch.where(nonzero, avg, torch.zeros_like(avg))
        return out.to(x.dtype)
    with torch.no_grad():
        cum = weights.cumsum(dim=-1)
        u = sample_uniform(total.shape, x, generator) * total
        # Smallest i with cum_i > u: P(i) = a_i / Σ a. Zero-weight entries never satisfy it first.
        index = (cum <= u.unsqueeze(-1)).sum(dim=-1, keepdim=True).clamp_(max=regions.shape[-1] - 1)
    picked = regions.gather(-1, index).squeeze(-1)
    return torch.where(nonzero, picked, torch.zeros_like(picked))


@register(
    _NAME,
    family="related",
    kind="block",
    paper="Zeiler & Fergus, \"Stochastic Pooling for Regularization of Deep Convolutional Neural Networks\", "
          "ICLR 2013, arXiv:1301.3557",
    summary="pooling that samples one location per region in proportion to its activation in training and "
            "returns the probability-weighted average at eval",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ|x)", "sampling": "adaptive",
              "unit": "region", "phase": "train+test", "generality": "generic"},
)
class StochasticPool2d(nn.Module):
    """Module form of :func:`stochastic_pooling`; replaces ``nn.MaxPool2d`` in a model.

    Args:
        kernel_size: region size (default 2).
        stride: region stride (default: ``kernel_size``).
        generator: optional ``torch.Generator``.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int] = 2,
        stride: int | tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size = check_int_tuple(kernel_size, "kernel_size", self.method_name, 2)
        self.stride = self.kernel_size if stride is None else check_int_tuple(stride, "stride", self.method_name, 2)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"stochastic_pooling: generator must be a torch.Generator or None, "
                            f"got {type(generator).__name__}")
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_pooling(x, self.kernel_size, self.stride, training=self.training, generator=self.generator)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"
