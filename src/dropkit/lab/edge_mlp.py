"""The dental-imaging recipe's model: an MLP with dropout between its input and its first hidden layer.

"Dropout Regularization for Automatic Segmented Dental Images", ACIIDS 2021 companion, CCIS 1371, ch. 21
(DOI 10.1007/978-981-16-1685-3_21): a Keras ``Sequential`` model on edge-segmented images (see
``dropkit.transforms.edges``) with **one Dropout layer, rate 0.3, between the input and the first hidden
layer** and none in the hidden layers; the comparison model has no dropout at all (89.0 % → 91.3 % precision and
recall, one run). Keras' ``Dropout`` is inverted element-wise dropout (per sample, per element, survivors
scaled by 1/(1 − rate) in training, identity in eval), which is dropkit's ``dropout``. The hidden sizes are not
published; the default (512, 512) equals the lab's plain MLP, so ``EdgeMLP(..., p_in=0.0)`` *is* that MLP and a
comparison differs only by the input dropout.

The constructor follows the lab's model signature ``(in_channels, num_classes, image_size, **options)`` and sets
``insertion_points`` / ``probe_point`` like the lab's models, so the lab can register it as a model name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from dropkit.methods.dropout import Dropout
from dropkit.validation import check_positive_int, check_probability

__all__ = ["EdgeMLP", "edge_mlp"]

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
