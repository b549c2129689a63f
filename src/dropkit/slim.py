"""Turn a model trained with Structural Dropout into a physically smaller one, and choose its width.

``slim(model, width)`` returns a new model whose layers around every ``structural_dropout`` layer are sliced to
the first ``width`` features: the producing ``Linear``/``ConvNd`` loses output rows, a ``BatchNorm`` between them
loses entries, and the consuming ``Linear``/``ConvNd`` loses input columns (a ``Flatten`` in between is handled:
channel c of a (C, S) map is the feature block c·S … c·S+S−1, so a channel prefix is a feature prefix). The
Structural-Dropout layer's eval scale H/width is folded into the consumer's weights when only positively
homogeneous ops (ReLU, LeakyReLU, pooling, Flatten, dropout, Identity) lie between them, and kept as a
:class:`Rescale` module otherwise. In eval mode the result gives the same outputs as the original with
``eval_size = width`` on every Structural-Dropout layer (to float tolerance), with fewer parameters and FLOPs.

``width_sweep(model, evaluate, widths, tolerance)`` evaluates the slimmed model at every width (Knodt 2022, §4:
"each possible hidden size must be validated"; O(#widths) full evaluations, independent of one another, so they
can run in parallel) and returns the accuracy-vs-width curve with parameter counts and the smallest width whose
accuracy is within ``tolerance`` of the best (:func:`select_width`).

Supported structure (found with ``torch.fx``; a model whose forward cannot be traced, or another structure, is
refused with a ``ValueError`` naming the node): producer (Linear or ConvNd with groups=1) → [BatchNorm,
element-wise activations, pooling, dropout] → structural_dropout → [activations with f(0) = 0, pooling, dropout,
Flatten] → consumer (Linear or ConvNd with groups=1), each intermediate value used once (no skip connections
across the slice). A BatchNorm or sigmoid *after* the structural layer is refused: it maps the zeroed features
to constants that the consumer reads, so cutting them would change the output.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from dropkit.attach import AttachAwareTracer
from dropkit.base import DropkitModule
from dropkit.methods.structural_dropout import StructuralDropout
from dropkit.validation import check_real

__all__ = [
    "Rescale",
    "structural_layers",
    "set_width",
    "count_parameters",
    "slim",
    "select_width",
    "WidthSweep",
    "width_sweep",
]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Channel-wise maps that commute with slicing channels; the first group is positively homogeneous
# (f(s·x) = s·f(x) for s > 0), so a positive scale can move across them.
_HOMOGENEOUS_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_OTHER_ELEMENTWISE_MODULES = (nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Mish,
                              nn.Softplus, nn.Hardtanh, nn.SELU, nn.CELU)
# f(0) ≠ 0: after the structural layer they would turn the zeroed features into constants the consumer reads
_NONZERO_AT_ZERO_MODULES = (nn.Sigmoid, nn.Softplus)
_HOMOGENEOUS_FUNCTIONS = {F.relu, torch.relu, F.leaky_relu, F.max_pool1d, F.max_pool2d, F.max_pool3d,
                          F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                          F.adaptive_max_pool2d, F.dropout, F.dropout1d, F.dropout2d}
_OTHER_ELEMENTWISE_FUNCTIONS = {F.gelu, F.silu, F.elu, torch.sigmoid, torch.tanh, F.relu6, F.hardswish, F.mish}
_NONZERO_AT_ZERO_FUNCTIONS = {torch.sigmoid, F.softplus}
_HOMOGENEOUS_METHODS = {"relu"}
_OTHER_ELEMENTWISE_METHODS = {"sigmoid", "tanh"}


class Rescale(nn.Module):
    """Multiplies by a constant: what remains of a Structural-Dropout layer when its scale cannot be folded."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def structural_layers(model: nn.Module) -> list[tuple[str, StructuralDropout]]:
    """``(name, layer)`` for every Structural-Dropout layer of ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"slim: model must be a torch.nn.Module, got {type(model).__name__}")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, StructuralDropout)]


def _resolve_width(width: Any, h: int, who: str) -> int:
    """An int width in [1, H], or a float fraction in (0, 1] of H (rounded, at least 1)."""
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        raise TypeError(f"{who}: width must be an int in [1, H] or a float fraction in (0, 1], got {width!r}")
    if isinstance(width, float):
        if not 0.0 < width <= 1.0 or math.isnan(width):
            raise ValueError(f"{who}: a float width is a fraction of H and must be in (0, 1], got {width}")
        return max(1, round(width * h))
    if not 1 <= width <= h:
        raise ValueError(f"{who}: width must be in [1, H] = [1, {h}], got {width}")
    return int(width)


def set_width(model: nn.Module, width: int | float | None) -> dict[str, int | None]:
    """Set ``eval_size`` on every Structural-Dropout layer (None = full width); returns the previous values.

    Layers whose H is not known yet (no forward, no ``num_features``) accept any int width ≥ 1.
    """
    layers = structural_layers(model)
    if not layers:
        raise ValueError("set_width: the model has no structural_dropout layer")
    previous = {name: layer.eval_size for name, layer in layers}
    for _, layer in layers:
        if width is None:
            layer.eval_size = None
        elif layer.num_features is None:
            if isinstance(width, float):
                raise ValueError("set_width: a fractional width needs H; run one forward pass first")
            layer.eval_size = width
        else:
            layer.eval_size = _resolve_width(width, layer.num_features, "set_width")
    return previous


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


# -- graph analysis ------------------------------------------------------------------------------------------------
class _LeafTracer(AttachAwareTracer):
    """Dropkit layers are leaves, and layers inserted by ``dropkit.attach`` appear where their hooks run."""


@dataclass
class _Plan:
    out_width: dict[str, int] = field(default_factory=dict)           # producer name → kept outputs
    in_width: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # consumer → (width, block, scale)
    norm_width: dict[str, int] = field(default_factory=dict)
    replace: dict[str, nn.Module] = field(default_factory=dict)         # structural layer → Identity / Rescale


def _passthrough(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[bool, bool] | None:
    """(is a channel-wise pass-through, is positively homogeneous), or None when it is not a pass-through."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, _HOMOGENEOUS_MODULES):
            return True, True
        if isinstance(m, _OTHER_ELEMENTWISE_MODULES):
            return True, False
        if isinstance(m, DropkitModule) and not isinstance(m, StructuralDropout) \
                and not list(m.parameters()) and not list(m.buffers()):
            return True, True  # a state-free dropkit method: the identity in eval
        return None
    extra_tensors = [a for a in list(node.args[1:]) + list(node.kwargs.values()) if isinstance(a, fx.Node)]
    if extra_tensors:
        return None
    if node.op == "call_function" and node.target in _HOMOGENEOUS_FUNCTIONS:
        return True, True
    if node.op == "call_function" and node.target in _OTHER_ELEMENTWISE_FUNCTIONS:
        return True, False
    if node.op == "call_method" and node.target in _HOMOGENEOUS_METHODS:
        return True, True
    if node.op == "call_method" and node.target in _OTHER_ELEMENTWISE_METHODS:
        return True, False
    return None


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    is_flatten = (node.op == "call_function" and node.target is torch.flatten) or \
                 (node.op == "call_method" and node.target == "flatten")
    return is_flatten and start == 1 and end == -1


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    return f"{node.op} {getattr(node.target, '__name__', node.target)!s}"


