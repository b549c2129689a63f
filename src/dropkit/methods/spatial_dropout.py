"""SpatialDropout (Tompson, Goroshin, Jain, LeCun & Bregler, CVPR 2015): drop whole feature maps.

Adjacent activations of a conv feature map are strongly correlated, so element-wise dropout barely regularizes
them; SpatialDropout draws one Bernoulli(1 − p) per (sample, channel) and scales survivors by 1/(1 − p)
(PyTorch's ``nn.Dropout1d/2d/3d``; Tompson's original scaled by (1 − p) at test time instead, which is the same
model up to that constant). Only N·C random numbers are drawn, whatever the map size.
"""

from __future__ import annotations

import torch

from dropkit.base import DropkitModule
from dropkit.masks import apply_keep_mask, keep_mask_shape, sample_keep_mask
from dropkit.registry import register
from dropkit.validation import check_choice, check_float_tensor, check_generator, check_ndim, check_probability

__all__ = ["spatial_dropout", "SpatialDropout"]

_NAME = "spatial_dropout"

_LAYOUTS = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def _check_spatial_input(x: torch.Tensor, spatial_dims: int | None, method: str) -> None:
    check_float_tensor(x, method)
    if spatial_dims is None:
        # Inputs are always batched: a 3-D tensor is (N, C, L), never an unbatched (C, H, W) image. PyTorch's
        # Dropout2d guesses here (and historically dropped the wrong axis); we refuse to guess for other ndims.
        check_ndim(x, method, (3, 4, 5), "(N, C, L), (N, C, H, W) or (N, C, D, H, W); for other layouts pass "
                   "spatial_dims, and add a batch dimension to unbatched inputs")
    else:
        check_choice(spatial_dims, "spatial_dims", method, (1, 2, 3))
        check_ndim(x, method, (spatial_dims + 2,), f"{_LAYOUTS[spatial_dims]} for spatial_dims={spatial_dims}")


def spatial_dropout(
    x: torch.Tensor,
    p: float = 0.1,
    *,
    training: bool = True,
    spatial_dims: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Channel-wise (spatial) dropout.

    Args:
        x: (N, C, L), (N, C, H, W) or (N, C, D, H, W).
        p: probability of dropping a whole channel of one sample.
        training: when False, ``x`` is returned unchanged.
        spatial_dims: 1, 2 or 3 to insist on a layout; None infers it from ``x.ndim``.
        generator: optional generator for the mask.
    """
    _check_spatial_input(x, spatial_dims, _NAME)
    p = check_probability(p, "p", _NAME)
    generator = check_generator(generator, x, _NAME)
    if not training or p == 0.0:
        return x
    keep = sample_keep_mask(x, 1.0 - p, keep_mask_shape(x, "channel"), generator)
    return apply_keep_mask(x, keep, 0.0 if p == 1.0 else 1.0 / (1.0 - p))


@register(
    _NAME,
    family="random",
    kind="activation",
    paper="Tompson, Goroshin, Jain, LeCun & Bregler, CVPR 2015, arXiv:1411.4280",
    summary="whole feature maps of a sample dropped with probability p, survivors scaled by 1/(1-p)",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ)", "sampling": "random",
              "unit": "channel", "phase": "train", "generality": "generic"},
)
class SpatialDropout(DropkitModule):
    """Module form of :func:`spatial_dropout`.

    Args:
        p: channel drop probability (default 0.1, the rate the FocusedDropout and CorrDrop comparisons use;
            ``nn.Dropout2d`` defaults to 0.5).
        spatial_dims: 1, 2, 3 or None (infer from the input's ndim).
        generator: optional ``torch.Generator``.
    """

    repr_fields = ("spatial_dims",)

    def __init__(self, p: float = 0.1, spatial_dims: int | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator=generator)
        if spatial_dims is not None:
            check_choice(spatial_dims, "spatial_dims", self.method_name, (1, 2, 3))
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return spatial_dropout(x, self.p, training=True, spatial_dims=self.spatial_dims, generator=self.generator)
