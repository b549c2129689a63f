"""The advisor end to end on tiny data: a planted case dropout must win, a case nothing can help, the test split
withheld during the search, the search resumed after a kill, 1-D signals, and the argument checks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from dropkit.lab.advisor import advise
from dropkit.lab.advisor.arms import BASELINE_ARM, plan_arms
from dropkit.lab.advisor.search import SearchSettings, run_search, trials_used
from dropkit.lab.advisor.withheld import TestSplitWithheld, withhold_test
from dropkit.lab.train import RunConfig, build_run_model, get_dataset, train

SRC = str(Path(__file__).resolve().parents[2] / "src")

# An MLP on a small noisy set: two Gaussian classes in 64 dimensions, 35 % of the training labels flipped, clean
# test labels. The plain MLP memorizes the flips; dropout before its classifier gains several points (measured:
# p = 0.5 about +3, p = 0.8 about +8 on 3 seeds).
PLANTED = dict(model="mlp", model_params={"hidden": [256]}, train_size=200, val_size=400, epochs=12,
               training={"optimizer": "adam", "lr": 3e-3, "batch_size": 32})


def _planted_npz(path: Path) -> str:
    rng = np.random.default_rng(0)
    direction = rng.normal(size=64)
    direction /= np.linalg.norm(direction)

    def draw(n, flip):
        y = rng.integers(0, 2, n)
        x = (rng.normal(size=(n, 64)) + 2.0 * np.outer(2 * y - 1, direction)).astype(np.float32)
        return x, np.where(rng.random(n) < flip, 1 - y, y).astype(np.int64)

    x_tr, y_tr = draw(600, 0.35)
    x_te, y_te = draw(2000, 0.0)
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return str(path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _planted_npz(tmp_path_factory.mktemp("planted") / "planted.npz")


def test_planted_case_dropout_wins_the_search_and_is_confirmed(planted, tmp_path):
    advice = advise(data=planted, methods=["dropout"], trials=5, seeds=5, cocktails=0, budget="1h",
                    db=tmp_path / "runs.db", out=tmp_path / "report", progress=False, echo=None, **PLANTED)
    rec = advice.recommendation
    assert rec is not None and rec.name == "dropout"
    assert rec.search_value > advice.baseline["search_value"]  # won the search on validation …
    assert rec.comparison.gain > 0.02 and rec.p_holm < 0.05  # … and the confirmation on test
    assert rec.comparison.ci_low > 0 and rec.comparison.wins == 5
    assert "dropkit.attach(model, 'dropout', at=['body.relu1']" in advice.code()
    assert advice.conclusion().startswith("Use dropout")
    # the confirmation runs are in the run store, on fresh seeds, baseline included
    with sqlite3.connect(tmp_path / "runs.db") as db:
        rows = db.execute("SELECT method, seed, status, kind FROM runs").fetchall()
    assert sorted({r[1] for r in rows}) == [1, 2, 3, 4, 5] and {r[0] for r in rows} == {"none", "dropout"}
    assert {r[2] for r in rows} == {"done"} and {r[3] for r in rows} == {"confirm"}
    report = tmp_path / "report"
    for name in ("index.html", "report.md", "strength_response.png", "confirmation.png", "advice.json"):
        assert (report / name).stat().st_size > 0
    saved = json.loads((report / "advice.json").read_text())
    assert saved["recommendation"] == "dropout" and saved["candidates"][0]["p_holm"] < 0.05
    assert len(advice.curves["dropout"]) == 5  # every trial on the strength–response curve


def test_when_nothing_can_help_the_answer_is_no_significant_gain(npz, tmp_path):
    # three bright squares on light noise: the plain MLP is perfect on test, nothing can beat it
    advice = advise("mlp", npz, methods="dropout,gaussian_dropout", trials=2, seeds=5, cocktails=0, epochs=6,
                    train_size=None, val_size=15, model_params={"hidden": [32]}, budget="1h",
                    db=tmp_path / "runs.db", out=None, progress=False, echo=None)
    assert advice.baseline["test_mean"] == pytest.approx(1.0)
    assert advice.recommendation is None
    assert all(not c.significant_gain for c in advice.candidates) and len(advice.candidates) == 2
    assert advice.conclusion().startswith("No significant gain")
    assert "nothing to attach" in advice.code()


def _search_setup(npz, tmp_path, trials, epochs=3):
    base = RunConfig(data=npz, model="mlp", model_params={"hidden": [16]}, train_size=None, val_size=15,
                     epochs=epochs)
    data = get_dataset(base)
    torch.manual_seed(0)
    arms, _ = plan_arms(build_run_model(base, data), data.x_train[:2], ["dropout"])
    settings = SearchSettings(storage=f"sqlite:///{tmp_path / 'studies.db'}", prefix="t", trials=trials)
    return base, arms, settings


def test_the_search_never_reads_the_test_split(npz, tmp_path, monkeypatch):
    import dropkit.lab.train as lab_train

    base, arms, settings = _search_setup(npz, tmp_path, trials=2)
    data = get_dataset(base)
    seen = []
    real = lab_train.evaluate

    def spy(model, x, y, *args, **kwargs):
        seen.append(x.data_ptr())
        return real(model, x, y, *args, **kwargs)

    monkeypatch.setattr(lab_train, "evaluate", spy)
    studies = run_search(base, arms, settings, progress=False)
    assert trials_used(studies["dropout"]) == 2 and seen
    assert data.x_test.data_ptr() not in seen  # validation and training only
    # and the guard is real: a search handed to a trainer that evaluates test fails loudly
    with pytest.raises(TestSplitWithheld):
        train(base, dataset=withhold_test(data))
    with pytest.raises(TestSplitWithheld):
        len(withhold_test(data).y_test)


_KILLED_SEARCH = textwrap.dedent("""
    import sys, time, torch
    import dropkit.lab.train as lab_train
    from dropkit.lab.advisor.arms import plan_arms
    from dropkit.lab.advisor.search import SearchSettings, run_search
    from dropkit.lab.train import RunConfig, build_run_model, get_dataset
    slow = lab_train.train
    def train(*args, **kwargs):  # slow enough to be killed mid-study
        time.sleep(0.4)
        return slow(*args, **kwargs)
    lab_train.train = train
    npz, storage = sys.argv[1], sys.argv[2]
    base = RunConfig(data=npz, model="mlp", model_params={"hidden": [16]}, train_size=None, val_size=15, epochs=3)
    data = get_dataset(base)
    torch.manual_seed(0)
    arms, _ = plan_arms(build_run_model(base, data), data.x_train[:2], ["dropout"])
    run_search(base, arms, SearchSettings(storage=storage, prefix="t", trials=8), progress=False)
