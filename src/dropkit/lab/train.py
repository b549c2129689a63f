"""One lab run: ``RunConfig → result``, deterministic for a seed (nanoGPT-plain: the store and the sweep live
around it, not inside it).

A seed fixes the initial weights and the order of the training batches, the same for every method (common random
numbers), so methods can be compared paired by seed; the masks draw from the global generator, re-seeded after the
model is built. The method is inserted with ``dropkit.attach`` at the model's insertion points for the chosen
group (see ``dropkit.lab.placement``); its schedule comes from its card (``dropkit.schedule.from_card``); and the
label- and statistics-aware methods get targets, validation batches and the end-of-step signal through
``dropkit.protocol``, as any user's loop would.

FocusedDropout's "magnified weight decay": when the card's schedule holds ``weight_decay`` and the schedule
exposes ``participating``, the optimizer uses that weight decay on the participating batches and the run's
own ``weight_decay`` on the others (spec: "we increase weight decay when using FocusedDropout").
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import math
import platform
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dropkit.lab.data import PREPROCESSING, Dataset, load_dataset
from dropkit.lab.models import MODELS, VARIANTS, build_model, feature_shapes
from dropkit.lab.placement import adapt_params, placement_group, resolve_points

__all__ = ["RunConfig", "RunFailed", "train", "run", "check_run", "environment", "evaluate", "get_dataset",
           "BASELINE"]

BASELINE = "none"
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("cosine", "constant")


class RunFailed(RuntimeError):
    """A method could not run on a model (e.g. a spatial method on flat features); the message says why."""


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return repr(value)


@dataclass
class RunConfig:
    """Everything that determines a run. Its canonical JSON is hashed (``config_hash``) to key the store.

    Attributes:
        method: a registered method name, or ``"none"`` for the no-dropout baseline.
        params: the method's parameters (the card's defaults fill the rest).
        placement: a group of the model's insertion points (``"conv"``, ``"fc"``, ``"branch"``, ``"input"``), an
            explicit list of submodule names, or None for the paper's placement.
        group_params: default parameters per placement group, used where ``params`` and the card allow, e.g.
            ``{"conv": {"p": 0.2}}`` (the pilot's rate at the conv stages).
        data: ``"fashion_mnist"``, ``"organs"``, an ``.npz`` path or a folder.
        train_size, val_size, test_size, data_seed: the splits (see ``dropkit.lab.data.load_dataset``).
        preprocess: None or ``"edges"`` (the dental-imaging recipe's edge maps, before normalisation).
        model, model_params: one of ``cnn``, ``resnet``, ``mlp``, ``edge_mlp``, ``unet`` and its keyword arguments.
        variant: a block regularizer built into the model instead of the layer it replaces (``"maxout"``,
            ``"stochastic_pooling"`` for the CNN; ``"maxout"``, ``"standout"`` for the MLP); compared against the
            plain model as an arm of its own.
        seed: initial weights, batch order and masks.
        epochs, batch_size, optimizer, lr, momentum, weight_decay, lr_schedule: training (SGD is Nesterov; the
            cosine schedule decays per step to 0).
        test_every: also evaluate the test split every k epochs (0: after the last epoch only).
        probe: co-adaptation probe after training: ``{"fractions": [...], "repeats": r, "images": n}`` or None.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    """

    method: str = BASELINE
    params: dict[str, Any] = field(default_factory=dict)
    placement: str | list[str] | None = None
    group_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: str = "fashion_mnist"
    train_size: int | None = 1000
    val_size: int | None = None
    test_size: int | None = None
    data_seed: int = 0
    preprocess: str | None = None
    model: str = "cnn"
    variant: str | None = None
    model_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    test_every: int = 0
    probe: dict[str, Any] | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        if not isinstance(values, Mapping):
            raise TypeError(f"a run config must be a table/mapping, got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.fields()))
        if unknown:
            raise ValueError(f"unknown run setting(s) {unknown}; allowed: {cls.fields()}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(dataclasses.asdict(self))

    def config_hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def validate(self) -> None:
        def need_int(name: str, minimum: int, *, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an integer ≥ {minimum}{' or None' if optional else ''}, got {v!r}")
            if v < minimum:
                raise ValueError(f"{name} must be an integer ≥ {minimum}, got {v}")

        def need_real(name: str, *, positive: bool) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{name} must be a finite number, got {v!r}")
            if v < 0 or (positive and v == 0):
                raise ValueError(f"{name} must be {'> 0' if positive else '≥ 0'}, got {v}")

        if not isinstance(self.method, str):
            raise TypeError(f"method must be a method name or {BASELINE!r}, got {self.method!r}")
        if self.method != BASELINE:
            import dropkit

            dropkit.get_card(self.method)  # ValueError with the closest names
        for name in ("params", "model_params", "group_params"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"{name} must be a table/mapping, got {getattr(self, name)!r}")
        for group, values in self.group_params.items():
            if not isinstance(values, Mapping):
                raise TypeError(f"group_params[{group!r}] must be a table/mapping, got {values!r}")
        if self.method == BASELINE and self.params:
            raise ValueError(f"the baseline {BASELINE!r} takes no params, got {dict(self.params)}")
        if self.placement is not None and not isinstance(self.placement, (str, list)):
            raise TypeError(f"placement must be a group name, a list of submodule names or None, got {self.placement!r}")
        if not isinstance(self.data, str) or not self.data:
            raise TypeError(f"data must be a dataset name or a path, got {self.data!r}")
        if self.preprocess not in PREPROCESSING:
            raise ValueError(f"preprocess must be one of {PREPROCESSING}, got {self.preprocess!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        if self.variant not in VARIANTS.get(self.model, (None,)):
            raise ValueError(f"variant for model {self.model!r} must be one of {VARIANTS.get(self.model, (None,))}, "
                             f"got {self.variant!r}")
        need_int("train_size", 1, optional=True)
        need_int("val_size", 0, optional=True)
        need_int("test_size", 1, optional=True)
        need_int("data_seed", 0)
        need_int("seed", 0)
        need_int("epochs", 1)
        need_int("batch_size", 1)
        need_int("test_every", 0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        need_real("lr", positive=True)
        need_real("momentum", positive=False)
        need_real("weight_decay", positive=False)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda")
                                                    or self.device.startswith("cuda:")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.probe is not None:
            _check_probe(self.probe)


def _check_probe(probe: Any) -> None:
    if not isinstance(probe, Mapping):
        raise TypeError(f"probe must be a table with fractions, repeats, images; got {probe!r}")
    unknown = sorted(set(probe) - {"fractions", "repeats", "images"})
    if unknown:
        raise ValueError(f"probe: unknown key(s) {unknown}; allowed: fractions, repeats, images")
    fractions = probe.get("fractions", [])
    if (not isinstance(fractions, (list, tuple)) or not fractions
            or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1 for f in fractions)):
        raise ValueError(f"probe.fractions must be a non-empty list of numbers in [0, 1), got {fractions!r}")
    for key in ("repeats", "images"):
        v = probe.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"probe.{key} must be an integer ≥ 1, got {v!r}")


# --------------------------------------------------------------------------------------------- environment
_COMMIT: list[str | None] = []


def _git_commit() -> str | None:
    if not _COMMIT:
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                 capture_output=True, text=True, timeout=5)
            _COMMIT.append(out.stdout.strip() or None if out.returncode == 0 else None)
        except (OSError, subprocess.SubprocessError):
            _COMMIT.append(None)
    return _COMMIT[0]


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """What produced a run: torch, Python, platform, device, threads, dropkit version and git commit."""
    import dropkit

    device = device or torch.device("cpu")
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "dropkit": getattr(dropkit, "__version__", None) or _package_version(),
        "commit": _git_commit(),
    }


def _package_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("dropkit")
    except Exception:
        return None


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available here")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------- data cache
_DATA_CACHE: dict[tuple, Dataset] = {}


def get_dataset(config: RunConfig) -> Dataset:
    """The run's splits, cached per process (a sweep loads Fashion-MNIST once)."""
    key = (config.data, config.train_size, config.val_size, config.test_size, config.data_seed, config.preprocess)
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) >= 4:
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE[key] = load_dataset(config.data, train_size=config.train_size, val_size=config.val_size,
                                        test_size=config.test_size, data_seed=config.data_seed,
                                        preprocess=config.preprocess)
    return _DATA_CACHE[key]


# ---------------------------------------------------------------------------------------------- evaluation
def _dice_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU averaged over the foreground classes (an empty class predicted empty scores 1)."""
    classes = torch.arange(1, num_classes, device=pred.device)[None, :, None, None]
    p, t = (pred[:, None] == classes), (target[:, None] == classes)
    inter = (p & t).sum((2, 3)).float()
    sizes = p.sum((2, 3)).float() + t.sum((2, 3)).float()
    union = sizes - inter
    dice = torch.where(sizes > 0, 2 * inter / sizes.clamp_min(1), torch.ones_like(inter))
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    return dice.mean(1), iou.mean(1)


def _loss(logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    if task == "classification":
        return F.cross_entropy(logits, y)
    # segmentation: cross-entropy + soft Dice over the foreground classes (the usual U-Net pairing)
    ce = F.cross_entropy(logits, y)
    prob = logits.float().softmax(1)[:, 1:]
    onehot = F.one_hot(y, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum((0, 2, 3))
    soft_dice = (2 * inter + 1) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
    return ce + (1 - soft_dice.mean())


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, num_classes: int,
             device: torch.device, batch_size: int = 500) -> dict[str, float]:
    """Loss and accuracy (classification) or Dice and IoU (segmentation) of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct, dice_sum, iou_sum = 0.0, 0, 0.0, 0.0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            logits = model(xb)
            total_loss += float(_loss(logits, yb, task)) * len(xb)
            pred = logits.argmax(1)
            if task == "classification":
                correct += int((pred == yb).sum())
            else:
                dice, iou = _dice_iou(pred, yb, num_classes)
                dice_sum, iou_sum = dice_sum + float(dice.sum()), iou_sum + float(iou.sum())
    finally:
        model.train(was_training)
    n = max(1, len(x))
    if task == "classification":
        return {"loss": total_loss / n, "acc": correct / n}
    return {"loss": total_loss / n, "dice": dice_sum / n, "iou": iou_sum / n}


def primary_metric(task: str) -> str:
    return "acc" if task == "classification" else "dice"


# ------------------------------------------------------------------------------------------------ training
def _protocol():
    # dropkit.protocol is the public channel for label- and statistics-aware methods; absent in old versions.
    if importlib.util.find_spec("dropkit.protocol") is None:
        return None
    return importlib.import_module("dropkit.protocol")


def _make_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               nesterov=config.momentum > 0, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _insert_method(config: RunConfig, model: nn.Module, sample: torch.Tensor):
    """Attach the method; return (handle, card, placement record)."""
    import dropkit

    card = dropkit.get_card(config.method)
    group = None
    if isinstance(config.placement, list):
        points = resolve_points(model, config.placement)
    else:
        group = placement_group(card, model, config.placement)
        points = resolve_points(model, group)
    shapes = feature_shapes(model, points, sample)
    explicit = dict(config.params)
    for key, value in config.group_params.get(group, {}).items():
        default = card.defaults.get(key)
        # a group rate replaces only a rate-like default: p = 1 ("always apply", Cutout/FocusedDropout) or
        # p = None (derived, Channel DropBlock) mean something else and stay the card's
        if key == "p" and not (isinstance(default, float) and 0.0 < default < 1.0):
            continue
        if key not in explicit and (key in card.defaults or key in card.required):
            explicit[key] = value
    resolved = adapt_params(card, explicit, shapes)
    passed = dict(explicit)
    if "block_size" in resolved and resolved["block_size"] != card.defaults.get("block_size"):
        passed["block_size"] = resolved["block_size"]  # fitted to small maps by adapt_params
    _check_params(card, passed, model, points)
    record = {"group": group, "points": points, "shapes": {k: list(v) for k, v in shapes.items()},
              "params": _json_safe(resolved)}
    try:
        handle = dropkit.attach(model, config.method, at=points, **passed)
    except (ValueError, TypeError) as err:
        raise RunFailed(f"{config.method} could not be inserted at {points} of the {config.model} "
                        f"(feature shapes {record['shapes']}): {err}") from err
    return handle, card, record


def _check_params(card: Any, params: Mapping[str, Any], model: nn.Module, points: list[str]) -> None:
    """Build the method once on its own, so that a bad parameter (unknown, out of range, of the wrong type) is
    refused by the method's constructor with a message naming it, not reported as a failed insertion."""
    import dropkit

    extra: dict[str, Any] = {}
    if card.required == ("layer",) and points:
        extra["layer"] = model.get_submodule(points[0])  # a wrapper is checked around the layer it will wrap
    elif card.required:
        return  # a whole block built from the model's sizes: attach checks it
    dropkit.create(card.name, **{**params, **extra})


def _check_model_task(config: RunConfig, task: str) -> None:
    if config.model == "unet" and task != "segmentation":
        raise ValueError(f"model 'unet' needs a segmentation dataset; {config.data!r} is a {task} set")
    if config.model != "unet" and task == "segmentation":
        raise ValueError(f"{config.data!r} is a segmentation set: use --model unet")


def _check_validation_split(config: RunConfig, model: nn.Module, data: Dataset) -> None:
    protocol = _protocol()
    if (protocol is not None and data.task == "classification" and len(data.y_val) == 0
            and protocol.wants_validation(model)):
        raise ValueError(f"{config.method} needs validation data (it compares training batches with held-out "
                         f"ones), but val_size is 0; set val_size ≥ 1 (--val-size)")


def _build(config: RunConfig, data: Dataset) -> tuple[nn.Module, Any, Any, dict[str, Any]]:
    """The run's model (initial weights fixed by the seed) with its method attached: (model, handle, card,
    placement record)."""
    torch.manual_seed(config.seed)  # initial weights: the same for every method under this seed
    model = build_model(config.model, data.in_channels, data.num_classes, data.image_size, variant=config.variant,
                        **config.model_params)
    handle, card, placement = None, None, {"group": None, "points": [], "shapes": {}, "params": {}}
    if config.method != BASELINE:
        handle, card, placement = _insert_method(config, model, data.x_train[:2])
        _check_validation_split(config, model, data)
    return model, handle, card, placement


def check_run(config: RunConfig) -> None:
    """Check a config against its data before anything is stored: load the data, build the model and attach the
    method once on the real feature shapes (on the CPU, leaving the global RNG as it was).

    Raises:
        ValueError, TypeError: bad data, a bad method parameter (the message names it), a model that does not
            suit the task, or a method that needs validation data when ``val_size`` is 0.

    A method that does not fit the model (:class:`RunFailed`) passes: it is a result, recorded as a failed run.
    """
    data = get_dataset(config)
    _check_model_task(config, data.task)
    with torch.random.fork_rng(devices=[]):
        try:
            _build(config, data)
        except RunFailed:
            pass


def _check_final_metrics(metrics: Mapping[str, Any]) -> None:
    """A run whose weights blew up on its last steps ends with NaN/inf metrics: a failure, not a result."""
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise RunFailed("training diverged: final metrics not finite ("
                        + ", ".join(f"{k}={v}" for k, v in bad.items()) + ")")


def train(config: RunConfig, *, dataset: Dataset | None = None,
          on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> tuple[dict[str, Any], nn.Module, Dataset]:
    """Train and evaluate one configuration.

    Returns:
        (result, model, dataset): ``result`` holds ``metrics`` (final), ``curves`` (one dict per epoch),
        ``placement``, ``environment`` and ``wall_s``; the trained model (method still attached) serves probes.

    Raises:
        RunFailed: the method does not fit the model (its message says where and why), or training diverged
            (a non-finite loss during training, or non-finite final metrics).
        ValueError, TypeError: see :func:`check_run`.
    """
    started = time.perf_counter()
    device = _resolve_device(config.device)
    data = dataset if dataset is not None else get_dataset(config)
    task = data.task
    _check_model_task(config, task)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    model, handle, card, placement = _build(config, data)
    model.to(device)
    torch.manual_seed(config.seed + 7919)  # masks: deterministic, independent of how the weights were drawn
    order = torch.Generator().manual_seed(config.seed)  # batch order: the same for every method
    val_order = torch.Generator().manual_seed(config.seed + 1)

    n = len(data.y_train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = _make_optimizer(config, model)
    lr_lambda = ((lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
                 if config.lr_schedule == "cosine" else (lambda s: 1.0))
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    schedule, mwd = None, None
    if card is not None:
        import dropkit.schedule

        schedule = dropkit.schedule.from_card(card, model, total_steps)
        if card.schedule is not None and "weight_decay" in card.schedule:
            mwd = float(card.schedule["weight_decay"])
    protocol = _protocol()
    # The protocol speaks class labels (N,); per-pixel targets of a segmentation set have no label-aware reading.
    aware = protocol is not None and task == "classification"
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    val_perm, val_pos = None, 0

    curves: list[dict[str, float]] = []
    test_metrics: dict[str, float] = {}
    step = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        t_epoch = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        perm = torch.randperm(n, generator=order)
        for i in range(0, n, config.batch_size):
            idx = perm[i:i + config.batch_size]
            xb, yb = data.x_train[idx].to(device), data.y_train[idx].to(device)
            if schedule is not None:
                schedule.step()
            if mwd is not None and hasattr(schedule, "participating"):
                for group in optimizer.param_groups:
                    group["weight_decay"] = mwd if schedule.participating else config.weight_decay
            try:
                if aware and len(y_val) and protocol.wants_validation(model):
                    if val_perm is None or val_pos >= len(y_val):
                        val_perm, val_pos = torch.randperm(len(y_val), generator=val_order), 0
                    vidx = val_perm[val_pos:val_pos + config.batch_size]
                    val_pos += config.batch_size
                    protocol.feed_validation(model, x_val[vidx], y_val[vidx])
                ctx = protocol.supervise(model, yb) if aware else contextlib.nullcontext()
                with ctx:
                    logits = model(xb)
            except (RuntimeError, ValueError, TypeError) as err:
                if step == 0 and config.method != BASELINE:
                    raise RunFailed(f"{config.method} failed on the {config.model} at {placement['points']} "
                                    f"(feature shapes {placement['shapes']}): {err}") from err
                raise
            loss = _loss(logits, yb, task)
            if not torch.isfinite(loss):
                raise RunFailed(f"training diverged (loss {float(loss.detach())}) at epoch {epoch}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_sched.step()
            if aware:
                protocol.step_statistics(model)
            step += 1
            with torch.no_grad():
                loss_sum += float(loss) * len(idx)
                seen += len(idx)
                if task == "classification":
                    correct += int((logits.argmax(1) == yb).sum())
        row: dict[str, float] = {"epoch": epoch, "train_loss": loss_sum / seen, "lr": optimizer.param_groups[0]["lr"]}
        if task == "classification":
            row["train_acc"] = correct / seen
        if len(y_val):
            row.update({f"val_{k}": v for k, v in evaluate(model, data.x_val, data.y_val, task, data.num_classes,
                                                            device).items()})
        if epoch == config.epochs or (config.test_every and epoch % config.test_every == 0):
            test_metrics = evaluate(model, data.x_test, data.y_test, task, data.num_classes, device)
            row.update({f"test_{k}": v for k, v in test_metrics.items()})
        row["epoch_s"] = time.perf_counter() - t_epoch
        curves.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)

    train_eval = evaluate(model, data.x_train, data.y_train, task, data.num_classes, device)
    key = primary_metric(task)
    metrics = {f"test_{k}": v for k, v in test_metrics.items()}
    metrics.update({f"train_{k}": v for k, v in train_eval.items()})
    metrics.update({k: v for k, v in curves[-1].items() if k.startswith("val_")})
    metrics["gap"] = train_eval[key] - test_metrics[key]
    metrics["n_test"] = len(data.y_test)
    metrics["n_train"] = n
    _check_final_metrics(metrics)
    result = {
        "metrics": metrics, "curves": curves, "placement": placement, "task": task, "primary": f"test_{key}",
        "environment": environment(device), "schedule": None if card is None or card.schedule is None
        else _json_safe(dict(card.schedule)),
    }
    result["wall_s"] = time.perf_counter() - started
    return result, model, data


def run(config: RunConfig | Mapping[str, Any], *, on_epoch: Callable[[int, dict[str, float]], None] | None = None
        ) -> dict[str, Any]:
    """``config → result``: train, evaluate and (when ``config.probe`` is set) probe one configuration."""
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    started = time.perf_counter()
    result, model, data = train(config, on_epoch=on_epoch)
    if config.probe is not None:
        from dropkit.lab.probes import coadaptation_probe

        result["probe"] = coadaptation_probe(model, data, device=next(model.parameters()).device,
                                             seed=config.seed, **dict(config.probe))
    result["wall_s"] = time.perf_counter() - started
    return result

