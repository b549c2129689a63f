"""Heuristic Dropout (Shi, Liu, Tao & Yuan, "Heuristic Dropout: An Efficient Regularization Method for Medical
Image Segmentation Models", ICASSP 2022, pp. 1101–1105). Official code: ``sdc17/HeuristicDropout``.

Per image and channel (paper Alg. 1–2): quantise the activations as ``round(tanh(a) · b)`` (b = 10 bins), take the
entropy e of the histogram of those levels and the variance v of the channel, and score ``m = e + k/(v + ε)``
(ε = 1e-7). The ``round(p · C)`` channels with the highest scores — uncertain (high entropy) or nearly constant
(low variance) features, taken as co-adapted — are "dropped": replaced by their 3×3 Laplacian response
(kernel [[-1,-1,-1],[-1,8,-1],[-1,-1,-1]], zero padding), which the paper found a little better than zeros
(``fill="zero"`` gives the zero variant). The others pass unchanged. No rescaling; selection is deterministic
(Alg. 1 sorts and takes the top p·C — the prose's "drop with higher probability" is informal). Eval is the identity.

Reading implemented (``docs/methods/heuristic_dropout.md``):

* k = 2 by default, as in the official code and the paper's most stable setting (Fig. 3: k = 3 has the best mean
  Dice, k = 2 the tightest spread); ``k`` is a parameter.
* p = 0.1 (official code default; the rate behind Table 1 is not stated). ``round`` is Python's, as in the code.
* Levels are computed as ``round(2b·σ(2a)) − b`` (tanh(a) = 2σ(2a) − 1; σ is ~4× cheaper than tanh on the CPU).
  This is ``round(tanh(a)·b)`` up to float rounding: an activation within ~1e-6 of a level boundary (|tanh(a)·b|
  within ~1e-6 of a half-integer) can land on the neighbouring level, about one activation in 10⁷ for N(0, 1)
  inputs, which moves its channel's entropy by ~1/(H·W).
* Histogram: one flat ``bincount`` over all N·C·(2b + 1) bins at once (``scatter_add_`` of the same counts while
  ``torch.compile`` traces, whose shapes must be static; no N·C·HW·(b + 1) comparison tensor as in the official
  code). Levels are counted from −b to b; for non-negative
  (post-ReLU) inputs this is exactly the official histogram over 0…b. The official code silently ignores negative
  levels (and yields an undefined entropy when a channel is entirely negative); here they count. A NaN activation
  is counted at level 0 rather than crashing the histogram.
* Scores are computed in float32 whatever the input dtype (k/(v + ε) overflows fp16); the variance is unbiased as
  in ``torch.var`` (computed by the corrected two-pass formula, exactly 0 for a constant channel), and 0 for 1×1
  maps.
* The Laplacian is computed only for the selected channels (gathered, one depthwise convolution), not for all
  N·C, in one autograd node whose gradient is the same (self-adjoint) map.
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

__all__ = ["heuristic_dropout", "HeuristicDropout", "heuristic_scores", "replace_with_laplacian", "LAPLACE_KERNEL"]

_NAME = "heuristic_dropout"
_FILLS = ("laplacian", "zero")
_EPS = 1e-7
_FLOAT_EXACT_LIMIT = 2**24  # float32 holds every integer below this exactly
LAPLACE_KERNEL = ((-1.0, -1.0, -1.0), (-1.0, 8.0, -1.0), (-1.0, -1.0, -1.0))


def _scores_and_buffer(x: torch.Tensor, k: float, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`heuristic_scores` plus the float32 (N, C, H, W) contiguous scratch buffer it used, free to overwrite.

    Full-size temporaries are what the scores cost on the CPU (each fresh 4 MiB buffer is ~1000 page faults), so
    every full-size step after the first runs in place in one buffer, which the caller may reuse for its output.
    """
    n, c, h, w = x.shape
    hw = h * w
    levels_per_channel = 2 * bins + 1
    with torch.no_grad():
        xf = x.detach().float().contiguous().view(n * c, hw)  # no copy for a contiguous float32 input
        buffer = torch.empty((n, c, h, w), device=x.device, dtype=torch.float32)
        work = buffer.view(n * c, hw)
        # Unbiased variance by the corrected two-pass algorithm, Σd² − (Σd)²/n with d = a − mean: as accurate as
        # torch.var (exactly 0 for a constant channel) and much faster on the CPU than var over (H, W).
        torch.sub(xf, xf.mean(dim=1, keepdim=True), out=work)
        sum_d = work.sum(dim=1)
        var = work.square_().sum(dim=1).sub_(sum_d.square_().div_(hw))
        var = var.clamp_min_(0.0).div_(max(hw - 1, 1)).view(n, c)  # correction 1; 0 for 1×1 maps
        # Alg. 2: level = round(tanh(a)·b) ∈ [−b, b], computed as round(2b·σ(2a)) − b since tanh(a) = 2σ(2a) − 1:
        # σ is ~4× cheaper than tanh on the CPU. The two agree up to float rounding (an activation whose tanh·b is
        # within ~1e-6 of a half-integer can fall on the other side). The bin index level + b is round(2b·σ(2a)) when
        # b is even (a shift by an even integer commutes with round-half-to-even).
        codes = torch.mul(xf, 2.0, out=work).sigmoid_().mul_(2 * bins)
        codes = codes.sub_(bins).round_().add_(bins) if bins % 2 else codes.round_()
        codes = codes.nan_to_num_(nan=float(bins))  # NaN activations are counted in level 0 instead of crashing
        # One flat histogram for all (n, c): bin index = (n·C + c)·(2b + 1) + level + b, counted by one bincount.
        # The int32 indices are written over the codes in place: a fresh full-size int64 index (as scatter_add_
        # needs) costs more in page faults than the whole histogram.
        total_bins = n * c * levels_per_channel
        exact_in_float = total_bins < _FLOAT_EXACT_LIMIT  # then add the offsets before converting to int32
        offsets = torch.arange(n * c, device=x.device, dtype=torch.float32 if exact_in_float else torch.int64)
        offsets = (offsets * levels_per_channel).view(n * c, 1)
        if exact_in_float:
            # In place: the int32 view shares the buffer (each element is read, then written, at one place).
            index = work.view(torch.int32).copy_(codes.add_(offsets))
        else:
            index = codes.to(torch.int64).add_(offsets)
        if torch.compiler.is_compiling():
            # bincount's output size is data-dependent (an unbacked symbol that autograd.Function cannot return
            # around); the same counts from a static-shape scatter_add_.
            counts = torch.zeros(total_bins, device=x.device, dtype=torch.int64)
            counts = counts.scatter_add_(0, index.view(-1).long(), torch.ones_like(counts[:1]).expand(index.numel()))
        else:
            counts = torch.bincount(index.view(-1), minlength=total_bins)
        # −Σ p·log p over the 2b + 1 levels, each term read from a table of the hw + 1 possible values of p·log p
        # (the same float32 values as computing xlogy(p, p) on every bin, at the cost of one gather).
        prob = torch.arange(hw + 1, device=x.device, dtype=torch.float32) / hw
        terms = torch.special.xlogy(prob, prob).index_select(0, counts).view(n * c, levels_per_channel)
        entropy = terms.sum(dim=1).neg_().view(n, c)
        return entropy + k / (var + _EPS), buffer


