"""DropConnect (Wan, Zeiler, Zhang, LeCun & Fergus, ICML 2013): drop weights instead of activations.

Wraps a ``Linear`` or ``Conv1d/2d/3d`` layer. In training every weight is kept with probability 1 − p and kept
weights are scaled by 1/(1 − p) (inverted, so the expected weight is W); biases are not dropped, as in the
paper. ``per_sample=False`` (default) draws one weight mask per forward, shared by the mini-batch: the
practical form used by most implementations; ``per_sample=True`` draws one mask per sample, the paper's
definition, computed as a batched product for Linear and as a grouped convolution for Conv (memory N × |W|).
At eval the layer uses its mean weights W — the paper's moment-matching inference (a Gaussian approximation
sampled at test time) is not implemented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dropkit.base import DropkitModule
from dropkit.masks import sample_keep_mask
from dropkit.registry import register
from dropkit.validation import check_bool, check_float_tensor, check_generator

__all__ = ["DropConnect", "dropconnect_weight"]

_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def dropconnect_weight(
    weight: torch.Tensor, p: float, *, copies: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Return ``weight ⊙ M / (1 − p)``, M ~ Bernoulli(1 − p); ``copies=N`` returns N independent draws stacked."""
    shape = weight.shape if copies is None else (copies, *weight.shape)
    if p >= 1.0:
        return weight * torch.zeros(shape, device=weight.device, dtype=weight.dtype)
    keep = sample_keep_mask(weight, 1.0 - p, shape, generator)
    return weight * (keep * (1.0 / (1.0 - p)))


@register(
    "dropconnect",
    family="random",
    kind="wrapper",
    paper="Wan, Zeiler, Zhang, LeCun & Fergus, ICML 2013",
    summary="each weight of a wrapped Linear/Conv layer dropped with probability p (inverted scaling); mean weights at eval",
    taxonomy={"element": "architecture", "space": "weights", "theta": "p(θ)", "sampling": "random",
              "unit": "weight", "phase": "train", "generality": "generic"},
)
class DropConnect(DropkitModule):
    """``dropkit.create("dropconnect", layer=nn.Linear(...), p=0.5)``.

    Args:
        layer: the ``nn.Linear`` or ``nn.Conv1d/2d/3d`` whose weights are dropped (kept as ``self.layer``).
        p: weight drop probability (default 0.5, the paper's rate).
        per_sample: one weight mask per sample instead of one per forward.
        generator: optional ``torch.Generator``.
    """

    repr_fields = ("per_sample",)

    def __init__(self, layer: nn.Module, p: float = 0.5, per_sample: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator=generator)
        if not isinstance(layer, _SUPPORTED):
            raise TypeError(f"dropconnect: layer must be one of nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, got {type(layer).__name__}")
        if isinstance(layer, nn.modules.conv._ConvNd) and layer.padding_mode != "zeros":
            raise ValueError(f"dropconnect: conv padding_mode must be 'zeros', got {layer.padding_mode!r}")
        self.layer = layer
        self.per_sample = check_bool(per_sample, "per_sample", self.method_name)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.ndim - 2]
        layer = self.layer
        return conv(x, weight, bias, layer.stride, layer.padding, layer.dilation, groups)

    def _check_input(self, x: torch.Tensor) -> bool:
        """Refuse a shape the wrapped layer cannot take, naming it; True when ``x`` is an unbatched conv input."""
        layer = self.layer
        if isinstance(layer, nn.Linear):
            if x.ndim < 1 or x.shape[-1] != layer.in_features:
                raise ValueError(f"dropconnect: x must be (..., {layer.in_features}) for the wrapped "
                                 f"Linear({layer.in_features}, {layer.out_features}), got shape {tuple(x.shape)}")
            return False
        d = len(layer.kernel_size)
        if x.ndim not in (d + 1, d + 2) or x.shape[-d - 1] != layer.in_channels:
            raise ValueError(f"dropconnect: x must be (N, {layer.in_channels}, *spatial) or unbatched "
                             f"({layer.in_channels}, *spatial) with {d} spatial dims for the wrapped "
                             f"{type(layer).__name__}, got shape {tuple(x.shape)}")
        return x.ndim == d + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return self.layer(x)
        check_float_tensor(x, self.method_name)
        if self._check_input(x):  # unbatched (C, *spatial), as the wrapped conv accepts: one sample
            return self.forward(x.unsqueeze(0)).squeeze(0)
        generator = check_generator(self.generator, x, self.method_name)
        layer = self.layer
        if not self.per_sample:
            weight = dropconnect_weight(layer.weight, self.p, generator=generator)
            if isinstance(layer, nn.Linear):
                return F.linear(x, weight, layer.bias)
            return self._conv(x, weight, layer.bias, layer.groups)
        if x.ndim == 1:  # an unbatched Linear input: one sample
            return self.forward(x.unsqueeze(0)).squeeze(0)
        n = x.shape[0]
        if n == 0:  # an empty batch: no mask to draw, the layer gives the empty output of the right shape
            return layer(x)
        weights = dropconnect_weight(layer.weight, self.p, copies=n, generator=generator)
        if isinstance(layer, nn.Linear):
            # (N, ..., in) × (N, out, in) → (N, ..., out): one weight matrix per sample.
            flat = x.reshape(n, -1, x.shape[-1])
            y = torch.bmm(flat, weights.transpose(1, 2)).reshape(*x.shape[:-1], weights.shape[1])
            return y if layer.bias is None else y + layer.bias
        # Per-sample convolution as one grouped convolution: the batch becomes the group axis.
        folded = x.reshape(1, n * x.shape[1], *x.shape[2:])
        y = self._conv(folded, weights.flatten(0, 1), None, n * layer.groups)
        y = y.reshape(n, -1, *y.shape[2:])
        if layer.bias is not None:
            y = y + layer.bias.reshape(1, -1, *([1] * (y.ndim - 2)))
        return y
