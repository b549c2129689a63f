"""Lab models, placement, runs, the store (resume after interruption), sweeps, the report and the CLI, on tiny data."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch

import dropkit
from dropkit.lab import models as M
from dropkit.lab import sweep as S
from dropkit.lab.placement import adapt_params, placement_group
from dropkit.lab.report import summarize, write_report
from dropkit.lab.store import Store
from dropkit.lab.train import RunConfig, RunFailed, run

torch.set_num_threads(1)


def tiny(npz, **kw):
    values = dict(data=npz, train_size=48, val_size=12, epochs=2, batch_size=16, model="cnn",
                  model_params={"width": 4})
    values.update(kw)
    return RunConfig.from_dict(values)


# ------------------------------------------------------------------------------------------- models, placement
@pytest.mark.parametrize("name", ["cnn", "resnet", "mlp", "unet"])
@pytest.mark.parametrize("size", [8, 13, 28])
def test_models_take_any_size_and_name_their_points(name, size):
    classes = 3
    model = M.build_model(name, 2, classes, (size, size), **({"width": 4} if name != "mlp" else {"hidden": (8,)}))
    x = torch.randn(2, 2, size, size)
    out = model(x)
    assert out.shape == ((2, classes, size, size) if name == "unet" else (2, classes))
    names = [n for group in model.insertion_points.values() for n in group]
    shapes = M.feature_shapes(model, names, x)
    assert set(shapes) == set(names)
    for n in model.insertion_points.get("conv", []):
        assert len(shapes[n]) == 3  # conv points carry (C, H, W) maps
    assert model.probe_point in dict(model.named_modules())


def test_unet_points_sit_between_the_two_convolutions():
    model = M.UNet(1, 2, (32, 32), width=4)
    assert model.levels == 3
    assert model.insertion_points["conv"] == ["enc.0.act1", "enc.1.act1", "enc.2.act1", "mid.act1",
                                              "dec.0.act1", "dec.1.act1", "dec.2.act1"]


def test_build_model_rejects_bad_names_and_sizes():
    with pytest.raises(ValueError, match="model must be one of"):
        M.build_model("vgg", 1, 10, (28, 28))
    with pytest.raises(ValueError, match="at least 8"):
        M.build_model("cnn", 1, 10, (6, 6))


def test_paper_placements():
    cnn, resnet, unet, mlp = (M.SmallCNN(1, 3, (28, 28)), M.ResNet(1, 3, (28, 28)), M.UNet(1, 2, (16, 16)),
                              M.MLP(1, 3, (8, 8)))
    card = dropkit.get_card
    assert placement_group(card("dropout"), cnn) == "fc"
    assert placement_group(card("dropblock"), cnn) == "conv"
    assert placement_group(card("drop_path"), resnet) == "branch"
    assert placement_group(card("drop_path"), cnn) == "conv"  # no residual branches: falls back
    assert placement_group(card("dropout"), unet) == "conv"
    assert placement_group(card("dropblock"), mlp) == "fc"  # then fails on flat features, and is reported
    assert placement_group(card("dropout"), cnn, "conv") == "conv"
    with pytest.raises(ValueError, match="placement must be one of"):
        placement_group(card("dropout"), cnn, "branch")


def test_block_size_fits_small_maps_unless_given():
    card = dropkit.get_card("dropblock")
    assert card.defaults["block_size"] == 7
    assert adapt_params(card, {}, {"a": (64, 7, 7), "b": (128, 7, 7)})["block_size"] == 3
    assert adapt_params(card, {}, {"a": (64, 30, 30)})["block_size"] == 7
    assert adapt_params(card, {"block_size": 5}, {"a": (64, 7, 7)})["block_size"] == 5


# ------------------------------------------------------------------------------------------------------ runs
def test_run_end_to_end_is_deterministic(npz):
    a = run(tiny(npz, method="dropblock", seed=1))
    b = run(tiny(npz, method="dropblock", seed=1))
    assert a["metrics"] == b["metrics"]
    m = a["metrics"]
    assert 0 <= m["test_acc"] <= 1 and m["gap"] == pytest.approx(m["train_acc"] - m["test_acc"])
    assert [r["epoch"] for r in a["curves"]] == [1, 2]
    assert {"train_loss", "train_acc", "val_acc", "val_loss"} <= set(a["curves"][0])
    assert "test_acc" in a["curves"][-1]
    assert a["placement"]["group"] == "conv" and a["placement"]["params"]["block_size"] == 1  # 3×3 maps
    assert a["environment"]["torch"] == torch.__version__
    c = run(tiny(npz, method="dropblock", seed=2))
    assert c["metrics"] != a["metrics"]


def test_every_method_starts_from_the_same_weights(npz, monkeypatch):
    from dropkit.lab import train as T

    seen = []
    real = T.build_model

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        seen.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        return model

    monkeypatch.setattr(T, "build_model", spy)
    run(tiny(npz, method="none", epochs=1, seed=3))
    run(tiny(npz, method="spatial_dropout", epochs=1, seed=3))
    assert torch.equal(seen[0], seen[1])


def test_group_rate_applies_only_to_rate_like_defaults(npz):
    cfg = dict(epochs=1, group_params={"conv": {"p": 0.3}})
    assert run(tiny(npz, method="spatial_dropout", **cfg))["placement"]["params"]["p"] == 0.3
    assert run(tiny(npz, method="focused_dropout", **cfg))["placement"]["params"]["p"] == 1.0
    assert run(tiny(npz, method="spatial_dropout", params={"p": 0.05}, **cfg))["placement"]["params"]["p"] == 0.05


def test_label_aware_method_runs_through_the_protocol(npz):
    result = run(tiny(npz, method="ns_dropout", epochs=2))
    assert result["placement"]["points"] == ["flatten"]
    assert np.isfinite(result["metrics"]["test_loss"])


def test_method_that_does_not_fit_fails_with_a_clear_message(npz):
    with pytest.raises(RunFailed, match="spatial_dropout.*mlp"):
        run(tiny(npz, method="spatial_dropout", model="mlp", model_params={"hidden": [8]}, epochs=1))


def test_segmentation_run_reports_dice_and_iou():
    result = run(RunConfig(method="dropout", data="organs", model="unet", train_size=4, val_size=2, epochs=1,
                           batch_size=2, optimizer="adam", lr=1e-3, model_params={"width": 4},
                           probe={"fractions": [0.0, 0.5], "repeats": 1, "images": 8}))
    m = result["metrics"]
    assert 0 <= m["test_dice"] <= 1 and 0 <= m["test_iou"] <= m["test_dice"] + 1e-9
    assert result["primary"] == "test_dice" and result["probe"]["metric"] == "dice"


def test_probe_masks_more_and_costs_more(npz):
    result = run(tiny(npz, method="none", epochs=4, probe={"fractions": [0.0, 0.5, 0.99], "repeats": 2,
                                                           "images": 30}))
    probe = result["probe"]
    assert probe["drop"][0] == 0.0 and probe["fractions"] == [0.0, 0.5, 0.99]
    assert probe["values"][2] <= probe["values"][0]


@pytest.mark.parametrize("values, message", [
    ({"method": "dropblok"}, "did you mean"),
    ({"epochs": 0}, "epochs"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"colour": "red"}, "unknown run setting"),
    ({"method": "none", "params": {"p": 0.1}}, "takes no params"),
    ({"device": "tpu"}, "device"),
    ({"probe": {"fractions": [1.5]}}, "probe.fractions"),
    ({"lr": -1.0}, "lr"),
])
def test_bad_configs_are_rejected(values, message):
    with pytest.raises((ValueError, TypeError), match=message):
        RunConfig.from_dict(values)


# ----------------------------------------------------------------------------------------- store, resume
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


# ------------------------------------------------------------------------------------------------- sweeps
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


# ------------------------------------------------------------------------------------------------- report
def test_report_has_figures_tables_and_failures(npz, tmp_path):
    configs = [tiny(npz, method=m, seed=s, epochs=2, probe={"fractions": [0.0, 0.5], "repeats": 1, "images": 30})
               for s in range(3) for m in ("none", "spatial_dropout")]
    configs.append(tiny(npz, method="spatial_dropout", model="mlp", model_params={"hidden": [8]}, epochs=1))
    with Store(tmp_path / "r.db") as store:
        counts = S.execute(configs, store, progress=False)
        assert counts["done"] == 6 and counts["failed"] == 1
        comps = summarize(store.runs())
    main = next(c for c in comps if c["setting"]["model"] == "cnn")
    arm = next(a for a in main["arms"] if a["method"] == "spatial_dropout")
    assert arm["test"].n == 3 and len(arm["values"]) == 3
    rep = write_report(tmp_path / "r.db", tmp_path / "out")
    page = rep["index"].read_text()
    md = rep["markdown"].read_text()
    imgs = [f.name for f in rep["figures"]]
    assert any(n.endswith("box.png") for n in imgs) and any(n.endswith("probe.png") for n in imgs)
    for name in imgs:
        assert (tmp_path / "out" / name).stat().st_size > 5000 and f"src='{name}'" in page
    assert "http" not in page.replace("http-equiv", "")  # opens offline: nothing fetched
    assert "Failed runs" in md and "spatial_dropout" in md and "paired" in md
    assert "vs baseline" in md and ("within noise" in md or "better" in md or "worse" in md)
    assert "p(θ)" in md  # the taxonomy row of the method


def test_report_on_missing_or_empty_store(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "none.db", tmp_path / "o")
    Store(tmp_path / "empty.db").close()
    with pytest.raises(ValueError, match="no runs"):
        write_report(tmp_path / "empty.db", tmp_path / "o")


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_run_sweep_report_probe_and_lab(npz, tmp_path, capsys):
    from dropkit.cli import main

    db = str(tmp_path / "cli.db")
    common = ["--data", npz, "--train-size", "30", "--val-size", "6", "--epochs", "1", "--db", db]
    assert main(["run", "--method", "dropout", "--param", "p=0.3", "-q", *common]) == 0
    out = capsys.readouterr().out
    assert "done" in out and "test_acc" in out
    assert main(["run", "--method", "dropout", "--param", "p=0.3", "-q", *common]) == 0  # already stored
    assert "nothing to do" in capsys.readouterr().err
    assert main(["run", "--method", "spatial_dropout", "--model", "mlp", "-q", *common]) == 1

    sweep = tmp_path / "s.toml"
    sweep.write_text(f'[grid]\nmethods = ["none", "dropout"]\nseeds = 2\n[run]\ndata = "{npz}"\n'
                     'train_size = 30\nval_size = 6\nepochs = 1\n')
    assert main(["sweep", str(sweep), "--db", db, "-q", "--report", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "index.html").is_file()
    assert main(["report", "--db", db, "--out", str(tmp_path / "rep2")]) == 0
    assert "report:" in capsys.readouterr().out
    assert main(["probe", "coadaptation", "--methods", "none", "--seeds", "1", "--fractions", "0,0.5",
                 "--repeats", "1", "--images", "20", "-q", *common]) == 0

    labdb = str(tmp_path / "lab.db")
    args = ["lab", "--fixed", "--quick", "--data", npz, "--methods", "none,dropout,spatial_dropout", "--train-size", "30",
            "--val-size", "6", "--test-size", "20", "--db", labdb, "--out", str(tmp_path / "lab"), "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "vs baseline" in out and "wall time" in out
    assert main(args) == 0  # resumes: everything already in the store
    assert "0 runs done" in capsys.readouterr().out
    assert main(args[:1] + args[2:]) == 2  # without --fixed, --quick is refused: `dropkit lab` is the advisor
    assert main(["run", "--method", "dropout", "--epochs", "0", "--db", db]) == 2  # bad input: message, no trace


def test_lab_plan_covers_every_activation_method():
    from dropkit.lab.suite import lab_configs

    configs = lab_configs()
    names = {c.method for c in configs}
    assert names == {"none"} | {c.name for c in dropkit.methods(kind="activation")}
    assert {c.seed for c in configs} == {0, 1, 2} and all(c.data == "fashion_mnist" for c in configs)
    assert [c.seed for c in configs] == sorted(c.seed for c in configs)  # seed-major
    assert json.dumps(configs[0].to_dict())  # storable


@pytest.mark.parametrize("methods", ["dropout,spatial_dropout", ["dropblock"], "spatial_dropout,none"])
def test_lab_always_has_the_baseline_arm_first(methods):
    from dropkit.lab.suite import lab_configs

    configs = lab_configs(quick=True, methods=methods, seeds=1)
    assert [c.method for c in configs][0] == "none"
    assert [c.method for c in configs].count("none") == 1
