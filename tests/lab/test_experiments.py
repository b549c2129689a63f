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
