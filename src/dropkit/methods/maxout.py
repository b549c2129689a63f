"""Maxout (Goodfellow, Warde-Farley, Mirza, Courville & Bengio, ICML 2013, arXiv:1302.4389).

Page: ``docs/methods/maxout.md``. A maxout unit is the maximum of k affine pieces,
h_i(x) = max_j z_ij with z = xᵀW_{·ij} + b_ij: a Linear(d, m·k) whose outputs are grouped (m, k) and maxed over k;
the conv form takes the maximum over groups of k channels of a Conv2d(C, m·k). Grouping convention: output unit i
owns the k consecutive pre-activations i·k … i·k + k − 1. There is no stochasticity: maxout is an activation
designed to pair with dropout (it makes dropout's approximate model averaging more accurate), so it carries no
drop probability and is a plain ``nn.Module`` (``kind="block"``: it replaces a Linear/Conv + activation).

The gradient reaches only the winning piece of each unit (``Tensor.max(dim)`` routes it to one index, even on
ties, whereas ``amax`` would split it). The number of pieces varied in the paper by task (e.g. 5 for the
permutation-invariant MNIST MLP, 2 for some conv layers); the default is k = 2, the smallest maxout, which
contains ReLU (one piece fixed at 0) and |x| (a library choice).
"""

from __future__ import annotations

import torch
from torch import nn

from dropkit.registry import register
from dropkit.validation import check_bool, check_float_tensor, check_int_tuple, check_positive_int

__all__ = ["maxout", "Maxout"]

_NAME = "maxout"


def maxout(z: torch.Tensor, pieces: int, dim: int = 1) -> torch.Tensor:
    """Max over groups of ``pieces`` consecutive entries along ``dim``.

    Args:
        z: pre-activations with m·k entries along ``dim`` ((N, m·k) for the Linear form, (N, m·k, H, W) for conv).
        pieces: k ≥ 1.
        dim: the grouped dimension (1 by default; -1 for (N, T, m·k)).

    Returns:
        z with m entries along ``dim``.
    """
    method = _NAME
    check_float_tensor(z, method)
    pieces = check_positive_int(pieces, "pieces", method)
    if isinstance(dim, bool) or not isinstance(dim, int) or not -z.ndim <= dim < z.ndim:
        raise ValueError(f"{method}: dim must be an int in [-{z.ndim}, {z.ndim - 1}], got {dim!r}")
    d = dim % z.ndim
    size = z.shape[d]
    if size % pieces != 0:
        raise ValueError(f"{method}: size {size} of dim {dim} must be a multiple of pieces={pieces}")
    grouped = z.unflatten(d, (size // pieces, pieces))
    return grouped.max(dim=d + 1).values


@register(
    _NAME,
    family="related",
    kind="block",
    paper="Goodfellow, Warde-Farley, Mirza, Courville & Bengio, \"Maxout Networks\", ICML 2013, arXiv:1302.4389",
    summary="max over k affine pieces per unit (Linear, or Conv2d with kernel_size); deterministic, designed to "
            "pair with dropout",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ)", "sampling": "deterministic",
              "unit": "element", "phase": "train+test", "generality": "generic"},
)
class Maxout(nn.Module):
    """Maxout layer: ``maxout(layer(x), pieces)``, ``layer`` a Linear or (with ``kernel_size``) a Conv2d.

    Args:
        in_features: input features (Linear form) or input channels (conv form).
        out_features: maxout units m (Linear) or output channels (conv).
        pieces: k, the number of affine pieces per unit (default 2).
        kernel_size: None (default) for the Linear form; an int or pair builds the conv form.
        stride, padding: of the conv form (ignored by the Linear form; defaults 1 and 0).
        bias: whether the affine pieces have biases (default True).

    Input/output: (N, *, in_features) → (N, *, out_features) for the Linear form;
    (N, in_features, H, W) → (N, out_features, H', W') for the conv form.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        pieces: int = 2,
        kernel_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        m = self.method_name
        in_features = check_positive_int(in_features, "in_features", m)
        self.out_features = check_positive_int(out_features, "out_features", m)
        self.pieces = check_positive_int(pieces, "pieces", m)
        bias = check_bool(bias, "bias", m)
        if kernel_size is None:
            self.layer: nn.Module = nn.Linear(in_features, self.out_features * self.pieces, bias=bias)
            self._dim = -1
        else:
            kernel = check_int_tuple(kernel_size, "kernel_size", m, 2)
            strides = check_int_tuple(stride, "stride", m, 2)
            pads = check_int_tuple(padding, "padding", m, 2, minimum=0)
            self.layer = nn.Conv2d(in_features, self.out_features * self.pieces, kernel, stride=strides,
                                   padding=pads, bias=bias)
            self._dim = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dim == 1 and x.ndim != 4:
            raise ValueError(f"maxout: the conv form expects (N, C, H, W), got shape {tuple(x.shape)}")
        return maxout(self.layer(x), self.pieces, dim=self._dim)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"