def _check_feature_axis(sd_name: str, layer: StructuralDropout, producer: str, m: nn.Module) -> None:
    """The structural layer must cut the producer's feature axis: channels (1) of a ConvNd, the last axis of a
    Linear. A dim naming another axis of the same size would be sliced silently wrong."""
    if isinstance(m, nn.Linear):
        if layer.dim == -1 or (layer.dim == 1 and layer.input_ndim == 2):
            return
        seen = "an unknown input rank" if layer.input_ndim is None else f"{layer.input_ndim}-D inputs"
        raise ValueError(f"slim: {sd_name} has dim={layer.dim} but its producer {producer} (Linear) puts its features "
                         f"on the last axis ({seen}); use dim=-1")
    ndim = len(m.kernel_size) + 2
    if layer.dim not in (1, 1 - ndim):
        raise ValueError(f"slim: {sd_name} has dim={layer.dim} but its producer {producer} ({type(m).__name__}) puts "
                         f"its channels on axis 1; use dim=1")


def _slice_chain(modules: dict[str, nn.Module], sd_name: str, sd_node: fx.Node,
                 width: Any, plan: _Plan) -> None:
    layer = modules[sd_name]
    if layer.dim not in (1, -1):
        raise ValueError(f"slim: {sd_name} has dim={layer.dim}; only the feature/channel axis 1 can be sliced")

    def refuse(node: fx.Node, why: str) -> ValueError:
        return ValueError(f"slim: cannot slice around {sd_name}: {why} at {_describe(node, modules)}; supported: "
                          f"Linear/ConvNd(groups=1) → [BatchNorm, activation, pooling, dropout] → "
                          f"structural_dropout → [activation with f(0)=0, pooling, dropout, Flatten] → "
                          f"Linear/ConvNd(groups=1)")

    # walk back to the producer
    norms: list[str] = []
    cur = sd_node.args[0] if sd_node.args else None
    while True:
        if not isinstance(cur, fx.Node):
            raise ValueError(f"slim: cannot find the layer feeding {sd_name}")
        if len(cur.users) != 1:
            raise refuse(cur, "the value is used more than once (a skip connection across the slice)")
        if cur.op == "call_module":
            m = modules[cur.target]
            if isinstance(m, nn.Linear) or (isinstance(m, _CONV) and m.groups == 1):
                producer, h = cur.target, (m.out_features if isinstance(m, nn.Linear) else m.out_channels)
                break
            if isinstance(m, _NORM):
                norms.append(cur.target)
                cur = cur.args[0]
                continue
        if _passthrough(cur, modules) is None:
            raise refuse(cur, "unsupported producer-side operation")
        cur = cur.args[0]
    w = _resolve_width(width, h, "slim")
    if layer.num_features is not None and layer.num_features != h:
        raise ValueError(f"slim: {sd_name} saw {layer.num_features} features but {producer} makes {h}")
    # walk forward to the consumer
    foldable, flatten = True, False
    cur = sd_node
    while True:
        users = list(cur.users)
        if len(users) != 1:
            raise refuse(cur, "the value is used more than once (a skip connection across the slice)"
                         if users else "nothing consumes the structural_dropout output")
        cur = users[0]
        if cur.op == "output":
            raise refuse(cur, "nothing consumes the structural_dropout output before the model's output")
        if cur.op == "call_module":
            m = modules[cur.target]
            if isinstance(m, nn.Linear) or (isinstance(m, _CONV) and m.groups == 1 and not flatten):
                consumer = cur.target
                break
            if isinstance(m, _NORM) or isinstance(m, _NONZERO_AT_ZERO_MODULES):
                raise refuse(cur, "the operation maps the zeroed features to non-zero values (BatchNorm's shift, "
                                  "sigmoid), so slicing them would change the output; place it before the "
                                  "structural_dropout layer")
            if isinstance(m, StructuralDropout):
                raise refuse(cur, "two structural_dropout layers in a row")
        if _is_flatten(cur, modules):
            flatten = True
            continue
        if (cur.op == "call_function" and cur.target in _NONZERO_AT_ZERO_FUNCTIONS) or \
                (cur.op == "call_method" and cur.target == "sigmoid"):
            raise refuse(cur, "the operation maps the zeroed features to non-zero values, so slicing them would "
                              "change the output; place it before the structural_dropout layer")
        kind = _passthrough(cur, modules)
        if kind is None:
            raise refuse(cur, "unsupported consumer-side operation")
        foldable = foldable and kind[1]
    m = modules[consumer]
    fan_in = m.in_features if isinstance(m, nn.Linear) else m.in_channels
    if fan_in % h:
        raise ValueError(f"slim: {consumer} reads {fan_in} inputs, not a multiple of the {h} features of {sd_name}")
    block = fan_in // h
    if block != 1 and not flatten:
        raise ValueError(f"slim: {consumer} reads {fan_in} inputs but {sd_name} has {h} features")
    _check_feature_axis(sd_name, layer, producer, modules[producer])
    scale = h / w if layer.normalize else 1.0
    clashes = [n for n in (producer,) if n in plan.out_width] + [n for n in (consumer,) if n in plan.in_width] \
        + [n for n in norms if n in plan.norm_width]
    if clashes:
        raise ValueError(f"slim: {clashes[0]} would be sliced twice (shared by two structural_dropout layers)")
    plan.out_width[producer] = w
    plan.in_width[consumer] = (w, block, scale if foldable else 1.0)
    for n in norms:
        plan.norm_width[n] = w
    plan.replace[sd_name] = nn.Identity() if (foldable or scale == 1.0) else Rescale(scale)


