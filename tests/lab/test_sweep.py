"""Sweeps (``dropkit.lab.sweep``): grid expansion, bad sweep files, the local, multi-process and Ray executors."""

from __future__ import annotations

import pytest
import torch

from dropkit.lab import sweep as S
from dropkit.lab.store import Store
from dropkit.lab.sweep import execute
from dropkit.lab.train import RunConfig
from helpers.lab import tiny

torch.set_num_threads(1)


def test_sweep_grid_expands_seed_major_with_param_axes(npz, tmp_path):
    spec = {"tag": "t", "grid": {"methods": ["none", "dropblock"], "seeds": 2, "train_sizes": [30, 48]},
            "run": {"data": npz, "epochs": 1, "val_size": 6}, "params": {"dropblock": {"p": [0.1, 0.2],
                                                                                       "block_size": 1}}}
    configs, tag = S.expand_grid(spec)
    assert tag == "t" and len(configs) == 2 * 2 * (1 + 2)
    assert [c.seed for c in configs] == [0] * 6 + [1] * 6
    assert {c.params.get("p") for c in configs if c.method == "dropblock"} == {0.1, 0.2}
    path = tmp_path / "s.toml"
    path.write_text('[grid]\nmethods = ["none", "dropout"]\nseeds = [0, 5]\n[run]\nepochs = 3\n')
    configs, _ = S.expand_grid(S.load_sweep(path))
    assert [(c.method, c.seed, c.epochs) for c in configs] == [("none", 0, 3), ("dropout", 0, 3),
                                                               ("none", 5, 3), ("dropout", 5, 3)]


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"methods": ["none"]}, "extra": 1}, "unknown top-level"),
    ({"grid": {"methods": ["none"], "colours": [1]}}, "unknown grid key"),
    ({"grid": {"methods": ["dropblok"]}}, "did you mean"),
    ({"grid": {"methods": ["none"]}, "params": {"dropout": {"p": 0.1}}}, "not among the methods"),
    ({"grid": {"methods": ["dropout"]}, "params": {"dropout": {"rate": 0.1}}}, "unknown parameter"),
    ({"grid": {"methods": ["none"], "seeds": 0}}, "seeds"),
    ({"grid": {"methods": ["none"], "models": []}}, "must not be empty"),
    ({"grid": {"methods": ["none"]}, "run": {"epochs": -1}}, "epochs"),
    ({"grid": {}}, "grid.methods"),
])
def test_bad_sweeps_are_rejected(spec, message):
    with pytest.raises((ValueError, TypeError), match=message):
        S.expand_grid(spec)


def test_sweep_files_bad_syntax_and_formats(tmp_path):
    (tmp_path / "a.toml").write_text("[grid\nmethods = 1")
    with pytest.raises(ValueError, match="invalid TOML"):
        S.load_sweep(tmp_path / "a.toml")
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(ValueError, match=".toml, .yaml"):
        S.load_sweep(tmp_path / "a.json")


