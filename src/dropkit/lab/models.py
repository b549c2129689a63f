"""The lab's models: a small CNN, a small CIFAR-style ResNet and a 2-D U-Net for any image from 8×8 up, a small
1-D CNN for signals (C, L) from length 8 up, an MLP for any input (it flattens), and the user's own model
(``FILE.py:NAME``, see ``dropkit.lab.user_model``).

Every model names its insertion points, grouped by kind, in ``insertion_points`` (names as in
``model.named_modules()``; a method is attached *after* each named module with ``dropkit.attach``), and names in
``probe_point`` the module whose output feeds the final layer (what the co-adaptation probe masks). The points of
a group are the same for every method, so a comparison is fair (a model without ``insertion_points``, such as the
user's own, gets its points found automatically: ``dropkit.lab.insertion``):

- ``"conv"``: feature maps (N, C, H, W) — the last two conv stages of the CNN and ResNet (where the DropBlock
  paper places its layers), between the two convolutions of every U-Net stage (Heuristic Dropout's placement);
  (N, C, L) at the last two stages of the 1-D CNN.
- ``"fc"``: flat features (N, F) — before the CNN's/ResNet's classifier, after each hidden layer of the MLP.
- ``"branch"``: the ResNet's residual branches before the addition (where drop-path acts).
- ``"input"``: the inputs entering the model (input-space methods such as Cutout); for the MLP, the flattened
  input (input dropout).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dropkit.lab.config import VARIANTS

__all__ = ["SmallCNN", "SignalCNN", "ResNet", "MLP", "UNet", "MODELS", "MODEL_INPUTS", "build_model",
           "feature_shapes"]


def _pool_or_identity(size: int) -> nn.Module:
    # Halve maps while they stay at least 2×2 after pooling, so tiny images keep spatial structure.
    return nn.MaxPool2d(2) if size >= 4 else nn.Identity()


# Block regularizers the lab compares as model variants (they replace layers; they are not inserted after one):
# "maxout" replaces each conv/linear + ReLU by a 2-piece maxout layer (Goodfellow et al. 2013; it has 2× the
# weights of the layer it replaces), "stochastic_pooling" each 2×2 max-pool by stochastic pooling (Zeiler & Fergus
# 2013; after a ReLU, so inputs are non-negative), "standout" each hidden linear + ReLU of the MLP by a Standout
# layer (Ba & Frey 2013). The insertion points keep their names (a replaced ReLU becomes an identity).
CNN_VARIANTS = VARIANTS["cnn"]
MLP_VARIANTS = VARIANTS["mlp"]


def _variant_conv(c_in: int, c_out: int, variant: str | None) -> nn.Module:
    if variant == "maxout":
        from dropkit.methods.maxout import Maxout

        return Maxout(c_in, c_out, pieces=2, kernel_size=3, padding=1)
    return nn.Conv2d(c_in, c_out, 3, padding=1)


def _variant_act(variant: str | None) -> nn.Module:
    return nn.Identity() if variant == "maxout" else nn.ReLU()


def _variant_pool(pool: nn.Module, variant: str | None) -> nn.Module:
    if variant == "stochastic_pooling" and isinstance(pool, nn.MaxPool2d):
        from dropkit.methods.stochastic_pooling import StochasticPool2d

        return StochasticPool2d(2)
    return pool


class SmallCNN(nn.Module):
    """The pilot's configuration B: Conv3×3(C→w)–ReLU–MaxPool → Conv(w→2w)–ReLU–MaxPool → [conv point] →
    Conv(2w→4w)–ReLU → [conv point] → Flatten → [fc point] → Linear. No BatchNorm (it regularises by itself and
    masked the methods' effects in the pilot). ``width=32`` gives 155k parameters at 28×28."""

    def __init__(self, in_channels: int, num_classes: int, image_size: Sequence[int], width: int = 32,
                 variant: str | None = None) -> None:
        super().__init__()
        if variant not in CNN_VARIANTS:
            raise ValueError(f"cnn: variant must be one of {CNN_VARIANTS}, got {variant!r}")
        h, w = image_size
        pool1 = _pool_or_identity(min(h, w))
        h1, w1 = (h // 2, w // 2) if isinstance(pool1, nn.MaxPool2d) else (h, w)
        pool2 = _pool_or_identity(min(h1, w1))
        h2, w2 = (h1 // 2, w1 // 2) if isinstance(pool2, nn.MaxPool2d) else (h1, w1)
        pool1, pool2 = (_variant_pool(p, variant) for p in (pool1, pool2))
        self.features = nn.Sequential(OrderedDict([
            ("conv1", _variant_conv(in_channels, width, variant)), ("relu1", _variant_act(variant)), ("pool1", pool1),
            ("conv2", _variant_conv(width, 2 * width, variant)), ("relu2", _variant_act(variant)), ("pool2", pool2),
            ("conv3", _variant_conv(2 * width, 4 * width, variant)), ("relu3", _variant_act(variant)),
        ]))
        self.input = nn.Identity()
        self.flatten = nn.Flatten()
        self.head = nn.Linear(4 * width * h2 * w2, num_classes)
        self.insertion_points = {"conv": ["features.pool2", "features.relu3"], "fc": ["flatten"], "input": ["input"]}
        self.probe_point = "features"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.features(self.input(x))))


def _pool1d_or_identity(length: int) -> nn.Module:
    # As _pool_or_identity: halve signals while they stay at least 2 long after pooling.
    return nn.MaxPool1d(2) if length >= 4 else nn.Identity()


class SignalCNN(nn.Module):
    """The small CNN's 1-D twin for signals (C, L): Conv1d k5 (C→w)–ReLU–MaxPool → Conv1d(w→2w)–ReLU–MaxPool →
    [conv point] → Conv1d(2w→4w)–ReLU → [conv point] → global average pool → Flatten → [fc point] → Linear.

    The global average pool (as in Wang, Yan & Oates's fully convolutional time-series baseline, 2017) keeps the
    classifier's size independent of the signal's length. No BatchNorm, for the same reason as the small CNN."""

    def __init__(self, in_channels: int, num_classes: int, spatial_size: Sequence[int], width: int = 32) -> None:
        super().__init__()
        if len(spatial_size) != 1:
            raise ValueError(f"cnn1d: signals must be (C, L), got a spatial size {tuple(spatial_size)}")
        length = spatial_size[0]
        pool1 = _pool1d_or_identity(length)
        pool2 = _pool1d_or_identity(length // 2 if isinstance(pool1, nn.MaxPool1d) else length)
        self.input = nn.Identity()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv1d(in_channels, width, 5, padding=2)), ("relu1", nn.ReLU()), ("pool1", pool1),
            ("conv2", nn.Conv1d(width, 2 * width, 5, padding=2)), ("relu2", nn.ReLU()), ("pool2", pool2),
            ("conv3", nn.Conv1d(2 * width, 4 * width, 5, padding=2)), ("relu3", nn.ReLU()),
        ]))
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(4 * width, num_classes)
        self.insertion_points = {"conv": ["features.pool2", "features.relu3"], "fc": ["flatten"], "input": ["input"]}
        self.probe_point = "features"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.features(self.input(x)))))


