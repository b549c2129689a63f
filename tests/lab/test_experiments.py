"""The experiment scripts (``dropkit.lab.experiments``) record their results in the lab's store."""

from __future__ import annotations

import argparse

import torch

from dropkit.lab.experiments import moe_lm, soft_tree
from dropkit.lab.store import Store

torch.set_num_threads(1)


def _args(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_soft_tree_rows_go_into_the_store(tmp_path, capsys):
    db = tmp_path / "runs.db"
    args = _args(soft_tree, ["regression", "--depths", "2", "--p", "0", "0.2", "--seeds", "0", "--steps", "20",
                             "--n-train", "16", "--db", str(db)])
    assert soft_tree.run_from_args(args) == 0
    assert "2 rows recorded" in capsys.readouterr().out
    with Store(db) as store:
        rows = store.runs(kind="experiment")
    assert sorted(r["config"]["p"] for r in rows) == [0.0, 0.2]
    assert all(r["model"] == "soft_tree" and r["method"] == "hme_dropout" and "test_mse" in r["metrics"]
               for r in rows)


def test_moe_lm_results_go_into_the_store(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"line {i} of a small corpus, with words to model" for i in range(100)))
    db = tmp_path / "runs.db"
    args = _args(moe_lm, ["--corpus", str(corpus), "--steps", "2", "--p", "0", "0.3", "--batch", "2", "--seq-len",
                          "8", "--d-model", "16", "--d-ff", "16", "--layers", "1", "--experts", "2", "--db", str(db)])
    assert moe_lm.run_from_args(args) == 0
    assert "2 results recorded" in capsys.readouterr().out
    with Store(db) as store:
        rows = {r["config"]["p"]: r for r in store.runs(kind="experiment")}
    assert set(rows) == {0.0, 0.3}
    assert rows[0.3]["method"] == "gating_dropout" and "val_loss" in rows[0.3]["metrics"]
    assert rows[0.3]["config"]["data"] == str(corpus) and rows[0.3]["environment"]["torch"] == torch.__version__


def test_output_files_that_cannot_be_written_are_refused_before_training(tmp_path, monkeypatch):
    # --plot / --json under a file, or naming a folder, used to fail with a traceback once the training was done.
    import pytest

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(soft_tree, "regression_sweep", lambda *a, **k: pytest.fail("trained before the check"))
    for flag, value, message in (("--plot", blocker / "fits.png", "is a file, not a folder"),
                                 ("--json", tmp_path, "is a folder; give a file path")):
        args = _args(soft_tree, ["regression", "--depths", "2", "--steps", "2", "--db", "", flag, str(value)])
        with pytest.raises(ValueError, match=rf"soft-tree: {flag} .*{message}"):
            soft_tree.run_from_args(args)
    monkeypatch.setattr(moe_lm, "run_comparison", lambda *a, **k: pytest.fail("trained before the check"))
    args = _args(moe_lm, ["--corpus", str(blocker), "--steps", "2", "--json", str(blocker / "r.json")])
    with pytest.raises(ValueError, match=r"moe-lm: --json .*is a file, not a folder"):
        moe_lm.run_from_args(args)


def test_the_width_probe_refuses_an_output_folder_under_a_file_before_training(tmp_path, capsys):
    from dropkit.cli import main

    (tmp_path / "a-file").write_text("")
    code = main(["probe", "width", "--out", str(tmp_path / "a-file" / "out"), "--db", str(tmp_path / "r.db")])
    assert code == 2 and "is a file, not a folder" in capsys.readouterr().err
    assert not (tmp_path / "r.db").exists()
