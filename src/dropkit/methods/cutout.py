"""Cutout (DeVries & Taylor, 2017, arXiv:1708.04552): zero a random square of each input image.

Page: ``docs/methods/cutout.md`` (Cutout sits beside SpatialDropout and DropBlock as a structural method that
drops "a square of regions" of the input/feature space). Per sample, ``count`` squares of side ``size`` are zeroed
in every channel; each square's centre is drawn uniformly over the whole image, so a square near the border is
clipped by it (the paper found letting the patch fall partly outside the image important, and it is what the
official code does). No rescaling; eval is the identity. The paper's settings: one 16×16 square on CIFAR-10
(the default here), 8×8 on CIFAR-100, 20×20 on SVHN.

``p`` is the probability that a sample is cut at all (default 1, as in the paper, which always applies it); a
schedule can ramp it. Differences from the official code, on purpose: a square of odd side ``size`` covers exactly
``size`` rows (the official ``y ± size // 2`` covers ``size − 1``), and the centre is drawn with torch's RNG on the
input's device, for a whole batch at once.

It is an input-space method (taxonomy space "input"): the lab applies it to the images before the model, but any
(N, C, H, W) tensor works, so it is also usable on feature maps.
"""

from __future__ import annotations

import torch

from dropkit.base import DropkitModule
from dropkit.masks import sample_uniform
from dropkit.registry import register
from dropkit.validation import check_float_tensor, check_generator, check_ndim, check_positive_int, check_probability

__all__ = ["cutout", "cutout_mask", "Cutout"]

_NAME = "cutout"


@torch.no_grad()
def cutout_mask(
    like: torch.Tensor, size: int, count: int = 1, p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep mask (N, 1, H, W) in ``like``'s dtype: 0 on the union of ``count`` clipped squares of side ``size``
    per sample (for the samples selected with probability ``p``), 1 elsewhere."""
    n, _, h, w = like.shape
    # Centres uniform over the image: ⌊U·H⌋ ∈ {0, …, H−1} (float32 draws, exact for any realistic H).
    centres = sample_uniform((2, n, count), like, generator)
    cy = (centres[0] * h).long().clamp_(max=h - 1)
    cx = (centres[1] * w).long().clamp_(max=w - 1)
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=like.device)
    cols = torch.arange(w, device=like.device)
    in_rows = (rows >= top.unsqueeze(-1)) & (rows < (top + size).unsqueeze(-1))  # (N, count, H)
    in_cols = (cols >= left.unsqueeze(-1)) & (cols < (left + size).unsqueeze(-1))  # (N, count, W)
    cut = (in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2)).any(dim=1)  # (N, H, W)
    if p < 1.0:
        cut &= (sample_uniform((n, 1, 1), like, generator) < p)
    return (~cut).unsqueeze(1).to(like.dtype)


def cutout(
    x: torch.Tensor,
    p: float = 1.0,
    *,
    size: int = 16,
    count: int = 1,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero ``count`` random squares of side ``size`` in every channel of each (selected) sample.

    Args:
        x: (N, C, H, W) images or feature maps.
        p: probability that a sample is cut (default 1).
        size: side of each square in pixels (clipped by the border when the centre is near it).
        count: squares per sample (they may overlap).
        training: when False, ``x`` is returned unchanged.
        generator: optional generator for the centres.
    """
    method = _NAME
    check_float_tensor(x, method)
    check_ndim(x, method, (4,), "(N, C, H, W)")
    p = check_probability(p, "p", method)
    size = check_positive_int(size, "size", method)
    count = check_positive_int(count, "count", method)
    generator = check_generator(generator, x, method)
    if not training or p == 0.0:
        return x
    return x * cutout_mask(x, size, count, p, generator)


@register(
    _NAME,
    family="related",
    kind="activation",
    paper="DeVries & Taylor, \"Improved Regularization of Convolutional Neural Networks with Cutout\", 2017, "
          "arXiv:1708.04552",
    summary="one random square (size 16, centre anywhere, clipped by the border) of each input zeroed in "
            "training, identity at eval",
    taxonomy={"element": "data", "space": "input", "theta": "p(θ)", "sampling": "random",
              "unit": "region", "phase": "train", "generality": "domain-specific"},
)
class Cutout(DropkitModule):
    """Module form of :func:`cutout`.

    Args:
        p: probability that a sample is cut (default 1, as in the paper).
        size: square side in pixels (default 16, the paper's CIFAR-10 value; 8 for CIFAR-100, 20 for SVHN).
        count: squares per sample (default 1).
        generator: optional ``torch.Generator``.
    """

    repr_fields = ("size", "count")

    def __init__(self, p: float = 1.0, size: int = 16, count: int = 1, generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator=generator)
        self.size = check_positive_int(size, "size", self.method_name)
        self.count = check_positive_int(count, "count", self.method_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return cutout(x, self.p, size=self.size, count=self.count, training=True, generator=self.generator)