def _sliced_linear(m: nn.Linear, out_w: int | None, in_spec: tuple[int, int, float] | None) -> nn.Linear:
    weight, bias = m.weight.detach(), None if m.bias is None else m.bias.detach()
    if out_w is not None:
        weight, bias = weight[:out_w], None if bias is None else bias[:out_w]
    if in_spec is not None:
        w, block, scale = in_spec
        weight = weight[:, : w * block] * scale
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.weight.requires_grad_(m.weight.requires_grad)
    return new


def _sliced_conv(m: nn.Module, out_w: int | None, in_spec: tuple[int, int, float] | None) -> nn.Module:
    weight, bias = m.weight.detach(), None if m.bias is None else m.bias.detach()
    if out_w is not None:
        weight, bias = weight[:out_w], None if bias is None else bias[:out_w]
    if in_spec is not None:
        w, _, scale = in_spec
        weight = weight[:, :w] * scale
    new = type(m)(weight.shape[1], weight.shape[0], m.kernel_size, stride=m.stride, padding=m.padding,
                  dilation=m.dilation, groups=1, bias=bias is not None, padding_mode=m.padding_mode,
                  device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.weight.requires_grad_(m.weight.requires_grad)
    return new


def _sliced_norm(m: nn.Module, w: int) -> nn.Module:
    # device and dtype from a floating tensor of the original (num_batches_tracked is int64: not a dtype to copy),
    # else a float64 model's sliced BatchNorm would come back float32 and fail with "mixed dtype".
    tensors = list(m.parameters(recurse=False)) + [b for b in m.buffers(recurse=False) if b is not None]
    ref = next((t for t in tensors if t.is_floating_point()), None)
    new = type(m)(w, eps=m.eps, momentum=m.momentum, affine=m.affine, track_running_stats=m.track_running_stats,
                  device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype)
    with torch.no_grad():
        for name, value in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if value is None:
                continue
            target = getattr(new, name)
            target.copy_(value if value.ndim == 0 else value[:w])
    return new


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def slim(model: nn.Module, width: int | float) -> nn.Module:
    """A new, physically smaller copy of ``model`` cut to ``width`` features at every Structural-Dropout layer.

    Args:
        model: a model holding one or more ``structural_dropout`` layers in a supported structure (module
            docstring). It is not modified.
        width: int in [1, H] (the same for every layer, as in the paper), or a float fraction in (0, 1] of each
            layer's H.

    Returns:
        The sliced copy, with the original's train/eval flags; the Structural-Dropout layers are replaced by
        ``nn.Identity`` (scale folded) or :class:`Rescale`. In eval it matches ``model`` with ``eval_size=width``.

    Raises:
        ValueError: no Structural-Dropout layer, a width outside [1, H], or a structure it cannot slice.
    """
    layers = structural_layers(model)
    if not layers:
        raise ValueError("slim: the model has no structural_dropout layer")
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # fx raises many kinds of errors on dynamic control flow
        raise ValueError(f"slim: cannot trace the model with torch.fx ({type(exc).__name__}: {exc}); slim supports "
                         f"models whose forward is a static chain of layers") from exc
    modules = dict(model.named_modules())
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    plan = _Plan()
    for name, _ in layers:
        nodes = calls.get(name, [])
        if len(nodes) != 1:
            raise ValueError(f"slim: {name} is called {len(nodes)} times in forward; it must be called exactly once")
        _slice_chain(modules, name, nodes[0], width, plan)
    for name in set(plan.out_width) | set(plan.in_width) | set(plan.norm_width):
        if len(calls.get(name, [])) != 1:
            raise ValueError(f"slim: {name} is called {len(calls.get(name, []))} times in forward; a sliced layer "
                             f"must be used exactly once")
    new = copy.deepcopy(model)
    for name in set(plan.out_width) | set(plan.in_width):
        m = modules[name]
        build = _sliced_linear if isinstance(m, nn.Linear) else _sliced_conv
        replacement = build(m, plan.out_width.get(name), plan.in_width.get(name))
        replacement.train(m.training)
        _set_submodule(new, name, replacement)
    for name, w in plan.norm_width.items():
        replacement = _sliced_norm(modules[name], w)
        replacement.train(modules[name].training)
        _set_submodule(new, name, replacement)
    for name, replacement in plan.replace.items():
        _set_submodule(new, name, replacement)
    return new


# -- choosing the width ----------------------------------------------------------------------------------------
def select_width(widths: Sequence[int], accuracies: Sequence[float], tolerance: float = 0.01) -> int:
    """The smallest width whose accuracy is ≥ best − ``tolerance`` (accuracy in the evaluator's units)."""
    tolerance = check_real(tolerance, "tolerance", "select_width", low=0.0)
    if len(widths) == 0 or len(widths) != len(accuracies):
        raise ValueError(f"select_width: widths and accuracies must be non-empty and of equal length, got "
                         f"{len(widths)} and {len(accuracies)}")
    best = max(accuracies)
    return min(w for w, a in zip(widths, accuracies) if a >= best - tolerance)


@dataclass(frozen=True)
class WidthSweep:
    """Accuracy against width: one row per width, the best width and the chosen (smallest within tolerance)."""

    widths: tuple[int, ...]
    accuracies: tuple[float, ...]
    parameters: tuple[int, ...]
    full_width: int
    full_parameters: int
    best_width: int
    best_accuracy: float
    chosen_width: int
    chosen_accuracy: float
    tolerance: float

    def rows(self) -> list[dict[str, float]]:
        return [{"width": w, "accuracy": a, "parameters": n}
                for w, a, n in zip(self.widths, self.accuracies, self.parameters)]

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows(), "full_width": self.full_width, "full_parameters": self.full_parameters,
                "best_width": self.best_width, "best_accuracy": self.best_accuracy,
                "chosen_width": self.chosen_width, "chosen_accuracy": self.chosen_accuracy,
                "tolerance": self.tolerance}