def heuristic_scores(x: torch.Tensor, k: float = 2.0, bins: int = 10) -> torch.Tensor:
    """The heuristic ``entropy + k/(variance + 1e-7)`` of every channel of every sample.

    Args:
        x: (N, C, H, W) tensor (read without gradient).
        k: weight of the inverse variance.
        bins: b in ``round(tanh(a) · b)``.

    Returns:
        (N, C) float32 scores.
    """
    return _scores_and_buffer(x, k, bins)[0]


def replace_with_laplacian(
    x: torch.Tensor, rows: torch.Tensor, top: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """A copy of ``x`` (written into ``out`` when given) with channels ``x[rows, top]`` replaced by their 3×3
    Laplacian response (zero padding).

    The map is linear and its own adjoint (the kernel is symmetric under a 180° turn, so the transposed
    convolution with zero padding is the same convolution; the other channels pass through), which is why
    :class:`_HeuristicLaplacian` uses it for the gradient too.
    """
    n, n_drop = top.shape
    h, w = x.shape[2], x.shape[3]
    out = x.clone() if out is None else out.copy_(x)  # clone keeps the memory format
    contiguous = x.is_contiguous() and out.is_contiguous()
    if contiguous:  # whole (H·W) rows: index_select / index_copy_ move them as blocks
        flat_rows = (rows * x.shape[1] + top).view(-1)
        selected = x.view(-1, h * w).index_select(0, flat_rows).view(1, n * n_drop, h, w)
    else:
        selected = x[rows, top].reshape(1, n * n_drop, h, w)
    # One depthwise convolution over all selected maps: the same result as a 1-channel conv, ~5× faster on CPU.
    kernel = torch.tensor(LAPLACE_KERNEL, device=x.device, dtype=x.dtype).view(1, 1, 3, 3)
    laplace = F.conv2d(selected, kernel.expand(n * n_drop, 1, 3, 3), padding=1, groups=n * n_drop)
    if contiguous:
        out.view(-1, h * w).index_copy_(0, flat_rows, laplace.view(n * n_drop, h * w))
    else:
        out[rows, top] = laplace.view(n, n_drop, h, w)
    return out


class _HeuristicLaplacian(torch.autograd.Function):
    """Select the top-scoring channels and replace them by their Laplacian, with a hand-written gradient.

    The map x → y is linear once the channels are chosen (the choice carries no gradient) and self-adjoint, so
    the gradient is the same map applied to the output gradient: one copy, where the autograd graph of
    index/put builds and adds two full-size gradients. The output is written into the scores' scratch buffer
    when its dtype and layout fit (one full-size allocation fewer). The backward uses differentiable ops, so
    double backward works.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: float, bins: int, n_drop: int) -> torch.Tensor:
        scores, buffer = _scores_and_buffer(x, k, bins)
        top = scores.topk(n_drop, dim=1).indices  # (N, n_drop), Alg. 1's sorted top p·C
        rows = torch.arange(x.shape[0], device=x.device).view(-1, 1).expand_as(top)
        ctx.save_for_backward(rows, top)
        reuse = x.dtype == torch.float32 and x.is_contiguous()
        return replace_with_laplacian(x, rows, top, buffer if reuse else None)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, top = ctx.saved_tensors
        return replace_with_laplacian(grad, rows, top), None, None, None


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
    if not training or n_drop == 0 or n == 0:  # an empty batch: nothing to select (and no zero-group conv)
        return x

    if fill == "zero":
        top = heuristic_scores(x, k, bins).topk(n_drop, dim=1).indices  # (N, n_drop), Alg. 1's sorted top p·C
        keep = torch.ones((n, c), device=x.device, dtype=x.dtype).scatter(1, top, 0.0)
        return x * keep.view(n, c, 1, 1)
    return _HeuristicLaplacian.apply(x, k, bins, n_drop)  # only the selected channels are convolved


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

