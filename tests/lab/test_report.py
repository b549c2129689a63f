"""The report (``dropkit.lab.report``): figures, tables, failures, and missing or empty stores."""

from __future__ import annotations

import pytest
import torch

from dropkit.lab import sweep as S
from dropkit.lab.report import summarize, write_report
from dropkit.lab.store import Store
from dropkit.lab.sweep import execute
from dropkit.lab.train import RunConfig
from helpers.lab import tiny

torch.set_num_threads(1)


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


def test_experiment_results_stay_out_of_the_comparisons(npz, tmp_path):
    with Store(tmp_path / "runs.db") as store:
        store.record_experiment("soft_tree", {"p": 0.1, "depth": 3}, {"test_mse": 0.2})
        with pytest.raises(ValueError, match="no runs"):  # an experiment is not a lab run
            write_report(store, tmp_path / "o")
        execute([tiny(npz, method="none", epochs=1)], store, progress=False)
        (comp,) = write_report(store, tmp_path / "o")["comparisons"]
    assert [a["label"] for a in comp["arms"]] == ["none"]


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


def _advice_with_curves(curves):
    import math

    from dropkit.lab.advisor.answer import Advice

    return Advice(setting={"metric": "accuracy"}, candidates=[], baseline={"search_value": 0.8}, skipped={},
                  points={}, curves=curves, detectable=math.nan, seeds=[], plan={})


def _trial(p, value, **more):
    return {"params": {"dropblock.p": p, **more}, "value": value, "epoch": 30, "state": "complete", "number": 0}


def test_a_second_parameter_that_never_changed_is_named_in_the_title_not_drawn_as_a_colour_scale():
    # Every DropBlock trial of a run had block_size 3: the panel used to carry a colour bar from 2.7 to 3.3.
    import matplotlib.pyplot as plt

    from dropkit.lab.advisor.report import strength_figure

    curves = {"dropblock": [_trial(0.1, 0.81, **{"dropblock.block_size": 3}),
                            _trial(0.2, 0.82, **{"dropblock.block_size": 3})]}
    fig = strength_figure(_advice_with_curves(curves))
    try:
        assert len(fig.axes) == 1  # no colour bar
        assert fig.axes[0].get_title() == "dropblock (block_size = 3 in every trial)"
    finally:
        plt.close(fig)


def test_an_integer_second_parameter_gets_a_discrete_scale_with_integer_ticks():
    import matplotlib.pyplot as plt

    from dropkit.lab.advisor.report import strength_figure

    curves = {"dropblock": [_trial(0.1, 0.81, **{"dropblock.block_size": 2}),
                            _trial(0.2, 0.82, **{"dropblock.block_size": 5}),
                            _trial(0.3, 0.80, **{"dropblock.block_size": 3})]}
    fig = strength_figure(_advice_with_curves(curves))
    try:
        colorbar = fig.axes[1]
        assert list(colorbar.get_yticks()) == [2, 3, 4, 5]
        # block sizes 2 and 5 get the two ends of the scale, not two shades of its first colour
        points = fig.axes[0].collections[0]
        colours = points.to_rgba(points.get_array())
        assert abs(colours[0][:3] - colours[1][:3]).max() > 0.5
    finally:
        plt.close(fig)
