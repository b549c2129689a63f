"""Stochastic depth / DropPath (Huang, Sun, Liu, Sedra & Weinberger, ECCV 2016).

Applied to the output of a residual branch f(x) (``y = x + drop_path(f(x))``): in training the whole branch of a
sample is dropped with probability p and kept branches are scaled by 1/(1 − p) (timm ``scale_by_keep=True``,
torchvision always; the paper scaled by the survival probability at test time instead). ``mode="row"`` draws
one decision per sample (timm, torchvision 'row'); ``mode="batch"`` one for the whole mini-batch, as the paper's
original formulation. Per-depth rates (the paper's linear decay) belong to the model builder or a schedule.
"""

from __future__ import annotations

import torch

from dropkit.base import DropkitModule
from dropkit.masks import apply_keep_mask, keep_mask_shape, sample_keep_mask
from dropkit.registry import register
from dropkit.validation import check_bool, check_choice, check_float_tensor, check_generator, check_ndim, check_probability

__all__ = ["drop_path", "DropPath"]

_NAME = "drop_path"

MODES = ("row", "batch")


def drop_path(
    x: torch.Tensor,
    p: float = 0.1,
    *,
    training: bool = True,
    mode: str = "row",
    scale_by_keep: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Drop whole samples (``mode="row"``) or the whole batch (``mode="batch"``) of a residual branch.

    Args:
        x: branch output (N, *), any ndim ≥ 1.
        p: drop probability; p = 1 gives zeros (no division by the zero survival rate).
        mode: ``"row"`` or ``"batch"``.
        scale_by_keep: scale kept branches by 1/(1 − p).
    """
    check_float_tensor(x, _NAME)
    check_ndim(x, _NAME, range(1, 9), "(N, ...)")
    p = check_probability(p, "p", _NAME)
    check_choice(mode, "mode", _NAME, MODES)
    check_bool(scale_by_keep, "scale_by_keep", _NAME)
    generator = check_generator(generator, x, _NAME)
    if not training or p == 0.0:
        return x
    keep = sample_keep_mask(x, 1.0 - p, keep_mask_shape(x, "sample", per_sample=mode == "row"), generator)
    scale = 1.0 / (1.0 - p) if scale_by_keep and p < 1.0 else None
    return apply_keep_mask(x, keep, scale)


@register(
    _NAME,
    family="random",
    kind="activation",
    paper="Huang, Sun, Liu, Sedra & Weinberger, ECCV 2016, arXiv:1603.09382",
    summary="a residual branch dropped for a whole sample (or batch) with probability p, kept ones scaled by 1/(1-p)",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ)", "sampling": "random",
              "unit": "path", "phase": "train", "generality": "generic"},
)
class DropPath(DropkitModule):
    """Module form of :func:`drop_path`. Args: p (default 0.1), mode ("row" | "batch"), scale_by_keep, generator."""

    repr_fields = ("mode", "scale_by_keep")

    def __init__(self, p: float = 0.1, mode: str = "row", scale_by_keep: bool = True,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator=generator)
        self.mode = check_choice(mode, "mode", self.method_name, MODES)
        self.scale_by_keep = check_bool(scale_by_keep, "scale_by_keep", self.method_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return drop_path(x, self.p, training=True, mode=self.mode, scale_by_keep=self.scale_by_keep,
                         generator=self.generator)