""")


def test_a_killed_search_resumes_and_keeps_its_trials(npz, tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SEARCH, npz, storage], env=env)
    try:
        deadline = time.time() + 120
        done = []
        while time.time() < deadline and len(done) < 3:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name="t/dropout", storage=storage)
            except KeyError:
                continue
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                            optuna.trial.TrialState.PRUNED))
        assert proc.poll() is None, "the search finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    study = optuna.load_study(study_name="t/dropout", storage=storage)
    before = {t.number: (t.params, t.value) for t in study.get_trials(deepcopy=False)
              if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)}
    assert 3 <= len(before) < 8
    base, arms, settings = _search_setup(npz, tmp_path, trials=8)
    studies = run_search(base, arms, settings, progress=False)
    after = studies["dropout"].get_trials(deepcopy=False)
    kept = {t.number: (t.params, t.value) for t in after if t.number in before}
    assert kept == before  # the finished trials were kept, not re-run
    assert trials_used(studies["dropout"]) == 8  # and the budget completed, the interrupted trial not counted
    interrupted = [t for t in after if t.user_attrs.get("interrupted")]
    assert len(interrupted) <= 1 and all(t.state == optuna.trial.TrialState.FAIL for t in interrupted)
    assert trials_used(studies["none"]) == 1


def test_signals_end_to_end(tmp_path):
    # (N, C, L) signals: a bump early or late in the trace; cnn1d, dropout before its classifier
    rng = np.random.default_rng(1)

    def draw(n):
        y = rng.integers(0, 2, n)
        x = rng.normal(0, 0.5, (n, 1, 40)).astype(np.float32)
        x[y == 0, 0, 5:10] += 1.5
        x[y == 1, 0, 28:33] += 1.5
        return x, y.astype(np.int64)

    (x_tr, y_tr), (x_te, y_te) = draw(80), draw(40)
    path = tmp_path / "signals.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    advice = advise("cnn1d", str(path), methods="dropout,spatial_dropout", trials=2, seeds=5, cocktails=1,
                    epochs=3, train_size=None, val_size=16, model_params={"width": 4}, budget="1h",
                    db=tmp_path / "runs.db", out=tmp_path / "report", progress=False, echo=None)
    assert {"dropout", "spatial_dropout"} <= set(advice.points)
    assert sorted(n for n in advice.points if "+" in n) in (["dropout+spatial_dropout"], ["spatial_dropout+dropout"])
    assert len(advice.candidates) == 3  # both methods and their cocktail
    assert all(c.comparison.n == 5 for c in advice.candidates)
    assert (tmp_path / "report" / "report.md").is_file()


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": "ten minutes"}, "budget"),
    ({"budget": 0}, "budget"),
    ({"methods": "dropuot"}, "dropout"),
    ({"methods": "none"}, "besides the baseline"),
    ({"methods": "dropout+dropout"}, "cocktail"),
    ({"workers": 0}, "workers"),
    ({"seeds": 3}, "seeds"),
    ({"top_k": 2}, "top_k"),
    ({"storage": "studies.db"}, "storage"),
    ({"training": {"seed": 3}}, "training"),
])
def test_bad_arguments_are_refused_before_any_store_is_opened(npz, tmp_path, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        advise("mlp", npz, db=tmp_path / "runs.db", out=tmp_path / "out", echo=None, **kwargs)
    assert not (tmp_path / "runs.db").exists() and not (tmp_path / "runs.optuna.db").exists()


def test_the_command_line_reports_a_bad_argument(npz, tmp_path, capsys):
    from dropkit.cli import main

    code = main(["advise", "--model", "mlp", "--data", npz, "--budget", "soon", "--db", str(tmp_path / "r.db")])
    assert code == 2 and "budget" in capsys.readouterr().err and not (tmp_path / "r.db").exists()


def test_a_trial_that_trained_every_epoch_is_never_pruned(planted, tmp_path):
    base = RunConfig(data=planted, model="mlp", model_params={"hidden": [64]}, train_size=200, val_size=400,
                     epochs=3, optimizer="adam", lr=3e-3, batch_size=32)
    data = get_dataset(base)
    torch.manual_seed(0)
    arms, _ = plan_arms(build_run_model(base, data), data.x_train[:2], ["dropout"])
    settings = SearchSettings(storage=f"sqlite:///{tmp_path / 'studies.db'}", prefix="p", trials=9)
    trials = run_search(base, arms, settings, progress=False)["dropout"].get_trials(deepcopy=False)
    states = {t.number: (t.state.name, max(t.intermediate_values, default=0)) for t in trials}
    assert ("PRUNED", 3) not in states.values(), states
    assert any(state == "PRUNED" for state, _ in states.values()), states  # the pruner did act, earlier


def test_a_search_cut_by_its_deadline_leaves_every_arm_the_same_number_of_trials(npz, tmp_path):
    import dataclasses

    base = RunConfig(data=npz, model="mlp", model_params={"hidden": [16]}, train_size=None, val_size=15, epochs=2)
    data = get_dataset(base)
    torch.manual_seed(0)
    arms, _ = plan_arms(build_run_model(base, data), data.x_train[:2], ["dropout", "gaussian_dropout"])
    settings = SearchSettings(storage=f"sqlite:///{tmp_path / 'studies.db'}", prefix="d", trials=40)
    run_search(base, arms[:1], settings, progress=False)  # the baseline, and the storage warmed up
    started = time.time()
    studies = run_search(base, arms, dataclasses.replace(settings, deadline=started + 3.0), progress=False)
    counts = [trials_used(studies[a.name]) for a in arms[1:]]
    assert sum(counts) < 80  # the deadline cut the search …
    assert max(counts) - min(counts) <= 1, counts  # … evenly


def test_the_confirmation_on_ray_gives_the_local_answer(npz, tmp_path):
    # The advisor's confirmation through Ray (one CPU per run) stores the same runs as the local workers: the same
    # configs, seeds and one thread each give the same test scores, so the same answer.
    ray = pytest.importorskip("ray")
    kwargs = dict(methods="dropout", trials=2, seeds=5, cocktails=0, epochs=3, train_size=None, val_size=15,
                  model_params={"hidden": [16]}, budget="1h", out=None, progress=False, echo=None)
    try:
        on_ray = advise("mlp", npz, db=tmp_path / "ray.db", backend="ray", **kwargs)
    finally:
        ray.shutdown()
    local = advise("mlp", npz, db=tmp_path / "local.db", **kwargs)
    for a, b in zip(on_ray.candidates, local.candidates, strict=True):
        assert a.arm.name == b.arm.name and a.params == b.params
        assert a.test_mean == pytest.approx(b.test_mean, abs=1e-12)
    assert on_ray.baseline["test_mean"] == pytest.approx(local.baseline["test_mean"], abs=1e-12)


@pytest.mark.parametrize("where", ["db", "out"])
def test_an_output_path_under_a_file_is_refused_before_any_training(npz, tmp_path, monkeypatch, where):
    # --out under a file used to be found only when the report was written, after the whole search and
    # confirmation; --db under a file after the calibration, with a FileExistsError traceback.
    import importlib

    advise_module = importlib.import_module("dropkit.lab.advisor.advise")  # the package exports the function

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    paths = {"db": tmp_path / "runs.db", "out": tmp_path / "out"}
    paths[where] = blocker / ("runs.db" if where == "db" else "report")
    monkeypatch.setattr(advise_module, "_time_epoch_and_evaluation",
                        lambda *a: pytest.fail("training started before the paths were checked"))
    with pytest.raises(ValueError, match=rf"{where} '.*{paths[where].name}'.*is a file, not a folder"):
        advise("mlp", npz, echo=None, **paths)
