"""Argument and tensor checks shared by every dropkit method.

Every check raises with a message that names the method, the argument, the value it got and what is allowed,
so a bad call fails at the method's boundary instead of deep inside torch. The checks run on Python values and
on tensor metadata only (dtype, ndim, device), never on tensor contents, so they cost nothing inside a
compiled graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import Any

import torch

__all__ = [
    "check_probability",
    "check_positive_int",
    "check_int_tuple",
    "check_choice",
    "check_bool",
    "check_real",
    "check_float_tensor",
    "check_ndim",
    "check_generator",
    "check_writable_folder",
    "check_output_file",
]


def _is_real_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_probability(value: Any, name: str, method: str, *, allow_one: bool = True) -> float:
    """Return ``value`` as a float in [0, 1] (or [0, 1) when ``allow_one`` is False).

    Raises:
        TypeError: ``value`` is not a real number (bools and tensors are refused: a tensor ``p`` would force a
            host sync or a graph break in ``forward``).
        ValueError: ``value`` is NaN or outside the allowed interval.
    """
    if not _is_real_number(value):
        raise TypeError(f"{method}: {name} must be a real number in [0, 1], got {value!r} ({type(value).__name__})")
    value = float(value)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if math.isnan(value) or value < 0.0 or not upper_ok:
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{method}: {name} must be in {interval}, got {value}")
    return value


def check_real(
    value: Any,
    name: str,
    method: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float within the (optionally open) bounds given."""
    lo_br, hi_br = ("(" if low_open else "["), (")" if high_open else "]")
    allowed = f"{lo_br}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_br}"
    if not _is_real_number(value):
        raise TypeError(f"{method}: {name} must be a real number in {allowed}, got {value!r}")
    value = float(value)
    bad = math.isnan(value) or math.isinf(value)
    if low is not None:
        bad = bad or (value <= low if low_open else value < low)
    if high is not None:
        bad = bad or (value >= high if high_open else value > high)
    if bad:
        raise ValueError(f"{method}: {name} must be in {allowed}, got {value}")
    return value


def check_positive_int(value: Any, name: str, method: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{method}: {name} must be an integer ≥ {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{method}: {name} must be an integer ≥ {minimum}, got {value}")
    return int(value)


def check_int_tuple(value: Any, name: str, method: str, length: int, *, minimum: int = 1) -> tuple[int, ...]:
    """Return an int or a sequence of ``length`` ints (each ≥ ``minimum``) as a tuple of ``length`` ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        items: Sequence[Any] = (value,) * length
    elif isinstance(value, Sequence) and len(value) == length:
        items = value
    else:
        raise TypeError(f"{method}: {name} must be an int or a sequence of {length} ints, got {value!r}")
    return tuple(check_positive_int(v, name, method, minimum=minimum) for v in items)


def check_choice(value: Any, name: str, method: str, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{method}: {name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_bool(value: Any, name: str, method: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{method}: {name} must be True or False, got {value!r}")
    return value


def check_float_tensor(x: Any, method: str, name: str = "input") -> torch.Tensor:
    """Refuse anything but a floating-point tensor: masks and rescaling are meaningless on integers."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{method}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{method}: {name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_ndim(x: torch.Tensor, method: str, allowed: Iterable[int], layout: str, name: str = "input") -> int:
    """Check ``x.ndim`` against ``allowed`` and say which layout the method expects."""
    allowed = tuple(allowed)
    if x.ndim not in allowed:
        dims = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{method}: {name} must be {dims} {layout}, got a {x.ndim}-D tensor of shape {tuple(x.shape)}")
    return x.ndim


def check_generator(generator: Any, x: torch.Tensor, method: str) -> torch.Generator | None:
    """A generator must be a ``torch.Generator`` on the same device type as the input it draws masks for."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{method}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise ValueError(
            f"{method}: generator is on device '{generator.device}' but the input is on '{x.device}'; "
            f"create it with torch.Generator(device='{x.device.type}')"
        )
    return generator


def check_writable_folder(path: Any, name: str, *, file: Any = None) -> None:
    """Refuse, before any work, a folder that cannot be created or written in: a file in its way, or no permission.

    ``name`` is what the message calls it (``"--out"``, ``"db"``, ...); ``file``, when the folder is a file's
    (a database, a CSV), is the path the message shows. Nothing is created here.
    """
    import os
    from pathlib import Path

    shown = str(path if file is None else file)
    target = Path(path)
    for existing in (target, *target.parents):
        if existing.exists():
            if not existing.is_dir():
                raise ValueError(f"{name} {shown!r}: {str(existing)!r} is a file, not a folder; give a path in a folder")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise ValueError(f"{name} {shown!r}: cannot write in {str(existing)!r}")
            return


def check_output_file(path: Any, name: str) -> None:
    """Refuse, before any work, a file that could not be written: a folder of that name, or a folder that cannot
    be created or written in."""
    from pathlib import Path

    if Path(path).is_dir():
        raise ValueError(f"{name} {str(path)!r} is a folder; give a file path")
    check_writable_folder(Path(path).parent, name, file=path)
