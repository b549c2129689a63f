"""The dental-imaging input-dropout recipe: its edge preprocessing (in torch, batched, deterministic) and its MLP.

"Dropout Regularization for Automatic Segmented Dental Images", ACIIDS 2021 companion, CCIS 1371, ch. 21
(DOI 10.1007/978-981-16-1685-3_21): morphological erosion to remove noise, then Canny edge detection to extract
edge features, fed to an MLP with dropout 0.3 on its input (:class:`EdgeMLP`). The paper's kernel, blur and
thresholds are unknown; the defaults are common textbook choices: 3×3 erosion once, Gaussian σ = 1, Canny thresholds (100, 200) on the 8-bit scale, i.e. 100/255 and 200/255 for
images in [0, 1].

The Canny steps follow OpenCV's ``cv2.Canny`` (which expects an already blurred image): 3×3 Sobel gradients
(unnormalised, so thresholds carry over from 8-bit images), the L1 magnitude |gx| + |gy| unless
``l2_gradient=True``, non-maximum suppression along the gradient direction quantised to 0°/45°/90°/135°, and
hysteresis: weak pixels (> low) are kept when 8-connected to a strong one (> high). Borders are reflected
(OpenCV's ``BORDER_REFLECT_101``); erosion treats outside pixels as +∞, as OpenCV does, so the border never
erodes. The result is not bit-identical to OpenCV (rounding of 8-bit intermediates and direction bins differ at
the margins), but every step is the textbook one and the output is a binary {0, 1} edge map.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dropkit.methods.dropout import Dropout
from dropkit.validation import check_positive_int, check_probability, check_real

__all__ = ["gaussian_blur", "erode", "sobel", "canny", "edges", "Edges", "EdgeMLP", "edge_mlp",
           "DENTAL_INPUT_DROPOUT"]


def _as_batch(images: Any, who: str) -> tuple[torch.Tensor, bool]:
    """(N, 1, H, W) float view of (N, 1, H, W) or (N, H, W) images in [0, 1]; uint8 is divided by 255."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{who}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif not images.is_floating_point():
        raise TypeError(f"{who}: images must be floating point in [0, 1] or uint8, got dtype {images.dtype}")
    if images.ndim == 3:
        return images.unsqueeze(1), True
    if images.ndim == 4 and images.shape[1] == 1:
        return images, False
    raise ValueError(f"{who}: images must be (N, 1, H, W) or (N, H, W), got shape {tuple(images.shape)}")


def _restore(x: torch.Tensor, squeezed: bool) -> torch.Tensor:
    return x.squeeze(1) if squeezed else x


