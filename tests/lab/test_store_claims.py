"""The store's claims: a run is claimed atomically by one sweep, skipped by the others while that sweep lives, and
redone once it is dead; a run's results and its ``done`` status are one transaction; failed runs are redone."""

from __future__ import annotations

import socket
import sqlite3
import subprocess

import pytest
import torch

from dropkit.lab import sweep as S
from dropkit.lab.report import summarize, summary_rows, write_report
from dropkit.lab.config import RunConfig
from dropkit.lab.store import Store
from dropkit.lab.train import run

torch.set_num_threads(1)


def mlp(npz, **kw):
    values = dict(data=npz, train_size=30, val_size=6, epochs=1, batch_size=16, model="mlp",
                  model_params={"hidden": [8]})
    values.update(kw)
    return RunConfig.from_dict(values)


def owned_by(store: Store, pid: int) -> Store:
    """Make ``store`` claim as if it were the sweep process ``pid`` on this host."""
    store.owner = f"{socket.gethostname()}:{pid}"
    return store


def finished(metrics: dict, *, epochs: int = 1) -> dict:
    return {"metrics": metrics, "curves": [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, epochs + 1)],
            "primary": "test_acc", "task": "classification", "wall_s": 0.1}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_held_by_a_live_sweep_is_skipped_not_stolen(npz, tmp_path, workers):
    configs = [mlp(npz, method=m, seed=s) for s in (0, 1) for m in ("none", "dropout")]
    held = configs[0]
    db = tmp_path / "w.db"
    other = subprocess.Popen(["sleep", "300"])  # the other sweep, alive
    try:
        with Store(db) as theirs, Store(db) as ours:
            owned_by(theirs, other.pid).claim(held.config_hash(), held.to_dict())
            counts = S.execute(configs, ours, progress=False, workers=workers)
            assert counts == {"done": 3, "failed": 0, "skipped": 1}
            assert ours.status(held.config_hash()) == "running"
            theirs.finish(held.config_hash(), run(held))  # the other sweep finishes its run undisturbed
            rows = ours.runs()
        assert len(rows) == 4 and all(r["status"] == "done" and r["attempts"] == 1 for r in rows)
    finally:
        other.kill()
        other.wait()


def test_a_run_left_running_by_a_dead_sweep_is_redone(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    config = RunConfig().to_dict()
    with Store(tmp_path / "s.db") as theirs, Store(tmp_path / "s.db") as ours:
        owned_by(theirs, dead.pid).claim("h", config)
        assert ours.try_claim("h", config) is not None
        with pytest.raises(ValueError, match="claimed by"):
            theirs.finish("h", finished({"test_acc": 0.5}))  # a stale claimer cannot overwrite the new attempt
        ours.finish("h", finished({"test_acc": 0.5}))
        assert ours.try_claim("h", config) is None  # done: nothing to claim
        rec = ours.runs()[0]
        assert rec["status"] == "done" and rec["attempts"] == 2


def test_finish_writes_results_and_status_in_one_transaction(tmp_path):
    db = tmp_path / "t.db"
    with Store(db) as store:
        store.claim("h", RunConfig().to_dict())
        with sqlite3.connect(db) as conn:  # the status flip to 'done' is refused …
            conn.execute("CREATE TRIGGER refuse_done BEFORE UPDATE OF status ON runs WHEN NEW.status = 'done' "
                         "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        with pytest.raises(sqlite3.DatabaseError, match="refused by the test"):
            store.finish("h", finished({"test_acc": 0.5}, epochs=3))
        rec = store.runs()[0]  # … so nothing of the result may remain
        assert rec["status"] == "running" and rec["metrics"] is None and rec["curves"] == []
        assert rec["finished_at"] is None and rec["wall_s"] is None


def test_a_rerun_sweep_redoes_failed_runs(npz, tmp_path, monkeypatch):
    configs = [mlp(npz, method=m) for m in ("none", "dropout")]
    real_run = S.run
    broken = {"dropout"}

    def flaky(config, **kw):
        if config.method in broken:
            raise RuntimeError("a transient failure")
        return real_run(config, **kw)

    monkeypatch.setattr(S, "run", flaky)
    with Store(tmp_path / "f.db") as store:
        assert S.execute(configs, store, progress=False) == {"done": 1, "failed": 1, "skipped": 0}
        broken.clear()
        assert S.execute(configs, store, progress=False) == {"done": 1, "failed": 0, "skipped": 1}
        rows = {r["config"]["method"]: r for r in store.runs()}
    assert rows["dropout"]["status"] == "done" and rows["dropout"]["attempts"] == 2
    assert rows["dropout"]["error"] is None and rows["none"]["attempts"] == 1


def test_the_baseline_is_the_first_row_even_when_another_arm_scores_higher(tmp_path):
    db = tmp_path / "b.db"
    scores = {"dropout": 0.9, "none": 0.5, "spatial_dropout": 0.7}
    with Store(db) as store:
        for seed in range(3):
            for rank, (method, score) in enumerate(scores.items(), start=1):
                config = RunConfig(method=method, seed=seed, model="mlp").to_dict()
                store.claim(f"{method}{seed}", config)
                store.finish(f"{method}{seed}", finished({"test_acc": score + 0.01 * seed * rank, "train_acc": 1.0,
                                                          "gap": 0.1, "n_test": 10}))
        (comp,) = summarize(store.runs())
    assert [a["method"] for a in comp["arms"]] == ["none", "dropout", "spatial_dropout"]
    _, rows = summary_rows(comp)
    assert rows[0][0] == "none" and rows[0][-3] == "baseline"
    md = write_report(db, tmp_path / "rep")["markdown"].read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert table[1].startswith("| none ")


def test_cli_run_leaves_a_run_another_live_sweep_holds(npz, tmp_path, capsys):
    from dropkit.cli import main

    held = RunConfig.from_dict(dict(data=npz, model="mlp", train_size=30, val_size=6, epochs=1, batch_size=16,
                                    method="dropout"))  # what the command line below builds
    db = tmp_path / "h.db"
    other = subprocess.Popen(["sleep", "300"])
    try:
        with Store(db) as theirs:
            owned_by(theirs, other.pid).claim(held.config_hash(), held.to_dict())
        assert main(["run", "--method", "dropout", "--data", npz, "--model", "mlp", "--train-size", "30",
                     "--val-size", "6", "--epochs", "1", "--batch-size", "16", "--db", str(db), "-q"]) == 0
        assert "being run by process" in capsys.readouterr().err
        with Store(db) as store:
            assert store.status(held.config_hash()) == "running"
    finally:
        other.kill()
        other.wait()
