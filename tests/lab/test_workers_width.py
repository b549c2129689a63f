"""The lab's multi-process local executor and the width probe (dropkit probe width), on tiny data."""

from __future__ import annotations

import json

import pytest
import torch

from dropkit.cli import main as cli_main
from dropkit.lab.store import Store
from dropkit.lab.probes.width import width_probe
from dropkit.lab.sweep import execute
from dropkit.lab.train import RunConfig

torch.set_num_threads(1)


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


def test_width_probe_curve_and_slimmed_model(npz):
    config = RunConfig.from_dict(dict(data=npz, train_size=64, val_size=16, epochs=3, batch_size=16, model="mlp",
                                      model_params={"hidden": (32,)}, placement="fc", method="structural_dropout",
                                      seed=0, lr=0.05))
    result = width_probe(config, step=8, tolerance=0.05)
    curve = result["probe"]
    assert curve["kind"] == "width" and curve["full_width"] == 32
    widths = [r["width"] for r in curve["rows"]]
    assert widths == [8, 16, 24, 32]
    params = [r["parameters"] for r in curve["rows"]]
    assert params == sorted(params) and params[-1] == curve["full_parameters"]  # smaller width, fewer parameters
    assert curve["chosen_width"] <= curve["best_width"]
    assert curve["chosen_accuracy"] >= curve["best_accuracy"] - 0.05
    assert 0.0 <= curve["chosen_test_acc"] <= 1.0


def test_width_probe_cli_stores_and_plots(npz, tmp_path, capsys):
    args = ["probe", "width", "--data", npz, "--train-size", "64", "--val-size", "16", "--epochs", "2",
            "--batch-size", "16", "--step", "16", "--db", str(tmp_path / "w.db"), "--out", str(tmp_path / "out")]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "chosen width" in out
    assert (tmp_path / "out" / "width.png").stat().st_size > 1000
    curve = json.loads((tmp_path / "out" / "width.json").read_text())
    assert curve["rows"][-1]["width"] == curve["full_width"]
    assert cli_main(args) == 0  # stored: the second call re-plots without training
    assert "already in" in capsys.readouterr().err


def test_width_probe_refuses_other_methods(npz):
    with pytest.raises(ValueError, match="structural_dropout"):
        width_probe(RunConfig.from_dict(dict(data=npz, method="dropout", model="mlp")))


def test_edges_preprocessing_and_the_edge_mlp_recipe(npz):
    from dropkit.lab.data import load_dataset
    from dropkit.lab.train import run

    data = load_dataset(npz, train_size=48, val_size=12, preprocess="edges")
    for split in (data.x_train, data.x_val, data.x_test):
        assert len(split.unique()) <= 2  # a binary edge map, normalised
    plain = load_dataset(npz, train_size=48, val_size=12)
    assert len(plain.x_train.unique()) > 100
    common = dict(data=npz, train_size=48, val_size=12, epochs=1, batch_size=16, model="edge_mlp",
                  preprocess="edges", model_params={"hidden": (16,)})
    with_dropout = run(RunConfig.from_dict({**common, "method": "none"}))
    without = run(RunConfig.from_dict({**common, "method": "none", "model_params": {"hidden": (16,), "p_in": 0.0}}))
    assert 0 <= with_dropout["metrics"]["test_acc"] <= 1 and 0 <= without["metrics"]["test_acc"] <= 1
    with pytest.raises(ValueError, match="preprocess must be one of"):
        RunConfig.from_dict({**common, "preprocess": "sobel"})


@pytest.mark.parametrize("model,variant,kind", [("cnn", "maxout", "Maxout"), ("cnn", "stochastic_pooling", "StochasticPool2d"),
                                                ("mlp", "maxout", "Maxout"), ("mlp", "standout", "Standout")])
def test_block_variants_are_built_in_and_compared_as_arms(npz, tmp_path, model, variant, kind):
    from dropkit.lab.models import build_model
    from dropkit.lab.report import summarize

    net = build_model(model, 1, 3, (10, 10), variant=variant, **({"width": 4} if model == "cnn" else {"hidden": (8,)}))
    assert any(type(m).__name__ == kind for m in net.modules())
    common = dict(data=npz, train_size=48, val_size=12, epochs=1, batch_size=16, model=model, method="none",
                  model_params={"width": 4} if model == "cnn" else {"hidden": (8,)})
    configs = [RunConfig.from_dict({**common, "variant": v, "seed": s}) for s in (0, 1) for v in (None, variant)]
    with Store(tmp_path / "blocks.db") as store:
        execute(configs, store, progress=False)
        (comp,) = summarize(store.runs())
    assert comp["baseline"]["label"] == "none" and comp["baseline"]["variant"] is None
    (other,) = [a for a in comp["arms"] if a is not comp["baseline"]]
    assert other["label"] == variant and other["test"].n == 2 and other["card"].name == variant


def test_bad_variant_refused(npz):
    with pytest.raises(ValueError, match="variant for model 'cnn' must be one of"):
        RunConfig.from_dict(dict(data=npz, model="cnn", variant="standout"))


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
