"""The sweep's progress bar, drawn by rich, with an ETA counted in epochs (plain lines when not a terminal).

The ETA counts training epochs, the unit of work that dominates a run: elapsed time over epochs finished in this
session times the epochs left (runs already in the store are not counted, so a resumed sweep estimates from its
own pace; rich's own estimate would count them as instant work). Parallel backends report whole runs only; the
bar then moves a run's epochs at once.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _EpochETAColumn(ProgressColumn):
    """The ETA from this session's pace in epochs (see the module docstring)."""

    def __init__(self, progress: "Progress") -> None:
        super().__init__()
        self.progress = progress

    def render(self, task: Task) -> Text:
        eta = self.progress.eta()
        return Text(f"ETA {'--:--' if eta != eta else format_seconds(eta)}", style="progress.remaining")


class Progress:
    """A bar over ``total`` runs of ``epochs`` epochs each (``epochs`` may differ per run: pass the sum as
    ``total_epochs``).

    Args:
        total: runs in the sweep, the finished ones included.
        total_epochs: their epochs, summed.
        stream: where to draw (default stderr).
        enabled: False draws and prints nothing.
    """

    def __init__(self, total: int, total_epochs: int, *, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.total, self.total_epochs = total, max(1, total_epochs)
        self.enabled = enabled
        self.console = Console(file=stream if stream is not None else sys.stderr, highlight=False)
        self.tty = enabled and self.console.is_terminal
        self.runs_done = self.failed = self.skipped = 0
        self.epochs_done = 0  # epochs trained in this session
        self.epochs_skipped = 0
        self._run_epochs = 0
        self._label = ""
        self._start = time.perf_counter()
        self._bar: RichProgress | None = None
        if self.tty:
            self._bar = RichProgress(
                BarColumn(), TextColumn("{task.fields[runs]}"), TimeElapsedColumn(), _EpochETAColumn(self),
                TextColumn("{task.description}"), console=self.console, refresh_per_second=5)
            self._task = self._bar.add_task("", total=self.total_epochs, runs=self._runs_text())
            self._bar.start()

    # ---------------------------------------------------------------------------------------------- events
    def skip(self, epochs: int) -> None:
        """A run already finished in the store."""
        self.skipped += 1
        self.epochs_skipped += epochs
        self._update()

    def start_run(self, label: str) -> None:
        self._label, self._run_epochs = label, 0
        self._update(description=label)

    def epoch(self, epoch: int, total: int, row: dict[str, Any]) -> None:
        self.epochs_done += 1
        self._run_epochs += 1
        val = next((f"{k} {v:.3f}" for k, v in row.items() if k in ("val_acc", "val_dice")), "")
        self._update(description=f"{self._label} epoch {epoch}/{total} {val}".rstrip())

    def end_run(self, status: str, epochs: int, wall_s: float, note: str = "") -> None:
        self.epochs_done += max(0, epochs - self._run_epochs)
        self._run_epochs = 0
        self.runs_done += 1
        self.failed += status == "failed"
        if self.enabled and not self.tty:
            self.console.print(f"[{self.runs_done + self.skipped}/{self.total}] {self._label}: {status} in "
                               f"{wall_s:.1f}s{' ' + note if note else ''} · ETA {format_seconds(self.eta())}",
                               markup=False, soft_wrap=True)
        elif self.tty and status == "failed":
            self.console.print(f"  {self._label}: failed: {note}", markup=False, soft_wrap=True)
        self._update()

    def close(self) -> None:
        if self._bar is not None:
            self._update()
            self._bar.stop()

    # -------------------------------------------------------------------------------------------- counting
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def eta(self) -> float:
        """Seconds left at this session's pace per epoch (NaN before the first epoch)."""
        left = self.total_epochs - self.epochs_skipped - self.epochs_done
        if self.epochs_done == 0:
            return float("nan")
        return self.elapsed() / self.epochs_done * max(0, left)

    def _runs_text(self) -> str:
        fails = f" · {self.failed} failed" if self.failed else ""
        return f"{self.runs_done + self.skipped}/{self.total} runs{fails}"

    def _update(self, **fields: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.epochs_done + self.epochs_skipped, runs=self._runs_text(),
                             **fields)
