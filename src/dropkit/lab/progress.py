"""Progress bars with an ETA for sweeps, drawn on one terminal line (plain lines when not a terminal).

The ETA counts training epochs, the unit of work that dominates a run: elapsed time over epochs finished in this
session times the epochs left (runs already in the store are not counted, so a resumed sweep estimates from its
own pace). Parallel backends report whole runs only; the bar then moves a run's epochs at once.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A bar over ``total`` runs of ``epochs`` epochs each (``epochs`` may differ per run: pass the sum as
    ``total_epochs``)."""

    def __init__(self, total: int, total_epochs: int, *, stream: IO[str] | None = None, enabled: bool = True,
                 width: int = 28) -> None:
        self.total, self.total_epochs = total, max(1, total_epochs)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.runs_done = self.failed = self.skipped = 0
        self.epochs_done = 0  # epochs trained in this session
        self.epochs_skipped = 0
        self._run_epochs = 0
        self._label = ""
        self._detail = ""
        self._start = time.perf_counter()
        self._last_draw = 0.0

    # ---------------------------------------------------------------------------------------------- events
    def skip(self, epochs: int) -> None:
        """A run already finished in the store."""
        self.skipped += 1
        self.epochs_skipped += epochs

    def start_run(self, label: str) -> None:
        self._label, self._detail, self._run_epochs = label, "", 0
        self._draw(force=True)

    def epoch(self, epoch: int, total: int, row: dict[str, Any]) -> None:
        self.epochs_done += 1
        self._run_epochs += 1
        val = next((f"{k} {v:.3f}" for k, v in row.items() if k in ("val_acc", "val_dice")), "")
        self._detail = f"epoch {epoch}/{total} {val}".rstrip()
        self._draw()

    def end_run(self, status: str, epochs: int, wall_s: float, note: str = "") -> None:
        self.epochs_done += max(0, epochs - self._run_epochs)
        self._run_epochs = 0
        self.runs_done += 1
        self.failed += status == "failed"
        if self.enabled and not self.tty:
            print(f"[{self.runs_done + self.skipped}/{self.total}] {self._label}: {status} in {wall_s:.1f}s"
                  f"{' ' + note if note else ''} · ETA {format_seconds(self.eta())}", file=self.stream, flush=True)
        elif self.tty and status == "failed":
            self._clear()
            print(f"  {self._label}: failed: {note}", file=self.stream, flush=True)
        self._draw(force=True)

    def close(self) -> None:
        if self.tty:
            self._draw(force=True)
            print(file=self.stream, flush=True)

    # ----------------------------------------------------------------------------------------------- drawing
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def eta(self) -> float:
        left = self.total_epochs - self.epochs_skipped - self.epochs_done
        if self.epochs_done == 0:
            return float("nan")
        return self.elapsed() / self.epochs_done * max(0, left)

    def line(self) -> str:
        finished = self.runs_done + self.skipped
        frac = (self.epochs_done + self.epochs_skipped) / self.total_epochs
        filled = int(round(self.width * min(1.0, frac)))
        eta = self.eta()
        eta_s = "--:--" if eta != eta else format_seconds(eta)
        bar = "█" * filled + "░" * (self.width - filled)
        fails = f" · {self.failed} failed" if self.failed else ""
        return (f"{bar} {finished}/{self.total} runs{fails} · {format_seconds(self.elapsed())} elapsed · ETA {eta_s}"
                f" · {self._label} {self._detail}").rstrip()

    def _clear(self) -> None:
        print("\r\033[K", end="", file=self.stream)

    def _draw(self, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < 0.2:
            return
        self._last_draw = now
        print("\r\033[K" + self.line(), end="", file=self.stream, flush=True)
