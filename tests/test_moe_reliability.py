"""Gating Dropout on two gloo ranks under load and under misuse (tests/helpers/dist_moe_worker.py, suite ``reliability``).

One pair of worker processes runs every scenario in turn; a hang anywhere (the failure these tests guard against)
ends in the subprocess timeout, and the workers' own 60 s collective timeout makes a stuck collective an error.
"""

from __future__ import annotations


import pytest

from helpers.moe import run_two_ranks
from helpers.props import binomial_tolerance

WORLD = 2
STEPS = 1000


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("moe_reliability")
    return run_two_ranks(out, "reliability", timeout=240, world=WORLD)


class TestLongRun:
    def test_1000_steps_at_half_without_deadlock(self, ranks):
        runs = [ranks[r]["long_run"] for r in range(WORLD)]
        for key in ("layer_drops", "step_drops"):
            assert len(runs[0][key]) == STEPS
            assert runs[0][key] == runs[1][key], "every rank made the same decision at every step"
            assert abs(sum(runs[0][key]) / STEPS - 0.5) < binomial_tolerance(STEPS, 0.5)
        assert runs[0]["layer_drops"] != runs[0]["step_drops"], "the two layers draw independently"
        assert all(run["finite"] for run in runs)


class TestMismatchedRanks:
    @pytest.mark.parametrize("case", ["train", "eval", "no_drop"])
    def test_different_token_counts_raise_on_every_rank(self, ranks, case):
        for r in range(WORLD):
            msg = ranks[r]["uneven_tokens"][case]
            assert msg is not None, f"rank {r} ran a {case} forward with 12 vs 10 tokens"
            assert "same number of tokens" in msg and "10" in msg and "12" in msg

    @pytest.mark.parametrize("case", ["broadcast", "shared_generator", "step", "step_shared_generator"])
    def test_different_p_raises_on_every_rank(self, ranks, case):
        for r in range(WORLD):
            msg = ranks[r]["uneven_p"][case]
            assert msg is not None and "p must be the same on every rank" in msg
            assert "0.3" in msg and "0.5" in msg

    @pytest.mark.parametrize("case", ["p0_on_one_rank", "train_eval"])
    def test_training_state_mismatch_raises(self, ranks, case):
        for r in range(WORLD):
            msg = ranks[r]["uneven_p"][case]
            assert msg is not None and "same mode" in msg

    def test_ranks_stay_in_step_after_the_errors(self, ranks):
        assert all(ranks[r]["after_errors"] == (2, 6, 8) for r in range(WORLD))


class TestTwoRankEdges:
    def test_no_drop_keeps_every_choice_with_one_capacity(self, ranks):
        seen = [ranks[r]["no_drop"] for r in range(WORLD)]
        assert all(s["all_kept"] and s["forward_finite"] for s in seen)
        assert seen[0]["capacity"] == seen[1]["capacity"] == max(max(s["load"]) for s in seen)

    def test_empty_batch_on_every_rank(self, ranks):
        for r in range(WORLD):
            assert ranks[r]["empty"] == {"shape": (0, 6, 8), "aux": 0.0}