class BasicBlock(nn.Module):
    """He et al.'s basic residual block (two 3×3 convs with BatchNorm, identity or 1×1 projection shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(branch + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet (He et al. 2016, §4.2): 3×3 stem, three stages of ``blocks`` basic blocks with widths
    w, 2w, 4w (stride 2 at stages 2 and 3 while maps are at least 4×4), global average pooling, Linear.
    ``blocks=1`` is ResNet-8, ``blocks=3`` ResNet-20."""

    def __init__(self, in_channels: int, num_classes: int, image_size: Sequence[int], width: int = 16,
                 blocks: int = 1) -> None:
        super().__init__()
        self.input = nn.Identity()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        size, c_in, layers = min(image_size), width, []
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            stride = 2 if stage > 0 and size >= 4 else 1
            size = math.ceil(size / stride)
            layer = nn.Sequential(*[BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                                    for i in range(blocks)])
            layers.append(layer)
            c_in = c_out
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(4 * width, num_classes)
        self.insertion_points = {
            "conv": [f"layer{s}.{i}" for s in (2, 3) for i in range(blocks)],
            "branch": [f"layer{s}.{i}.bn2" for s in (1, 2, 3) for i in range(blocks)],
            "fc": ["flatten"],
            "input": ["input"],
        }
        self.probe_point = "layer3"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(self.input(x)))))
        return self.head(self.flatten(self.pool(x)))


