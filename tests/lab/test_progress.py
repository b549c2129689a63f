"""The sweep's progress bar (``dropkit.lab.progress``): the ETA counts epochs trained in this session."""

from __future__ import annotations

import io

import pytest

from dropkit.lab import progress as P


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_eta_ignores_runs_resumed_from_the_store(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(P.time, "perf_counter", clock)
    bar = P.Progress(4, 40, stream=io.StringIO())
    bar.skip(10)
    bar.skip(10)
    assert bar.eta() != bar.eta()  # NaN: no pace yet
    bar.start_run("dropout seed 0")
    for e in range(1, 6):
        clock.now += 2.0
        bar.epoch(e, 10, {"val_acc": 0.5})
    assert bar.eta() == pytest.approx(2.0 * 15)  # 2 s an epoch, 15 epochs left (the skipped 20 are not work)
    bar.end_run("done", 10, 10.0)  # a run reported whole (parallel backends) counts all its epochs
    assert bar.epochs_done == 10 and bar.eta() == pytest.approx(1.0 * 10)


def test_plain_lines_when_not_a_terminal_and_silence_when_disabled():
    out = io.StringIO()
    bar = P.Progress(2, 4, stream=out)
    bar.start_run("none seed 0")
    bar.epoch(1, 2, {})
    bar.end_run("done", 2, 1.5, "test_acc 0.9000")
    bar.start_run("dropblock seed 0")
    bar.end_run("failed", 2, 0.0, "ValueError: [bad] block")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/2] none seed 0: done in 1.5s test_acc 0.9000 · ETA")
    assert lines[1].startswith("[2/2] dropblock seed 0: failed in 0.0s ValueError: [bad] block")  # no markup eaten
    quiet = io.StringIO()
    bar = P.Progress(1, 1, stream=quiet, enabled=False)
    bar.start_run("x")
    bar.end_run("done", 1, 1.0)
    bar.close()
    assert quiet.getvalue() == ""


def test_terminal_bar_shows_runs_elapsed_and_eta():
    out = _Terminal()
    bar = P.Progress(2, 4, stream=out)
    bar.skip(2)
    bar.start_run("none seed 1")
    bar.epoch(1, 2, {"val_acc": 0.75})
    bar.end_run("failed", 2, 0.0, "diverged")
    bar.close()
    text = out.getvalue()
    assert "2/2 runs · 1 failed" in text and "ETA" in text and "none seed 1: failed: diverged" in text


def test_format_seconds():
    assert P.format_seconds(59.6) == "1:00"
    assert P.format_seconds(3725) == "1:02:05"
    assert P.format_seconds(-3) == "0:00"
