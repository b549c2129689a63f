"""The training-loop protocol of label- and statistics-aware layers.

Some dropkit layers need more than their input tensor: Neuron-Specific Dropout compares per-class means of a
training batch with those of a validation batch, and clustering-based adaptive dropout re-clusters feature,
weight or gradient statistics every T optimizer steps. Those layers sit inside an *unmodified* model (a plain
``nn.Sequential``, a torchvision network, a model built by ``dropkit.attach``), so the model's ``forward`` cannot
pass them labels. Instead, the training loop talks to every participating layer through four functions:

``supervise(model, targets)``
    Context manager around the training forward pass. Inside it every participating layer can read ``targets``
    (the integer class labels of the batch, shape ``(N,)``).
``wants_validation(model) -> bool``
    True when some layer of ``model`` needs validation batches (``ns_dropout``).
``feed_validation(model, x_val, y_val, mode="eval")``
    Runs one validation batch through ``model`` under ``torch.no_grad()`` so that the layers that need it can
    record its statistics. Every module's ``training`` flag and every normalisation layer's running statistics
    are left exactly as they were. Returns the (detached) model output, which the loop may use for a validation
    loss at no extra cost.
``step_statistics(model)``
    Called once per optimizer step, *after* ``optimizer.step()``: layers that update every T steps (clustering
    dropout) count the step, read weights or ``.grad`` and re-cluster when due.

A typical loop (the validation batch comes from a held-out part of the *training* data, never the test set)::

    import itertools, dropkit

    val_batches = itertools.cycle(val_loader)          # e.g. 20 % of the training set, as in Shunk (2022)
    for x, y in train_loader:
        if dropkit.wants_validation(model):
            x_val, y_val = next(val_batches)
            dropkit.feed_validation(model, x_val, y_val)   # before the forward: the mask uses this batch
        with dropkit.supervise(model, y):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        dropkit.step_statistics(model)                 # after the step: reads weights/gradients, counts T

Calls are cheap when a model holds no participating layer: ``supervise`` and ``step_statistics`` then do
nothing, so a generic trainer may always use them; ``feed_validation`` raises ``ValueError`` (running a whole
forward pass for nobody is a bug in the loop), so guard it with ``wants_validation``.

Writing a participating layer: derive from :class:`ProtocolLayer` (as well as ``DropkitModule``), set the class
attributes ``needs_targets`` / ``needs_validation`` / ``needs_steps`` and, in ``forward``, read
:attr:`ProtocolLayer.protocol_phase` (``None`` outside the protocol, ``"train"`` inside ``supervise``,
``"validation"`` inside ``feed_validation``) and :attr:`ProtocolLayer.protocol_targets`. Layers that need steps
implement :meth:`ProtocolLayer.protocol_step`. The phase and targets are plain Python attributes set from
outside, so ``forward`` stays traceable by ``torch.compile`` (the phase is a guard, not a graph break).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = [
    "ProtocolLayer",
    "protocol_layers",
    "supervise",
    "wants_validation",
    "feed_validation",
    "step_statistics",
]

_PHASES = (None, "train", "validation", "inference")


class ProtocolLayer:
    """Mixin for layers that take part in the training-loop protocol (see the module docstring).

    Class attributes a layer sets:
        needs_targets: the layer reads the batch labels in the supervised training forward.
        needs_validation: the layer needs ``feed_validation`` batches (makes ``wants_validation`` True).
        needs_steps: the layer's :meth:`protocol_step` is called by ``step_statistics``.

    Instance attributes set by the protocol functions (never by the layer itself):
        protocol_phase: ``None``, ``"train"`` (inside ``supervise``), ``"validation"`` (inside
            ``feed_validation``, for every protocol layer of the model) or ``"inference"`` (while
            ``dropkit.mc_dropout`` keeps the layer sampling; ``layer.train()``/``eval()`` clears it). Layers that
            gather training statistics must not gather them in the last two.
        protocol_targets: the integer labels of the batch in the current phase, or ``None``.
    """

    needs_targets: ClassVar[bool] = False
    needs_validation: ClassVar[bool] = False
    needs_steps: ClassVar[bool] = False

    # Class-level defaults, so that layers need not call a mixin __init__ (nn.Module's MRO stays simple).
    protocol_phase: str | None = None
    protocol_targets: torch.Tensor | None = None

    def protocol_step(self) -> None:
        """Called once per optimizer step by ``step_statistics`` when ``needs_steps`` is True."""

    def train(self, mode: bool = True):  # type: ignore[override]
        # model.train() / model.eval() ends an MC-dropout inference phase that was switched on without a context.
        if self.protocol_phase == "inference":
            self.protocol_phase = None
        return super().train(mode)  # type: ignore[misc]

    def observes_training(self) -> bool:
        """True in a forward whose statistics belong to training: inside ``supervise``, or outside the protocol
        with autograd on (a bare training loop). Never in ``feed_validation``, MC-dropout inference or a
        ``torch.no_grad()`` pass."""
        phase = self.protocol_phase
        return phase == "train" or (phase is None and torch.is_grad_enabled())


def protocol_layers(model: nn.Module) -> list[ProtocolLayer]:
    """Every module of ``model`` (itself included) that implements :class:`ProtocolLayer`, each once."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"dropkit protocol: model must be a torch.nn.Module, got {type(model).__name__}")
    seen: set[int] = set()
    found: list[ProtocolLayer] = []
    for module in model.modules():  # nn.Module.modules() already yields shared modules once
        if isinstance(module, ProtocolLayer) and id(module) not in seen:
            seen.add(id(module))
            found.append(module)
    return found