class MLP(nn.Module):
    """Flatten → (Linear → ReLU) × len(hidden) → Linear; points after every hidden ReLU and on the input.

    Takes any input: ``spatial_size`` is (H, W) for images, (L,) for signals, () for flat features (then
    ``in_channels`` is the number of features)."""

    def __init__(self, in_channels: int, num_classes: int, spatial_size: Sequence[int] = (),
                 hidden: Sequence[int] = (512, 512), variant: str | None = None) -> None:
        super().__init__()
        if variant not in MLP_VARIANTS:
            raise ValueError(f"mlp: variant must be one of {MLP_VARIANTS}, got {variant!r}")
        self.input = nn.Identity()
        self.flatten = nn.Flatten()
        layers: list[tuple[str, nn.Module]] = []
        f_in = in_channels * math.prod(spatial_size)
        for i, f_out in enumerate(hidden, start=1):
            if variant == "maxout":
                from dropkit.methods.maxout import Maxout

                fc: nn.Module = Maxout(f_in, f_out, pieces=2)
            elif variant == "standout":
                from dropkit.methods.standout import Standout

                fc = Standout(f_in, f_out)  # applies its own ReLU and keep-probability mask
            else:
                fc = nn.Linear(f_in, f_out)
            layers += [(f"fc{i}", fc), (f"relu{i}", nn.ReLU() if variant is None else nn.Identity())]
            f_in = f_out
        self.body = nn.Sequential(OrderedDict(layers))
        self.head = nn.Linear(f_in, num_classes)
        self.insertion_points = {"fc": [f"body.relu{i}" for i in range(1, len(hidden) + 1)], "input": ["flatten"]}
        self.probe_point = "body"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.flatten(self.input(x))))