def test_ray_backend_without_ray_says_so(npz, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ModuleNotFoundError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with Store(tmp_path / "r.db") as store, pytest.raises(ValueError, match="pip install 'dropkit\\[ray\\]'"):
        S.execute([tiny(npz, epochs=1)], store, backend="ray", progress=False)


def test_two_workers_store_every_run_like_one_worker(npz, tmp_path):
    configs = [RunConfig.from_dict(dict(data=npz, train_size=48, val_size=12, epochs=1, batch_size=16, model="mlp",
                                        model_params={"hidden": (8,)}, method=m, seed=s))
               for s in (0, 1) for m in ("none", "dropout")]
    with Store(tmp_path / "pool.db") as store:
        counts = execute(configs, store, progress=False, workers=2)
        assert counts == {"done": 4, "failed": 0, "skipped": 0}
        runs = store.runs()
        assert sorted((r["config"]["method"], r["config"]["seed"]) for r in runs) == \
            [("dropout", 0), ("dropout", 1), ("none", 0), ("none", 1)]
        assert all(r["status"] == "done" and r["metrics"]["test_acc"] >= 0 for r in runs)
        # a second pass finds everything done and runs nothing
        assert execute(configs, store, progress=False, workers=2) == {"done": 0, "failed": 0, "skipped": 4}
    with pytest.raises(ValueError, match="workers must be an integer"):
        execute(configs, Store(tmp_path / "x.db"), progress=False, workers=0)


def test_ray_backend_runs_the_same_grid_into_the_same_store_format(npz, tmp_path):
    ray = pytest.importorskip("ray")
    configs = [RunConfig.from_dict(dict(data=npz, train_size=48, val_size=12, epochs=1, batch_size=16, model="mlp",
                                        model_params={"hidden": (8,)}, method=m, seed=0))
               for m in ("none", "dropout")]
    try:
        with Store(tmp_path / "ray.db") as store:
            assert execute(configs, store, backend="ray", progress=False) == {"done": 2, "failed": 0, "skipped": 0}
            by_ray = {r["config"]["method"]: r["metrics"]["test_acc"] for r in store.runs()}
    finally:
        ray.shutdown()
    with Store(tmp_path / "local.db") as store:
        execute(configs, store, progress=False)
        local = {r["config"]["method"]: r["metrics"]["test_acc"] for r in store.runs()}
    assert by_ray == local  # same configs, same seeds, one thread each: the same results


KILLED_IN_A_WORKER = '''
import multiprocessing
import os
import signal

from torch import nn


def build(in_channels, num_classes, input_shape):
    # as the out-of-memory killer would: SIGKILL, in a sweep's worker process only
    if multiprocessing.parent_process() is not None and os.environ.get("DROPKIT_TEST_KILL_WORKER") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
'''


def test_a_killed_worker_stops_the_sweep_with_one_clear_error_and_keeps_what_finished(npz, tmp_path, monkeypatch):
    # A worker killed from outside (the out-of-memory killer) used to surface as BrokenProcessPool with a
    # traceback from concurrent.futures; the sweep must say what happened and how to resume, and the runs in
    # flight must be redone by the next call.
    (tmp_path / "killer.py").write_text(KILLED_IN_A_WORKER)
    spec = f"{tmp_path / 'killer.py'}:build"
    configs = [RunConfig.from_dict(dict(data=npz, train_size=48, val_size=12, epochs=1, batch_size=16, model=spec,
                                        method="none", seed=s)) for s in (0, 1, 2)]
    monkeypatch.setenv("DROPKIT_TEST_KILL_WORKER", "1")
    with Store(tmp_path / "killed.db") as store:
        with pytest.raises(S.WorkerDied, match=r"worker process died.*SIGKILL.*out-of-memory.*run the same command"):
            execute(configs, store, progress=False, workers=2)
        assert {r["status"] for r in store.runs()} <= {"running"}  # nothing recorded as a result
        monkeypatch.setenv("DROPKIT_TEST_KILL_WORKER", "0")
        assert execute(configs, store, progress=False, workers=2) == {"done": 3, "failed": 0, "skipped": 0}


def test_the_cli_prints_a_dead_worker_as_one_line(monkeypatch, capsys):
    from dropkit import cli

    def die(args):
        raise S.WorkerDied("a sweep worker process died (killed by SIGKILL); run the same command again to resume")

    parser = cli.build_parser()
    args = parser.parse_args(["bench", "--no-memory"])
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: (setattr(args, "func", die), args)[1])
    assert cli.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "killed by SIGKILL" in err and "Traceback" not in err


def test_progress_lines_name_every_method_of_a_cocktail(npz):
    # A cocktail's confirmation runs were shown as their first method alone, e.g. "dropout(p=0.46161012794549355)".
    config = tiny(npz, method="dropout", params={"p": 0.46161012794549355},
                  also=[{"method": "dropblock", "params": {"p": 0.2918, "block_size": 2}}], seed=3)
    assert S._describe(config) == "dropout(p=0.462)+dropblock(p=0.292,block_size=2) seed 3"
    assert S._describe(tiny(npz)) == "none seed 0"