def _check_targets(targets: Any, who: str, name: str) -> torch.Tensor:
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"{who}: {name} must be a torch.Tensor of integer class labels, got {type(targets).__name__}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"{who}: {name} must hold integer class labels, got dtype {targets.dtype}")
    if targets.ndim != 1:
        raise ValueError(f"{who}: {name} must be 1-D (N,) class labels, got shape {tuple(targets.shape)}")
    return targets


@contextmanager
def _phase(layers: list[ProtocolLayer], phase: str, targets: torch.Tensor) -> Iterator[None]:
    previous = [(layer.protocol_phase, layer.protocol_targets) for layer in layers]
    try:
        for layer in layers:
            layer.protocol_phase = phase
            layer.protocol_targets = targets
        yield
    finally:
        # Restore rather than clear, so that nested contexts (rare, but legal) unwind correctly.
        for layer, (old_phase, old_targets) in zip(layers, previous):
            layer.protocol_phase = old_phase
            layer.protocol_targets = old_targets


@contextmanager
def supervise(model: nn.Module, targets: torch.Tensor) -> Iterator[nn.Module]:
    """Context manager around the training forward: label-aware layers of ``model`` see ``targets``.

    Args:
        model: any ``nn.Module``; a model without participating layers is accepted (the context does nothing).
        targets: integer class labels, shape ``(N,)``, N the batch size of the forward inside the context.

    Yields:
        ``model``, for ``with supervise(model, y) as m: out = m(x)``.
    """
    targets = _check_targets(targets, "supervise", "targets")
    layers = [layer for layer in protocol_layers(model) if layer.needs_targets]
    with _phase(layers, "train", targets):
        yield model


def wants_validation(model: nn.Module) -> bool:
    """True when at least one layer of ``model`` needs ``feed_validation`` batches."""
    return any(layer.needs_validation for layer in protocol_layers(model))


_NORM_TYPES = (nn.modules.batchnorm._NormBase,)  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm with stats


def feed_validation(
    model: nn.Module, x_val: Any, y_val: torch.Tensor, *, mode: str = "eval"
) -> Any:
    """Run one validation batch through ``model`` for the layers that need it.

    The pass runs under ``torch.no_grad()``. Afterwards every module's ``training`` flag and every normalisation
    layer's running statistics (and ``num_batches_tracked``) are as they were before the call.

    Args:
        model: a model holding at least one layer with ``needs_validation`` (else ``ValueError``).
        x_val: the validation input, passed to ``model(x_val)`` as is.
        y_val: integer labels of the validation batch, shape ``(N_val,)``.
        mode: ``"eval"`` (default; NS-Dropout's reading, ``docs/methods/ns_dropout.md``): the whole model runs in eval
            mode, so BatchNorm normalises with its running statistics and random layers are off.
            ``"train"``: modules keep their flags, so BatchNorm normalises with the validation batch's own
            statistics as the training batch does; running statistics are snapshotted and restored, and random
            layers before the aware layer do draw (from the global RNG) as in training.

    Returns:
        The model's output on ``x_val`` (no gradient).
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"feed_validation: mode must be one of 'eval', 'train'; got {mode!r}")
    layers = protocol_layers(model)
    takers = [layer for layer in layers if layer.needs_validation]
    if not takers:
        raise ValueError(
            "feed_validation: no layer of this model needs validation batches "
            "(guard the call with dropkit.wants_validation(model))"
        )
    y_val = _check_targets(y_val, "feed_validation", "y_val")
    flags = [(module, module.training) for module in model.modules()]
    norms = [m for m in model.modules() if isinstance(m, _NORM_TYPES)]
    saved = [{k: b.detach().clone() for k, b in m.named_buffers(recurse=False) if b is not None} for m in norms]
    try:
        if mode == "eval":
            model.eval()
        # every protocol layer, not only the takers, sees the phase: statistics layers must not count this batch
        with torch.no_grad(), _phase(layers, "validation", y_val):
            return model(x_val)
    finally:
        for module, was_training in flags:
            module.training = was_training
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for k, value in buffers.items():
                    getattr(m, k).copy_(value)


def step_statistics(model: nn.Module) -> int:
    """Tell every layer with ``needs_steps`` that one optimizer step has been taken (call after ``step()``).

    Returns:
        How many layers were notified (0 for a model without such layers: then the call does nothing).
    """
    layers = [layer for layer in protocol_layers(model) if layer.needs_steps]
    for layer in layers:
        layer.protocol_step()
    return len(layers)
