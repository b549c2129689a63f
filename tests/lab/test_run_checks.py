"""Runs are checked before the store is touched, and a run's outcome is checked after it ends.

Config and data errors (a bad method parameter, a method that needs validation data without any, bad files) are
refused with one line naming the argument, exit code 2, and no store written; a run whose final metrics are not
finite is stored as ``failed`` with the reason, and a sweep goes on.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import torch

from dropkit.cli import main
from dropkit.lab import sweep as S
from dropkit.lab.config import RunConfig
from dropkit.lab.store import Store
from dropkit.lab.train import RunFailed, run

torch.set_num_threads(1)

TINY = ["--model", "mlp", "--train-size", "30", "--val-size", "6", "--epochs", "1", "-q"]


def mlp(npz, **kw):
    values = dict(data=npz, train_size=30, val_size=6, epochs=1, batch_size=16, model="mlp",
                  model_params={"hidden": [8]})
    values.update(kw)
    return RunConfig.from_dict(values)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


# -------------------------------------------------------------------------------------------- divergence
def test_a_run_diverging_on_its_last_step_fails_with_the_reason(npz):
    # one SGD step with a huge rate: the step's own loss is finite, the weights after it are not
    with pytest.raises(RunFailed, match="diverged.*test_loss"):
        run(mlp(npz, train_size=60, batch_size=64, lr=1e30))


def test_a_sweep_records_the_diverging_run_as_failed_and_goes_on(npz, tmp_path):
    configs = [mlp(npz, train_size=60, batch_size=64, lr=1e30), mlp(npz, method="dropout")]
    with Store(tmp_path / "d.db") as store:
        assert S.execute(configs, store, progress=False) == {"done": 1, "failed": 1, "skipped": 0}
        rows = {r["config"]["method"]: r for r in store.runs()}
    assert rows["none"]["status"] == "failed" and "diverged" in rows["none"]["error"]
    assert rows["none"]["metrics"] is None
    assert rows["dropout"]["status"] == "done"


def test_cli_run_of_a_diverging_config_exits_1_and_stores_it_failed(npz, tmp_path, capsys):
    db = tmp_path / "d.db"
    args = ["run", "--method", "none", "--data", npz, "--model", "mlp", "--train-size", "60", "--batch-size", "64",
            "--epochs", "1", "--lr", "1e30", "--db", str(db), "-q"]
    assert main(args) == 1
    assert "diverged" in capsys.readouterr().err
    with Store(db) as store:
        assert store.counts()["failed"] == 1


# ----------------------------------------------------------------------------------- validation data
def test_a_method_that_needs_validation_data_refuses_to_run_without_it(npz):
    with pytest.raises(ValueError, match="ns_dropout.*val_size"):
        run(mlp(npz, method="ns_dropout", val_size=0))


def test_cli_refuses_ns_dropout_without_validation_before_creating_the_store(npz, tmp_path, capsys):
    db = tmp_path / "v.db"
    args = ["run", "--method", "ns_dropout", "--data", npz, *TINY, "--val-size", "0", "--db", str(db)]
    assert main(args) == 2
    assert "val_size" in one_error_line(capsys)
    assert not db.exists()


# ------------------------------------------------------------------------------------------ bad --param
@pytest.mark.parametrize("method, param, named", [
    ("dropout", "p=1.5", "p"),
    ("dropout", "p=abc", "p"),
    ("dropblock", "block_size=3.5", "block_size"),
    ("dropout", "q=0.1", "q"),
])
def test_a_bad_param_is_refused_before_the_store_is_touched(npz, tmp_path, capsys, method, param, named):
    db = tmp_path / "p.db"
    model = ["--model", "cnn"] if method == "dropblock" else []
    assert main(["run", "--method", method, "--param", param, "--data", npz, *TINY, *model, "--db", str(db)]) == 2
    err = one_error_line(capsys)
    assert f"{named}" in err and "could not be inserted" not in err
    assert not db.exists()


def test_a_sweep_with_a_bad_param_writes_nothing(npz, tmp_path, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_text(f'[grid]\nmethods = ["none", "dropout"]\n[run]\ndata = "{npz}"\nmodel = "mlp"\n'
                     'train_size = 30\nval_size = 6\nepochs = 1\n[params.dropout]\np = [0.2, 1.5]\n')
    db = tmp_path / "s.db"
    assert main(["sweep", str(sweep), "--db", str(db), "-q"]) == 2
    assert "p must be in [0, 1]" in one_error_line(capsys)
    assert not db.exists()


# -------------------------------------------------------------------------------- the CLI's bad inputs
def _bad_npz(tmp_path, kind: str) -> str:
    path = tmp_path / f"{kind}.npz"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 12, 12)).astype(np.float32), np.arange(20) % 2
    if kind == "not_npz":
        path.write_text("not a zip archive")
    elif kind == "missing_key":
        np.savez(path, x_train=x, y_train=y, x_test=x)
    elif kind == "nan":
        x[3, 4, 5] = np.nan
        np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    elif kind == "float_labels":
        np.savez(path, x_train=x, y_train=y + 0.5, x_test=x, y_test=y)
    elif kind == "tiny_images":
        np.savez(path, x_train=x[:, :3, :3], y_train=y, x_test=x[:, :3, :3], y_test=y)
    return str(path)


@pytest.mark.parametrize("kind, named", [
    ("not_npz", "not a readable .npz"),
    ("missing_key", "y_test"),
    ("nan", "NaN"),
    ("float_labels", "integer labels"),
    ("tiny_images", "at least"),
    ("absent", "does not exist"),
])
def test_bad_data_files_exit_2_without_a_store(tmp_path, capsys, kind, named):
    data = str(tmp_path / "absent.npz") if kind == "absent" else _bad_npz(tmp_path, kind)
    db = tmp_path / "b.db"
    assert main(["run", "--method", "dropout", "--data", data, *TINY, "--db", str(db)]) == 2
    assert named in one_error_line(capsys)
    assert not db.exists()


@pytest.mark.parametrize("text, named", [
    ("[grid\nmethods = 1", "invalid TOML"),
    ('[grid]\nmethods = ["none"]\ncolours = [1]\n', "unknown grid key"),
    ('[grid]\nmethods = ["dropblok"]\n', "did you mean"),
    ('[grid]\nmethods = ["none"]\n[run]\nepochs = 0\n', "epochs"),
    ('[grid]\nmethods = ["dropout"]\n[params.dropout]\nrate = 0.1\n', "unknown parameter"),
])
def test_bad_sweep_files_exit_2_without_a_store(npz, tmp_path, capsys, text, named):
    sweep = tmp_path / "bad.toml"
    sweep.write_text(text)
    db = tmp_path / "b.db"
    assert main(["sweep", str(sweep), "--db", str(db), "-q"]) == 2
    assert named in one_error_line(capsys)
    assert not db.exists()


def _db_case(tmp_path, kind: str) -> str:
    if kind == "under_a_file":
        (tmp_path / "afile").write_text("x")
        return str(tmp_path / "afile" / "runs.db")
    if kind == "a_folder":
        (tmp_path / "dir.db").mkdir()
        return str(tmp_path / "dir.db")
    if kind == "not_sqlite":
        (tmp_path / "text.db").write_text("hello, not sqlite " * 100)
        return str(tmp_path / "text.db")
    return "/proc/dropkit-runs.db"  # unwritable, even for root


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("kind", ["under_a_file", "a_folder", "not_sqlite", "unwritable"])
def test_bad_db_paths_exit_2_naming_db(npz, tmp_path, capsys, kind, command):
    db = _db_case(tmp_path, kind)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    if command == "run":
        args = ["run", "--method", "none", "--data", npz, *TINY, "--db", db]
    else:
        sweep = tmp_path / "ok.toml"
        sweep.write_text(f'[grid]\nmethods = ["none"]\n[run]\ndata = "{npz}"\nmodel = "mlp"\ntrain_size = 30\n'
                         'val_size = 6\nepochs = 1\n')
        before.append("ok.toml")
        args = ["sweep", str(sweep), "--db", db, "-q"]
    assert main(args) == 2
    assert f"db {db!r}" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(before)  # nothing written beside
    if kind == "not_sqlite":
        assert (tmp_path / "text.db").read_text().startswith("hello")


def test_output_folders_that_are_files_exit_2_before_any_run(npz, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    db = tmp_path / "o.db"
    sweep = tmp_path / "ok.toml"
    sweep.write_text(f'[grid]\nmethods = ["none"]\n[run]\ndata = "{npz}"\nmodel = "mlp"\ntrain_size = 30\n'
                     'val_size = 6\nepochs = 1\n')
    assert main(["sweep", str(sweep), "--db", str(db), "-q", "--report", str(afile)]) == 2
    assert "--report" in one_error_line(capsys)
    assert not db.exists()  # refused before running anything
    assert main(["lab", "--fixed", "--quick", "--data", npz, "--methods", "none", "--db", str(db), "-q",
                 "--out", str(afile)]) == 2
    assert "--out" in one_error_line(capsys)
    assert not db.exists()
    assert main(["run", "--method", "none", "--data", npz, *TINY, "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["report", "--db", str(db), "--out", str(afile)]) == 2
    assert "--out" in one_error_line(capsys)
    assert main(["report", "--db", str(db), "--out", str(afile / "sub")]) == 2
    assert "--out" in one_error_line(capsys)


def test_ctrl_c_prints_one_line_saying_the_work_resumes(npz, tmp_path, capsys, monkeypatch):
    def interrupted(config, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "run", interrupted)
    db = tmp_path / "c.db"
    assert main(["run", "--method", "none", "--data", npz, *TINY, "--db", str(db)]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "KeyboardInterrupt" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "resum" in captured.err
    with sqlite3.connect(db) as conn:  # the interrupted run is left unfinished, to be redone
        assert conn.execute("SELECT status FROM runs").fetchall() == [("running",)]