class UNet(nn.Module):
    """A 2-D U-Net (Ronneberger et al. 2015) built from MONAI's blocks, with ``levels`` down/up steps (by default as
    many as the image allows, at most 3), widths w·2^level, max-pool down, transposed-conv up, skip concatenation,
    a 1×1 head.

    Every stage is MONAI's ``TwoConv`` (Conv3×3–BN–ReLU twice, no bias) and every decoder step MONAI's ``UpCat``
    (deconvolution halving the channels, the skip concatenated, a ``TwoConv``). The insertion points sit between
    the two convolutions of every encoder, bottleneck and decoder stage: after the stage's ``conv_0`` block.
    MONAI's own ``BasicUNet`` has four fixed levels, too deep for the lab's small images, hence the blocks.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: Sequence[int], width: int = 16,
                 levels: int | None = None) -> None:
        super().__init__()
        from monai.networks.nets.basic_unet import TwoConv, UpCat  # imported on use: MONAI loads slowly

        if levels is None:
            levels = max(1, min(3, int(math.log2(min(image_size))) - 2))
        self.levels = levels
        widths = [width * 2**i for i in range(levels + 1)]
        block = {"act": ("relu", {}), "norm": ("batch", {}), "bias": False, "dropout": 0.0}
        self.input = nn.Identity()
        self.enc = nn.ModuleList([TwoConv(2, c_in, c, **block)
                                  for c_in, c in zip([in_channels, *widths[:-2]], widths[:-1])])
        self.pool = nn.MaxPool2d(2)
        self.mid = TwoConv(2, widths[-2], widths[-1], **block)
        self.dec = nn.ModuleList([UpCat(2, widths[i + 1], widths[i], widths[i], **block, upsample="deconv")
                                  for i in reversed(range(levels))])
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.insertion_points = {"conv": [f"enc.{i}.conv_0" for i in range(levels)] + ["mid.conv_0"]
                                 + [f"dec.{i}.convs.conv_0" for i in range(levels)], "input": ["input"]}
        self.probe_point = f"dec.{levels - 1}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)
        skips = []
        for stage in self.enc:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.mid(x)
        for up, skip in zip(self.dec, reversed(skips)):
            x = up(x, skip)  # odd sizes: UpCat pads the upsampled map to its skip's size
        return self.head(x)


def _edge_mlp(*args, **kwargs) -> nn.Module:
    # Imported on use: the recipe imports the method modules, which need not load with the lab's models.
    from dropkit.lab.recipes.dental import EdgeMLP

    return EdgeMLP(*args, **kwargs)


# "edge_mlp": the dental-imaging recipe's MLP, with dropout 0.3 between the input and the first hidden layer built
# in (model_params {"p_in": 0} gives the same MLP without it); pair it with --preprocess edges.
MODELS = {"cnn": SmallCNN, "cnn1d": SignalCNN, "resnet": ResNet, "mlp": MLP, "edge_mlp": _edge_mlp, "unet": UNet}
#: the kind of input each built-in model takes (``dropkit.lab.data.DATA_KINDS``); None: any
MODEL_INPUTS: dict[str, str | None] = {"cnn": "image", "cnn1d": "signal", "resnet": "image", "mlp": None,
                                       "edge_mlp": "image", "unet": "image"}
_MODELS_FOR = {"image": "cnn, resnet, mlp (unet for segmentation)", "signal": "cnn1d or mlp", "features": "mlp"}


def build_model(name: str, in_channels: int, num_classes: int, spatial_size: Sequence[int],
                variant: str | None = None, **kwargs) -> nn.Module:
    """Build lab model ``name`` for inputs (in_channels, *spatial_size) and ``num_classes``.

    Args:
        name: one of ``MODELS``, or ``FILE.py:NAME`` for the user's own model (``dropkit.lab.user_model``).
        spatial_size: (H, W) for images, (L,) for signals, () for flat features (``Dataset.spatial_size``).
        variant: swaps in a block regularizer (``VARIANTS``); built-in models only.
        **kwargs: the model's own parameters (``model_params``).
    """
    from dropkit.lab.data import kind_of_shape
    from dropkit.lab.user_model import is_user_model_spec, load_user_model

    spatial_size = tuple(int(s) for s in spatial_size)
    input_shape = (int(in_channels), *spatial_size)
    kind = kind_of_shape(input_shape)
    if is_user_model_spec(name):
        if variant is not None:
            raise ValueError(f"model {name}: variants ({variant!r}) exist for the built-in models only")
        return load_user_model(name, in_channels=in_channels, num_classes=num_classes, input_shape=input_shape,
                               **kwargs)
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)} or FILE.py:NAME, got {name!r}")
    if variant not in VARIANTS.get(name, (None,)):
        raise ValueError(f"model {name}: variant must be one of {VARIANTS.get(name, (None,))}, got {variant!r}")
    if variant is not None:
        kwargs["variant"] = variant
    wanted = MODEL_INPUTS[name]
    if wanted is not None and wanted != kind:
        raise ValueError(f"model {name} takes {wanted} data, but these inputs are {kind} data of shape "
                         f"{input_shape}; for {kind} data use {_MODELS_FOR[kind]}")
    if kind == "image" and min(spatial_size) < 8:
        raise ValueError(f"model {name}: images must be at least 8×8, got {spatial_size}")
    if kind == "signal" and spatial_size[0] < 8:
        raise ValueError(f"model {name}: signals must be at least 8 long, got {spatial_size[0]}")
    _check_model_params(name, kwargs)
    try:
        return MODELS[name](in_channels, num_classes, spatial_size, **kwargs)
    except TypeError as err:
        raise ValueError(f"model {name}: bad model parameters {kwargs}: {err}") from None


_SHAPE_ARGUMENTS = ("in_channels", "num_classes", "image_size", "spatial_size")


def _check_model_params(name: str, kwargs: Mapping[str, Any]) -> None:
    """A built-in model's parameters, against its signature: known names, sizes that are integers ≥ 1 (a width of
    0 built an empty network, a negative one failed inside torch), layer lists of such integers."""
    import inspect

    parameters = inspect.signature(MODELS[name]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    own = {k: p.default for k, p in parameters.items() if k not in _SHAPE_ARGUMENTS}

    def size(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    for key, value in kwargs.items():
        if key not in own:
            raise ValueError(f"model {name}: unknown parameter {key!r}; its parameters: {', '.join(own)}")
        default = own[key]
        if key == "variant" or (value is None and default is None):
            continue
        if (isinstance(default, int) and not isinstance(default, bool)) or default is None:
            if not size(value):
                raise ValueError(f"model {name}: {key} must be an integer ≥ 1, got {value!r}")
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or not all(size(v) for v in value):
                raise ValueError(f"model {name}: {key} must be a list of integers ≥ 1, got {value!r}")


def feature_shapes(model: nn.Module, names: Sequence[str], sample: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The output shape (without the batch dimension) of each named submodule for ``sample`` (eval mode)."""
    from dropkit.lab.insertion import point_shapes

    return dict(zip(names, point_shapes(model, [(n, "after") for n in names], sample)))