def _reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    # 'reflect' (= BORDER_REFLECT_101) needs pad < size; tiny images fall back to 'replicate'
    mode = "reflect" if pad < min(x.shape[-2:]) else "replicate"
    return F.pad(x, (pad, pad, pad, pad), mode=mode)


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(images: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur with a (2⌈3σ⌉+1)-tap kernel and reflected borders. Shape and range kept."""
    x, squeezed = _as_batch(images, "gaussian_blur")
    sigma = check_real(sigma, "sigma", "gaussian_blur", low=0.0)
    if sigma == 0.0:
        return _restore(x, squeezed)
    k = _gaussian_kernel(sigma, x.device, x.dtype)
    r = k.numel() // 2
    x = _reflect_pad(x, r)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return _restore(x, squeezed)


def erode(images: torch.Tensor, kernel_size: int = 3, iterations: int = 1) -> torch.Tensor:
    """Grey-scale erosion by a square of ones: the minimum over each k×k window, ``iterations`` times.

    Outside pixels count as +∞ (OpenCV's default), so the border itself does not erode. Never increases any
    pixel, hence never grows the foreground.
    """
    x, squeezed = _as_batch(images, "erode")
    kernel_size = check_positive_int(kernel_size, "kernel_size", "erode")
    iterations = check_positive_int(iterations, "iterations", "erode", minimum=0)
    if kernel_size % 2 == 0:
        raise ValueError(f"erode: kernel_size must be odd, got {kernel_size}")
    pad = kernel_size // 2
    for _ in range(iterations):
        # max_pool pads with -inf, so -max_pool(-x) pads with +inf: the minimum ignores the outside
        x = -F.max_pool2d(-x, kernel_size, stride=1, padding=pad)
    return _restore(x, squeezed)


def sobel(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised 3×3 Sobel derivatives (gx along width, gy along height) with reflected borders."""
    x, squeezed = _as_batch(images, "sobel")
    smooth = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    diff = torch.tensor([-1.0, 0.0, 1.0], device=x.device, dtype=x.dtype)
    kx = (smooth[:, None] * diff[None, :]).view(1, 1, 3, 3)
    ky = (diff[:, None] * smooth[None, :]).view(1, 1, 3, 3)
    xp = _reflect_pad(x, 1)
    return _restore(F.conv2d(xp, kx), squeezed), _restore(F.conv2d(xp, ky), squeezed)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x[i + dy, j + dx] with zeros outside."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[..., 1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w]


def canny(
    images: torch.Tensor,
    low_threshold: float = 100 / 255,
    high_threshold: float = 200 / 255,
    *,
    l2_gradient: bool = False,
) -> torch.Tensor:
    """Canny edges of (already blurred) images: a {0, 1} map of the input's shape and dtype.

    Args:
        images: (N, 1, H, W) or (N, H, W), values in [0, 1].
        low_threshold, high_threshold: hysteresis thresholds on the Sobel magnitude of [0, 1] images (the 8-bit
            thresholds divided by 255).
        l2_gradient: use sqrt(gx² + gy²) instead of OpenCV's default |gx| + |gy|.
    """
    x, squeezed = _as_batch(images, "canny")
    low = check_real(low_threshold, "low_threshold", "canny", low=0.0)
    high = check_real(high_threshold, "high_threshold", "canny", low=0.0)
    if low > high:
        raise ValueError(f"canny: low_threshold must be ≤ high_threshold, got {low} > {high}")
    x = x.float()
    gx, gy = sobel(x)
    mag = torch.sqrt(gx * gx + gy * gy) if l2_gradient else gx.abs() + gy.abs()
    # direction bins: 0 = horizontal gradient (compare left/right), 1 = 45°, 2 = vertical, 3 = 135°
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0
    bin_ = torch.round(angle / 45.0).long() % 4
    neighbours = ((0, 1), (1, 1), (1, 0), (1, -1))  # (dy, dx) along the gradient; the opposite is (-dy, -dx)
    is_max = torch.zeros_like(mag, dtype=torch.bool)
    for b, (dy, dx) in enumerate(neighbours):  # four direction bins, each a whole-image comparison
        fwd, bwd = _shift(mag, dy, dx), _shift(mag, -dy, -dx)
        # '>' on one side and '>=' on the other keeps exactly one pixel of a two-pixel-wide plateau
        is_max |= (bin_ == b) & (mag > bwd) & (mag >= fwd)
    thin = mag * is_max
    strong = thin > high
    weak = thin > low
    edges_ = strong
    # hysteresis: grow the strong set inside the weak set through 8-neighbourhoods until it stops changing
    for _ in range(x.shape[-1] * x.shape[-2]):
        grown = (F.max_pool2d(edges_.float(), 3, stride=1, padding=1) > 0) & weak
        if torch.equal(grown, edges_):
            break
        edges_ = grown
    return _restore(edges_.to(images.dtype if images.is_floating_point() else torch.float32), squeezed)


def edges(
    images: torch.Tensor,
    *,
    erosion_kernel: int = 3,
    erosion_iterations: int = 1,
    sigma: float = 1.0,
    low_threshold: float = 100 / 255,
    high_threshold: float = 200 / 255,
    l2_gradient: bool = False,
) -> torch.Tensor:
    """The recipe's preprocessing: erosion → Gaussian blur → Canny. Returns a {0, 1} edge map, same shape.

    Deterministic (no randomness) and batched: each image's result does not depend on the others.
    Set ``erosion_iterations=0`` to skip the erosion, ``sigma=0`` to skip the blur.
    """
    if isinstance(images, torch.Tensor) and images.is_floating_point() and images.numel() > 0:
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"edges: images must be in [0, 1] (or uint8), got values in [{lo:.4g}, {hi:.4g}]")
    x = erode(images, erosion_kernel, erosion_iterations)
    x = gaussian_blur(x, sigma)
    out = canny(x, low_threshold, high_threshold, l2_gradient=l2_gradient)
    return out


class Edges:
    """Callable form of :func:`edges` with fixed settings, for a dataset pipeline (``Edges()(images)``)."""

    def __init__(self, **settings: Any) -> None:
        allowed = {"erosion_kernel", "erosion_iterations", "sigma", "low_threshold", "high_threshold", "l2_gradient"}
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise ValueError(f"Edges: unknown setting(s) {unknown}; allowed: {sorted(allowed)}")
        self.settings = settings

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return edges(images, **self.settings)

    def __repr__(self) -> str:
        return f"Edges({', '.join(f'{k}={v!r}' for k, v in self.settings.items())})"


# ------------------------------------------------------------------------------------------------- the model
# One Dropout layer, rate 0.3, between the input and the first hidden layer, none in the hidden layers; the
# comparison model has no dropout at all (89.0 % → 91.3 % precision and recall in the paper, one run). Keras'
# ``Dropout`` is inverted element-wise dropout, which is dropkit's ``dropout``. The hidden sizes are not published;
# the default (512, 512) equals the lab's plain MLP, so ``EdgeMLP(..., p_in=0.0)`` *is* that MLP and a comparison
# differs only by the input dropout. The constructor follows the lab's model signature and sets
# ``insertion_points`` / ``probe_point`` like the lab's models, so the lab registers it as model ``edge_mlp``.

#: the paper's input-dropout rate
DENTAL_INPUT_DROPOUT = 0.3


class EdgeMLP(nn.Module):
    """Flatten → Dropout(p_in) → (Linear → ReLU) × len(hidden) → Linear.

    Args:
        in_channels, num_classes, image_size: as the lab's models (image_size = (H, W)).
        hidden: hidden layer widths (default (512, 512); the paper's are unknown).
        p_in: input dropout rate (default 0.3, the paper's). ``p_in=0`` builds the no-dropout comparison model
            (no dropout layer at all).
        generator: optional generator for the input-dropout masks.

    Shapes: input (N, C, H, W) → logits (N, num_classes).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        hidden: Sequence[int] = (512, 512),
        p_in: float = DENTAL_INPUT_DROPOUT,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        in_channels = check_positive_int(in_channels, "in_channels", "edge_mlp")
        num_classes = check_positive_int(num_classes, "num_classes", "edge_mlp")
        if len(image_size) != 2:
            raise ValueError(f"edge_mlp: image_size must be (H, W), got {tuple(image_size)}")
        h, w = (check_positive_int(s, "image_size", "edge_mlp") for s in image_size)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or len(hidden) == 0:
            raise ValueError(f"edge_mlp: hidden must be a non-empty sequence of widths, got {hidden!r}")
        hidden = [check_positive_int(f, "hidden", "edge_mlp") for f in hidden]
        self.p_in = check_probability(p_in, "p_in", "edge_mlp")
        self.flatten = nn.Flatten()
        self.input_dropout: nn.Module = Dropout(self.p_in, generator=generator) if self.p_in > 0 else nn.Identity()
        layers: list[tuple[str, nn.Module]] = []
        f_in = in_channels * h * w
        for i, f_out in enumerate(hidden, start=1):
            layers += [(f"fc{i}", nn.Linear(f_in, f_out)), (f"relu{i}", nn.ReLU())]
            f_in = f_out
        self.body = nn.Sequential(OrderedDict(layers))
        self.head = nn.Linear(f_in, num_classes)
        self.insertion_points = {"fc": [f"body.relu{i}" for i in range(1, len(hidden) + 1)],
                                 "input": ["input_dropout"]}
        self.probe_point = "body"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.input_dropout(self.flatten(x))))


def edge_mlp(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: Sequence[int] = (28, 28),
    *,
    hidden: Sequence[int] = (512, 512),
    input_dropout: bool = True,
    p_in: float = DENTAL_INPUT_DROPOUT,
    generator: torch.Generator | None = None,
) -> EdgeMLP:
    """Factory: the recipe's MLP (``input_dropout=True``, rate ``p_in``) or its no-dropout comparison model."""
    if not isinstance(input_dropout, bool):
        raise TypeError(f"edge_mlp: input_dropout must be True or False, got {input_dropout!r}")
    return EdgeMLP(in_channels, num_classes, image_size, hidden, p_in if input_dropout else 0.0, generator)
