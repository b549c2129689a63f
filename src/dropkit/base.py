"""The base class of dropkit's layers: a validated drop rate, a switch for schedules, and a generator.

Schedules (``dropkit.schedule``), ``dropkit.attach`` and ``dropkit.mc_dropout`` find dropkit layers by this
class, so every method module derives from it. The layer never counts steps itself: a schedule object sets
``p`` (or ``enabled``) from outside, between steps.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from dropkit.validation import check_bool, check_generator, check_probability

__all__ = ["DropkitModule"]


class DropkitModule(nn.Module):
    """Base of every dropkit layer.

    Attributes:
        p: the drop probability (or fraction), validated on every assignment.
        enabled: when False the layer is the identity in training too; a participation schedule flips it per batch.
        generator: optional ``torch.Generator`` used for every random draw, for reproducible masks.
    """

    #: the name in error messages: ``register`` sets the registered name on each method class; "dropkit" otherwise
    method_name: ClassVar[str] = "dropkit"
    #: parameters shown by ``extra_repr`` besides ``p``
    repr_fields: ClassVar[tuple[str, ...]] = ()
    #: False where p = 1 is meaningless (infinite noise variance, a division by 1 − p): p must then be < 1
    p_allows_one: ClassVar[bool] = True

    def __init__(self, p: float = 0.0, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = p
        self.enabled = True
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{self.method_name}: generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        # Goes through object.__setattr__ (nn.Module defers plain attributes to it), so schedules are checked too.
        self._p = check_probability(value, "p", self.method_name, allow_one=self.p_allows_one)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = check_bool(value, "enabled", self.method_name)

    @property
    def active(self) -> bool:
        """True when ``forward`` will regularize: training, enabled and p > 0."""
        return self.training and self._enabled and self._p > 0.0

    def attached_to(self, module: nn.Module, where: str) -> None:
        """Called by ``dropkit.attach`` with the module the layer runs ``where`` ("after"/"before"); a layer that
        depends on what produces its input (its feature axis, say) reads it here. Default: nothing."""

    def _generator_for(self, x: torch.Tensor) -> torch.Generator | None:
        return check_generator(self.generator, x, self.method_name)

    def extra_repr(self) -> str:
        parts = [f"p={self._p}"]
        parts += [f"{name}={getattr(self, name)!r}" for name in self.repr_fields]
        return ", ".join(parts)
