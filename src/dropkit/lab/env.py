"""What produced a run (library versions, platform, device, git commit) and which device it runs on."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

__all__ = ["environment", "git_commit", "resolve_device", "package_version"]

_COMMIT: list[str | None] = []  # asked once per process: a sweep records it with every run


def git_commit() -> str | None:
    """The commit of the checkout dropkit runs from, or None outside a git checkout."""
    if not _COMMIT:
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                 capture_output=True, text=True, timeout=5)
            _COMMIT.append(out.stdout.strip() or None if out.returncode == 0 else None)
        except (OSError, subprocess.SubprocessError):
            _COMMIT.append(None)
    return _COMMIT[0]


def package_version() -> str | None:
    """dropkit's installed version, or None when it runs from a source tree that was never installed."""
    try:
        return version("dropkit")
    except PackageNotFoundError:
        return None


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
        "dropkit": getattr(dropkit, "__version__", None) or package_version(),
        "commit": git_commit(),
    }


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; a CUDA name where CUDA is missing raises ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available here")
    return torch.device(name)
