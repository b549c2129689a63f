"""The SQLite store (``dropkit.lab.store``): atomic results, resume, rollback, bad files."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from dropkit.lab import sweep as S
from dropkit.lab.store import Store
from dropkit.lab.train import RunConfig
from helpers.lab import tiny

torch.set_num_threads(1)


def test_store_finish_is_atomic_and_resume_redoes_unfinished(npz, tmp_path, monkeypatch):
    configs = [tiny(npz, method=m, seed=0, epochs=1) for m in ("none", "dropout", "spatial_dropout")]
    db = tmp_path / "runs.db"
    calls = []
    real_run = S.run

    def interrupted(config, **kw):
        calls.append(config.method)
        if config.method == "dropout":
            raise KeyboardInterrupt  # killed mid-run
        return real_run(config, **kw)

    monkeypatch.setattr(S, "run", interrupted)
    with Store(db) as store, pytest.raises(KeyboardInterrupt):
        S.execute(configs, store, progress=False)
    with Store(db) as store:
        rows = {r["config"]["method"]: r for r in store.runs()}
        assert rows["none"]["status"] == "done" and rows["none"]["curves"]
        assert rows["dropout"]["status"] == "running"
        assert rows["dropout"]["metrics"] is None and rows["dropout"]["curves"] == []
        assert "spatial_dropout" not in rows
        first_id = rows["none"]["id"]
    monkeypatch.setattr(S, "run", real_run)
    with Store(db) as store:
        counts = S.execute(configs, store, progress=False)
        assert counts == {"done": 2, "failed": 0, "skipped": 1}
        rows = store.runs()
    assert len(rows) == 3 and all(r["status"] == "done" for r in rows)
    assert {r["config"]["method"]: r["id"] for r in rows}["none"] == first_id
    assert all(len(r["curves"]) == 1 for r in rows)
    with sqlite3.connect(db) as conn:  # no duplicate curve rows either
        assert conn.execute("SELECT COUNT(*) FROM curves").fetchone()[0] == sum(
            len(c) - 1 for r in rows for c in r["curves"])


def test_store_rolls_back_a_failed_write(tmp_path):
    with Store(tmp_path / "s.db") as store:
        config = RunConfig().to_dict()
        store.claim("h1", config)
        bad = {"metrics": {"x": object()}, "curves": [{"epoch": 1, "train_loss": 1.0}]}
        with pytest.raises(TypeError):
            store.finish("h1", bad)
        rec = store.runs()[0]
        assert rec["status"] == "running" and rec["curves"] == [] and rec["metrics"] is None
        store.finish("h1", {"metrics": {"test_acc": 0.5}, "curves": [{"epoch": 1, "train_loss": 1.0}], "wall_s": 1})
        with pytest.raises(ValueError, match="already done"):
            store.claim("h1", config)
        store.claim("h2", config | {"seed": 1})
        store.fail("h2", "boom")
        assert store.counts() == {"running": 0, "done": 1, "failed": 1}


def test_store_rejects_a_non_database(tmp_path):
    (tmp_path / "x.db").write_text("hello, not sqlite" * 100)
    with pytest.raises(ValueError, match="not a dropkit store"):
        Store(tmp_path / "x.db")


def test_an_experiment_result_is_recorded_replaced_and_kept_apart(tmp_path):
    with Store(tmp_path / "runs.db") as store:
        config = {"method": "gating_dropout", "data": "corpus.txt", "p": 0.3, "seed": 1}
        key = store.record_experiment("moe_lm", config, {"val_loss": 2.5}, tag="t", wall_s=3.0)
        assert store.record_experiment("moe_lm", {**config, "p": 0.1}, {"val_loss": 2.6}) != key
        assert store.record_experiment("moe_lm", config, {"val_loss": 2.4}) == key  # the same config: replaced
        rows = {r["config"]["p"]: r for r in store.runs(kind="experiment")}
        assert set(rows) == {0.1, 0.3} and store.runs(kind="run") == []
        row = rows[0.3]
        assert row["status"] == "done" and row["metrics"] == {"val_loss": 2.4} and row["model"] == "moe_lm"
        assert row["method"] == "gating_dropout" and row["seed"] == 1 and row["config"]["experiment"] == "moe_lm"
        with pytest.raises(ValueError, match="experiment"):
            store.record_experiment("", config, {})
        with pytest.raises(TypeError, match="metrics"):
            store.record_experiment("moe_lm", config, [2.4])
