"""Heuristic Dropout (Shi, Liu, Tao & Yuan, "Heuristic Dropout: An Efficient Regularization Method for Medical
Image Segmentation Models", ICASSP 2022, pp. 1101–1105). Official code: ``sdc17/HeuristicDropout``.

Per image and channel (paper Alg. 1–2): quantise the activations as ``round(tanh(a) · b)`` (b = 10 bins), take the
entropy e of the histogram of those levels and the variance v of the channel, and score ``m = e + k/(v + ε)``
(ε = 1e-7). The ``round(p · C)`` channels with the highest scores — uncertain (high entropy) or nearly constant
(low variance) features, taken as co-adapted — are "dropped": replaced by their 3×3 Laplacian response
(kernel [[-1,-1,-1],[-1,8,-1],[-1,-1,-1]], zero padding), which the paper found a little better than zeros
(``fill="zero"`` gives the zero variant). The others pass unchanged. No rescaling; selection is deterministic
(Alg. 1 sorts and takes the top p·C — the prose's "drop with higher probability" is informal). Eval is the identity.

Reading implemented (``shared/specs/resolutions.md`` A3, spec §7):

* k = 2 by default, as in the official code and the paper's most stable setting (Fig. 3: k = 3 has the best mean
  Dice, k = 2 the tightest spread); ``k`` is a parameter.
* p = 0.1 (official code default; the rate behind Table 1 is not stated). ``round`` is Python's, as in the code.
* Histogram: one flat ``scatter_add_`` over all N·C·(2b + 1) bins at once (a static shape, so it compiles; no
  N·C·HW·(b + 1) comparison tensor as in the official code). Levels are counted from −b to b; for non-negative
  (post-ReLU) inputs this is exactly the official histogram over 0…b. The official code silently ignores negative
  levels (and yields an undefined entropy when a channel is entirely negative); here they count. A NaN activation
  is counted at level 0 rather than crashing the histogram.
* Scores are computed in float32 whatever the input dtype (k/(v + ε) overflows fp16); the variance is unbiased as
  in ``torch.var``, and 0 for 1×1 maps.
* The Laplacian is computed only for the selected channels (gathered, one small convolution), not for all N·C.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dropkit.base import DropkitModule
from dropkit.registry import register
from dropkit.validation import (
    check_choice,
    check_float_tensor,
    check_ndim,
    check_positive_int,
    check_probability,
    check_real,
)

__all__ = ["heuristic_dropout", "HeuristicDropout", "heuristic_scores", "LAPLACE_KERNEL"]

_NAME = "heuristic_dropout"
_FILLS = ("laplacian", "zero")
_EPS = 1e-7
_FLOAT_EXACT_LIMIT = 2**24  # float32 holds every integer below this exactly
LAPLACE_KERNEL = ((-1.0, -1.0, -1.0), (-1.0, 8.0, -1.0), (-1.0, -1.0, -1.0))


def heuristic_scores(x: torch.Tensor, k: float = 2.0, bins: int = 10) -> torch.Tensor:
    """The heuristic ``entropy + k/(variance + 1e-7)`` of every channel of every sample.

    Args:
        x: (N, C, H, W) tensor (read without gradient).
        k: weight of the inverse variance.
        bins: b in ``round(tanh(a) · b)``.

    Returns:
        (N, C) float32 scores.
    """
    n, c, h, w = x.shape
    levels_per_channel = 2 * bins + 1
    with torch.no_grad():
        xf = x.detach().float().contiguous()  # no copy for a contiguous float32 input
        var = xf.var(dim=(2, 3), correction=1 if h * w > 1 else 0)
        # Alg. 2: level = round(tanh(a)·b) ∈ [−b, b]; NaN activations are counted in level 0 instead of crashing.
        codes = torch.tanh(xf).mul_(bins).round_().nan_to_num_(nan=0.0)
        # One flat histogram for all (n, c): bin index = (n·C + c)·(2b + 1) + level + b.
        exact_in_float = n * c * levels_per_channel < _FLOAT_EXACT_LIMIT  # then add the offsets before converting to int64
        offsets = torch.arange(n * c, device=x.device, dtype=torch.float32 if exact_in_float else torch.int64)
        offsets = (offsets * levels_per_channel + bins).view(n, c, 1, 1)
        if exact_in_float:
            index = codes.add_(offsets).view(-1).to(torch.int64)
        else:
            index = (codes.to(torch.int64) + offsets).view(-1)
        ones = torch.ones((1,), device=x.device, dtype=torch.float32).expand(index.numel())
        counts = torch.zeros(n * c * levels_per_channel, device=x.device, dtype=torch.float32)
        counts = counts.scatter_add_(0, index, ones).view(n * c, levels_per_channel)
        prob = counts / (h * w)
        entropy = -torch.special.xlogy(prob, prob).sum(dim=1).view(n, c)
        return entropy + k / (var + _EPS)


def heuristic_dropout(
    x: torch.Tensor,
    p: float = 0.1,
    *,
    k: float = 2.0,
    bins: int = 10,
    fill: str = "laplacian",
    training: bool = True,
) -> torch.Tensor:
    """Heuristic Dropout (deterministic: no generator).

    Args:
        x: input of shape (N, C, H, W).
        p: fraction of channels transformed per sample; ``round(p · C)`` of them.
        k: weight of the inverse variance in the score (default 2; the paper's best mean is 3).
        bins: quantisation bins b (default 10, official code).
        fill: ``"laplacian"`` (3×3 Laplacian response, paper) or ``"zero"``.
        training: when False, ``x`` is returned unchanged.

    Returns:
        Tensor of ``x``'s shape, dtype and memory format; the selected channels replaced, the others identical.
    """
    check_float_tensor(x, _NAME)
    check_ndim(x, _NAME, (4,), "(N, C, H, W)")
    p = check_probability(p, "p", _NAME)
    k = check_real(k, "k", _NAME, low=0.0)
    bins = check_positive_int(bins, "bins", _NAME)
    check_choice(fill, "fill", _NAME, _FILLS)
    n, c, h, w = x.shape
    n_drop = round(p * c)
    if not training or n_drop == 0:
        return x

    top = heuristic_scores(x, k, bins).topk(n_drop, dim=1).indices  # (N, n_drop), Alg. 1's sorted top p·C
    if fill == "zero":
        keep = torch.ones((n, c), device=x.device, dtype=x.dtype).scatter(1, top, 0.0)
        return x * keep.view(n, c, 1, 1)
    rows = torch.arange(n, device=x.device).view(n, 1).expand(n, n_drop)
    selected = x[rows, top].reshape(n * n_drop, 1, h, w)  # only the channels to transform
    kernel = torch.tensor(LAPLACE_KERNEL, device=x.device, dtype=x.dtype).view(1, 1, 3, 3)
    laplace = F.conv2d(selected, kernel, padding=1).view(n, n_drop, h, w)
    return x.index_put((rows, top), laplace)


@register(
    _NAME,
    family="guided",
    kind="activation",
    paper="Shi, Liu, Tao & Yuan, Heuristic Dropout: An Efficient Regularization Method for Medical Image "
          "Segmentation Models, ICASSP 2022 (pp. 1101-1105)",
    summary="per sample, the channels with the highest entropy + k/variance are replaced by their 3x3 Laplacian "
            "response (deterministic top-p, no rescaling)",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ|x)", "sampling": "deterministic",
              "unit": "channel", "phase": "train", "generality": "domain-specific"},
)
class HeuristicDropout(DropkitModule):
    """Module form of :func:`heuristic_dropout`.

    Args:
        p: fraction of channels transformed per sample (default 0.1, official code).
        k: inverse-variance weight (default 2.0: official code, most stable in Fig. 3; 3.0 had the best mean).
        bins: quantisation bins (default 10).
        fill: ``"laplacian"`` (default) or ``"zero"``.
        generator: accepted for a uniform interface; unused (the method draws nothing).
    """

    method_name = _NAME
    repr_fields = ("k", "bins", "fill")

    def __init__(
        self,
        p: float = 0.1,
        k: float = 2.0,
        bins: int = 10,
        fill: str = "laplacian",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator=generator)
        self.k = check_real(k, "k", self.method_name, low=0.0)
        self.bins = check_positive_int(bins, "bins", self.method_name)
        self.fill = check_choice(fill, "fill", self.method_name, _FILLS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return heuristic_dropout(x, self.p, k=self.k, bins=self.bins, fill=self.fill, training=True)

