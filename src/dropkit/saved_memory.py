"""Exact count of the bytes autograd keeps for backward, with ``torch.autograd.graph.saved_tensors_hooks``.

Activation memory, not speed, is what limits batch and volume size in training, and it does not depend on the
machine's load: every tensor autograd saves passes through the pack hook, so the count is exact. Tensors are
counted once per storage (a view and its base, or one tensor saved by two nodes, are one allocation), and storages
the caller names as not activation memory (parameters, the input itself) are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["SavedTensorCounter", "saved_bytes", "saved_bytes_per_input_byte", "training_step_saved_bytes"]


class SavedTensorCounter(torch.autograd.graph.saved_tensors_hooks):
    """Context manager that records every storage saved for backward while it is active.

    Attributes:
        storages: storage data pointer → its size in bytes (each storage counted once).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.storages: dict[tuple[str, int], int] = {}
        self._excluded = {_storage_key(t) for t in exclude}
        super().__init__(self._pack, lambda saved: saved)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in self._excluded:
            self.storages[key] = tensor.untyped_storage().nbytes()
        return tensor

    def __enter__(self) -> SavedTensorCounter:
        super().__enter__()
        return self

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of the distinct storages saved so far."""
        return sum(self.storages.values())


def _storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    return (str(tensor.device), tensor.untyped_storage().data_ptr())


def saved_bytes(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, count_input: bool = False) -> int:
    """Bytes ``fn(x)`` saves for backward (distinct storages; ``x``'s own storage left out unless ``count_input``:
    in a network the input is usually kept by the layer before or after anyway)."""
    x = x.detach().requires_grad_()
    with SavedTensorCounter(exclude=() if count_input else (x,)) as counter:
        y = fn(x)
    del y
    return counter.total_bytes


def saved_bytes_per_input_byte(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    """:func:`saved_bytes` over the input's size in bytes: 0.25 for a bool mask on float32, 1.0 for a float one."""
    return saved_bytes(fn, x) / (x.numel() * x.element_size())


def training_step_saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Peak bytes kept for backward by one training forward of ``model`` on ``x`` (parameters left out: they are
    not activation memory). Saved tensors are only released during backward, so the end of the forward is the
    peak."""
    with SavedTensorCounter(exclude=list(model.parameters()) + list(model.buffers())) as counter:
        out = model(x)
    total = counter.total_bytes
    out.float().sum().backward()
    return total
