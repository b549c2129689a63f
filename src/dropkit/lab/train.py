"""One lab run: ``RunConfig → result``, deterministic for a seed (nanoGPT-plain: the store and the sweep live
around it, not inside it).

A seed fixes the initial weights and the order of the training batches, the same for every method (common random
numbers), so methods can be compared paired by seed; the masks draw from the global generator, re-seeded after the
model is built. The method is inserted with ``dropkit.attach`` at the model's insertion points for the chosen
group (see ``dropkit.lab.placement``), or at points found automatically in a model that names none (see
``dropkit.lab.insertion``); its schedule comes from its card (``dropkit.schedule.from_card``); and the
label- and statistics-aware methods get targets, validation batches and the end-of-step signal through
``dropkit.protocol``, as any user's loop would.

FocusedDropout's "magnified weight decay": when the card's schedule holds ``weight_decay`` and the schedule
exposes ``participating``, the library's ``dropkit.ParticipationWeightDecay`` raises the optimizer's weight decay
to that value on the participating batches; as that class documents, a run whose own ``weight_decay`` is 0 keeps 0.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch
from torch import nn

import dropkit
import dropkit.schedule
from dropkit import ParticipationWeightDecay, protocol
from dropkit.lab.config import BASELINE, RunConfig, json_safe, primary_metric
from dropkit.lab.data import Dataset, load_dataset
from dropkit.lab.env import environment, resolve_device
from dropkit.lab.metrics import evaluate, loss as task_loss
from dropkit.lab.insertion import (AUTO_GROUPS, MethodDoesNotFit, attach_points, check_fit, explicit_points,
                                  find_insertion_points)
from dropkit.lab.models import MODELS, build_model
from dropkit.lab.placement import adapt_params, attach_params, placement_group, resolve_points
from dropkit.lab.probes.coadaptation import coadaptation_probe

__all__ = ["RunConfig", "RunFailed", "train", "run", "check_run", "environment", "evaluate", "get_dataset",
           "BASELINE", "build_run_model", "method_points"]


class RunFailed(RuntimeError):
    """A method could not run on a model (e.g. a spatial method on flat features); the message says why."""


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


def _make_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               nesterov=config.momentum > 0, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


@torch.no_grad()
def _materialize(model: nn.Module, sample: torch.Tensor) -> None:
    """Give lazy modules (``nn.LazyLinear``, common in users' models) their weights now, right after the model is
    built, so the baseline and every method start from the same weights under a seed."""
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
        was_training = model.training
        model.eval()
        try:
            model(sample)
        finally:
            model.train(was_training)


def method_points(placement: str | list[str] | None, params: Mapping[str, Any], card: Any, model: nn.Module,
                 sample: torch.Tensor):
    """(group, points): a method's insertion points, from an explicit list, the model's own groups, or found
    automatically for a model without ``insertion_points`` (``dropkit.lab.insertion``).

    Raises:
        MethodDoesNotFit: the model has no place of the kind the method needs.
    """
    if isinstance(placement, list):
        return None, explicit_points(model, placement, sample)
    if hasattr(model, "insertion_points"):
        group = placement_group(card, model, placement)
        return group, explicit_points(model, resolve_points(model, group), sample)
    found = find_insertion_points(model, sample)
    if placement is None:
        points = found.for_method(card, params)
        return next((g for g in AUTO_GROUPS if found.group(g) == points), None), points
    points = found.group(placement)
    if not points:
        raise MethodDoesNotFit(f"the model has no {placement!r} points (found: {found})")
    return placement, points


def _insert_method(config: RunConfig, model: nn.Module, sample: torch.Tensor):
    """Attach the run's method and its ``also`` methods (a cocktail); return (handles, cards, placement record).

    The record is the first method's, with the others' records under ``"also"``.
    """
    handles, card, record = _insert_one(config, model, sample, config.method, config.params, config.placement)
    cards, others = [card], []
    for entry in config.also:
        more, card, rec = _insert_one(config, model, sample, entry["method"], entry.get("params", {}),
                                      entry.get("placement"))
        handles += more
        cards.append(card)
        others.append({"method": entry["method"], **rec})
    if others:
        record["also"] = others
    return handles, cards, record


def _insert_one(config: RunConfig, model: nn.Module, sample: torch.Tensor, method: str, params: Mapping[str, Any],
                placement: str | list[str] | None):
    """Attach one method; return (handles, card, placement record)."""
    card = dropkit.get_card(method)
    try:
        group, points = method_points(placement, params, card, model, sample)
    except MethodDoesNotFit as err:
        raise RunFailed(f"{method} does not fit the {config.model}: {err}") from err
    shapes = {p.spec: p.shape for p in points}
    explicit = dict(params)
    for key, value in config.group_params.get(group, {}).items():
        default = card.defaults.get(key)
        # a group rate replaces only a rate-like default: p = 1 ("always apply", Cutout/FocusedDropout) or
        # p = None (derived, Channel DropBlock) mean something else and stay the card's
        if key == "p" and not (isinstance(default, float) and 0.0 < default < 1.0):
            continue
        if key not in explicit and (key in card.defaults or key in card.required):
            explicit[key] = value
    resolved = adapt_params(card, explicit, shapes)
    passed = attach_params(card, explicit, shapes)  # block_size fitted to small maps
    _check_params(card, passed, model, [p.name for p in points])
    record = {"group": group, "points": [p.spec for p in points], "shapes": {k: list(v) for k, v in shapes.items()},
              "params": json_safe(resolved)}
    try:
        check_fit(card, points, explicit)  # a method that refuses these features fails here, not mid-training
    except MethodDoesNotFit as err:
        raise RunFailed(f"{method} does not fit the {config.model}: {err}") from err
    try:
        handles = attach_points(model, method, points, **passed)
    except (ValueError, TypeError) as err:
        raise RunFailed(f"{method} could not be inserted at {record['points']} of the {config.model} "
                        f"(feature shapes {record['shapes']}): {err}") from err
    return handles, card, record


def build_run_model(config: RunConfig, data: Dataset) -> nn.Module:
    """The run's network for ``data``, nothing attached, lazy modules materialized (seed the global RNG first)."""
    model = build_model(config.model, data.in_channels, data.num_classes, data.spatial_size,
                        variant=config.variant, **config.model_params)
    _materialize(model, data.x_train[:2])
    return model


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
    if config.model in MODELS and config.model != "unet" and task == "segmentation":
        raise ValueError(f"{config.data!r} is a segmentation set: use --model unet (or your own FILE.py:NAME)")


def _check_validation_split(config: RunConfig, model: nn.Module, data: Dataset) -> None:
    if data.task == "classification" and len(data.y_val) == 0 and protocol.wants_validation(model):
        raise ValueError(f"{config.method} needs validation data (it compares training batches with held-out "
                         f"ones), but val_size is 0; set val_size ≥ 1 (--val-size)")


def _build(config: RunConfig, data: Dataset) -> tuple[nn.Module, list[Any], list[Any], dict[str, Any]]:
    """The run's model (initial weights fixed by the seed) with its method (and its cocktail's ``also`` methods)
    attached: (model, handles, cards, placement record)."""
    torch.manual_seed(config.seed)  # initial weights: the same for every method under this seed
    model = build_run_model(config, data)
    if config.probe is not None and not hasattr(model, "probe_point"):
        raise ValueError(f"the co-adaptation probe needs the model to name its penultimate module in "
                         f"`probe_point`; {config.model} does not: set it, or run without the probe")
    handles, cards, placement = [], [], {"group": None, "points": [], "shapes": {}, "params": {}}
    if config.method != BASELINE:
        handles, cards, placement = _insert_method(config, model, data.x_train[:2])
        _check_validation_split(config, model, data)
    return model, handles, cards, placement


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
          on_epoch: Callable[[int, dict[str, float]], None] | None = None, evaluate_test: bool = True,
          val_epochs: Collection[int] | None = None) -> tuple[dict[str, Any], nn.Module, Dataset]:
    """Train and evaluate one configuration.

    Args:
        evaluate_test: evaluate the test split after the last epoch (and every ``test_every``); False for a
            search, which must not read it (the ``gap`` is then train − validation).
        val_epochs: the epochs after which the validation split is evaluated (None: every epoch); a search reads
            it only where its pruner does.

    Returns:
        (result, model, dataset): ``result`` holds ``metrics`` (final), ``curves`` (one dict per epoch),
        ``placement``, ``environment`` and ``wall_s``; the trained model (method still attached) serves probes.

    Raises:
        RunFailed: the method does not fit the model (its message says where and why), or training diverged
            (a non-finite loss during training, or non-finite final metrics).
        ValueError, TypeError: see :func:`check_run`.
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    data = dataset if dataset is not None else get_dataset(config)
    task = data.task
    _check_model_task(config, task)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    model, _, cards, placement = _build(config, data)
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
    schedules, weight_decay_rule = [], None
    for card in cards:  # one schedule per method of a cocktail (each drives only its own layers)
        schedule = dropkit.schedule.from_card(card, model, total_steps)
        if schedule is not None:
            schedules.append(schedule)
        if card.schedule is not None and "weight_decay" in card.schedule and hasattr(schedule, "participating"):
            weight_decay_rule = ParticipationWeightDecay(optimizer, schedule, float(card.schedule["weight_decay"]))
    # The protocol speaks class labels (N,); per-pixel targets of a segmentation set have no label-aware reading.
    aware = task == "classification"
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
            for schedule in schedules:
                schedule.step()
            if weight_decay_rule is not None:
                weight_decay_rule.step()
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
            loss = task_loss(logits, yb, task)
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
        if len(y_val) and (val_epochs is None or epoch in val_epochs):
            row.update({f"val_{k}": v for k, v in evaluate(model, data.x_val, data.y_val, task, data.num_classes,
                                                            device).items()})
        if evaluate_test and (epoch == config.epochs or (config.test_every and epoch % config.test_every == 0)):
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
    if evaluate_test:
        metrics["gap"] = train_eval[key] - test_metrics[key]
        metrics["n_test"] = len(data.y_test)
    elif f"val_{key}" in metrics:
        metrics["gap"] = train_eval[key] - metrics[f"val_{key}"]
    metrics["n_train"] = n
    _check_final_metrics(metrics)
    result = {
        "metrics": metrics, "curves": curves, "placement": placement, "task": task, "primary": f"test_{key}",
        "environment": environment(device), "schedule": None if not cards or cards[0].schedule is None
        else json_safe(dict(cards[0].schedule)),
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
        result["probe"] = coadaptation_probe(model, data, device=next(model.parameters()).device,
                                             seed=config.seed, **dict(config.probe))
    result["wall_s"] = time.perf_counter() - started
    return result

