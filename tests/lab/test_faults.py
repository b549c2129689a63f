"""Sweeps under faults, as a user would meet them: ``dropkit sweep`` processes killed at random moments, two sweeps
on one store at once, worker processes outliving their sweep, and the same config run in separate processes.

Linux only (it reads /proc to find a sweep's worker processes). Marked slow: every case starts ``dropkit`` processes,
and each of them imports torch. Run with ``python -m pytest -m slow tests/lab/test_faults.py`` (``make test-faults``).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dropkit

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

SRC = str(Path(dropkit.__file__).resolve().parent.parent)


def write_sweep(path: Path, npz: str, methods: list[str], seeds: int, *, epochs: int = 2, model: str = "mlp",
                train_size: int = 60) -> Path:
    names = ", ".join(f'"{m}"' for m in methods)
    hidden = "model_params = { hidden = [16] }\n" if model == "mlp" else "model_params = { width = 4 }\n"
    path.write_text(f'[grid]\nmethods = [{names}]\nseeds = {seeds}\n[run]\ndata = "{npz}"\nmodel = "{model}"\n'
                    f"train_size = {train_size}\nval_size = 6\nepochs = {epochs}\nbatch_size = 16\n{hidden}")
    return path


def start_sweep(sweep: Path, db: Path, *, workers: int = 1, session: bool = False) -> subprocess.Popen:
    # one torch thread in every process: the thread count changes the order of float reductions, so runs are
    # bit-identical across processes only at equal thread counts (worker processes use one thread each)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    # SIGINT as a terminal's foreground job has it: a test run started in the background (`cmd &` in a script)
    # passes SIGINT on ignored, and a Python started so never turns Ctrl-C into KeyboardInterrupt
    return subprocess.Popen([sys.executable, "-m", "dropkit.cli", "sweep", str(sweep), "--db", str(db), "-q",
                             "--workers", str(workers)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=session,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def rows(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            return conn.execute("SELECT config_hash, status, finished_at, metrics FROM runs ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # the sweep has created the file but not yet its tables
            return []


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_sweep_killed_three_times_then_resumed_loses_and_duplicates_nothing(npz, tmp_path):
    sweep = write_sweep(tmp_path / "s.toml", npz, ["none", "dropout", "gaussian_dropout"], seeds=3)
    db = tmp_path / "k.db"
    rng = random.Random(0)
    finished: dict[str, tuple] = {}  # config hash → (finished_at, metrics) when first seen done
    for workers in (1, 2, 1):
        proc = start_sweep(sweep, db, workers=workers)
        before = len(finished)
        # a random moment after at least one more run has finished (so every kill leaves progress behind)
        wait_for(lambda: sum(s == "done" for _, s, _, _ in rows(db)) > before or proc.poll() is not None, 120,
                 "a run to finish")
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        for h, status, at, metrics in rows(db):
            if status == "done":
                assert finished.setdefault(h, (at, metrics)) == (at, metrics)  # never redone nor changed
    proc = start_sweep(sweep, db, workers=2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    final = rows(db)
    assert len(final) == 9 and len({h for h, *_ in final}) == 9
    assert all(status == "done" for _, status, _, _ in final)
    for h, _, at, metrics in final:
        if h in finished:
            assert finished[h] == (at, metrics)
    assert f"{len(finished)} already in" in out


def test_two_sweeps_on_one_store_at_once_share_the_work(npz, tmp_path):
    a = write_sweep(tmp_path / "a.toml", npz, ["none", "dropout"], seeds=3)
    b = write_sweep(tmp_path / "b.toml", npz, ["dropout", "gaussian_dropout"], seeds=3)
    db = tmp_path / "shared.db"
    procs = [start_sweep(a, db, workers=1), start_sweep(b, db, workers=2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "locked" not in err and "not claimed" not in err and "Traceback" not in err
    final = rows(db)
    assert len(final) == 9 and len({h for h, *_ in final}) == 9  # the 3 shared runs once each
    assert all(status == "done" for _, status, _, _ in final)


def start_long_sweep(tmp_path: Path, npz: str, *, session: bool = False) -> tuple[subprocess.Popen, Path]:
    """A two-worker sweep, returned once both workers hold a run. Its runs take minutes (every caller kills it):
    with 200 epochs a quiet machine finished the whole sweep before a test's Ctrl-C arrived."""
    sweep = write_sweep(tmp_path / "long.toml", npz, ["none", "dropout"], seeds=2, epochs=20000)
    db = tmp_path / "long.db"
    proc = start_sweep(sweep, db, workers=2, session=session)
    wait_for(lambda: sum(s == "running" for _, s, _, _ in rows(db)) == 2 and len(children(proc.pid)) >= 3, 120,
             "two workers and the resource tracker")
    return proc, db


def reap(proc: subprocess.Popen, spawned: list[int]) -> None:
    for pid in [p for p in spawned if alive(p)] + ([proc.pid] if proc.poll() is None else []):
        os.kill(pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_worker_processes_die_with_their_sweep(npz, tmp_path, sig):
    proc, db = start_long_sweep(tmp_path, npz)
    spawned = children(proc.pid)
    try:
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        # a worker still importing torch when its sweep is SIGKILLed ends as soon as its imports are done
        wait_for(lambda: not any(alive(pid) for pid in spawned), 30, "the workers and the resource tracker to end")
        assert all(s in ("running", "done") for _, s, _, _ in rows(db))  # resumable, nothing marked failed
    finally:
        reap(proc, spawned)


def loaded_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_ctrl_c_stops_a_sweep_and_its_workers_with_one_line(npz, tmp_path):
    proc, db = start_long_sweep(tmp_path, npz, session=True)
    spawned = children(proc.pid)
    try:
        # A terminal's Ctrl-C reaches a worker that is still starting Python (before it can ignore SIGINT) only in
        # the first seconds of a sweep; wait until both workers run torch code, as a user's Ctrl-C mid-sweep would.
        wait_for(lambda: sum(loaded_torch(pid) for pid in spawned) >= 2, 120, "both workers to load torch")
        time.sleep(2.0)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the whole foreground group
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "interrupted" in lines[0] and "resume" in lines[0], err
        wait_for(lambda: not any(alive(pid) for pid in spawned), 30, "the workers to end")
    finally:
        reap(proc, spawned)


def test_the_same_configs_give_bit_identical_metrics_in_separate_processes(npz, tmp_path):
    sweep = write_sweep(tmp_path / "d.toml", npz, ["none", "dropout"], seeds=1)
    results = []
    for workers in (1, 2):
        db = tmp_path / f"d{workers}.db"
        proc = start_sweep(sweep, db, workers=workers)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append({h: metrics for h, _, _, metrics in rows(db)})
    assert len(results[0]) == 2 and results[0] == results[1]  # the stored JSON text, so every bit of each float