def _accuracy_on(data: Any) -> Callable[[nn.Module], float]:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        batches: Iterable[Any] = [data]
    elif isinstance(data, Iterable):
        batches = data
    else:
        raise TypeError("width_sweep: evaluate must be a callable model → accuracy, an (x, y) pair of tensors, or "
                        f"an iterable of (x, y) batches; got {type(data).__name__}")

    @torch.no_grad()
    def accuracy(model: nn.Module) -> float:
        correct, total = 0, 0
        for x, y in batches:
            pred = model(x).argmax(1)
            correct += int((pred == y.to(pred.device)).sum())
            total += y.numel()
        if total == 0:
            raise ValueError("width_sweep: the evaluation data is empty")
        return correct / total

    return accuracy


def width_sweep(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float] | Any,
    widths: Iterable[int] | None = None,
    tolerance: float = 0.01,
    *,
    step: int = 1,
    use_slim: bool = True,
) -> WidthSweep:
    """Evaluate ``model`` at each width and pick the smallest within ``tolerance`` of the best.

    Args:
        model: a trained model with Structural-Dropout layers (left unchanged: flags and ``eval_size`` restored).
        evaluate: ``callable(model) -> accuracy`` (higher is better; called with the model in eval mode), or
            validation data: an ``(x, y)`` pair of tensors or an iterable of such batches (top-1 accuracy).
            Use a validation split, not the test set.
        widths: the widths to try (each in [1, H]); default ``range(step, H + 1, step)`` plus H.
        tolerance: allowed accuracy loss from the best, in the evaluator's units (default 0.01).
        step: spacing of the default widths.
        use_slim: evaluate (and count parameters of) the sliced model; False evaluates the original with
            ``eval_size`` set and reports the original's parameter count.

    Returns:
        :class:`WidthSweep`.
    """
    layers = structural_layers(model)
    if not layers:
        raise ValueError("width_sweep: the model has no structural_dropout layer")
    tolerance = check_real(tolerance, "tolerance", "width_sweep", low=0.0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"width_sweep: step must be an int ≥ 1, got {step!r}")
    sizes = [layer.num_features for _, layer in layers]
    if any(s is None for s in sizes):
        raise ValueError("width_sweep: the width of some structural_dropout layer is unknown; run one forward pass "
                         "or pass num_features")
    h = min(sizes)
    if widths is None:
        widths = sorted(set(range(step, h + 1, step)) | {h})
    widths = [_resolve_width(w, h, "width_sweep") for w in widths]
    if not widths:
        raise ValueError("width_sweep: widths must not be empty")
    score = evaluate if callable(evaluate) else _accuracy_on(evaluate)
    flags = [(m, m.training) for m in model.modules()]
    previous = {name: layer.eval_size for name, layer in layers}
    accuracies, params = [], []
    try:
        model.eval()
        for w in widths:
            if use_slim:
                small = slim(model, w)
                accuracies.append(float(score(small)))
                params.append(count_parameters(small))
            else:
                set_width(model, w)
                accuracies.append(float(score(model)))
                params.append(count_parameters(model))
    finally:
        for m, flag in flags:
            m.training = flag
        for name, layer in layers:
            layer.eval_size = previous[name]
    best_i = max(range(len(widths)), key=lambda i: (accuracies[i], -widths[i]))
    chosen = select_width(widths, accuracies, tolerance)
    return WidthSweep(
        widths=tuple(widths), accuracies=tuple(accuracies), parameters=tuple(params), full_width=h,
        full_parameters=count_parameters(model), best_width=widths[best_i], best_accuracy=accuracies[best_i],
        chosen_width=chosen, chosen_accuracy=accuracies[widths.index(chosen)], tolerance=tolerance,
    )
