"""Splitting the advisor's wall-clock budget between the search and the confirmation."""

import pytest

from dropkit.lab.advisor.budget import MIN_SEEDS, MIN_TRIALS, SAFETY, parse_budget, plan_budget


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("90s", 90), ("1h30m", 5400), ("45", 45), (120, 120),
                                           ("0.5h", 1800)])
def test_budgets_parse(text, seconds):
    assert parse_budget(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "ten", "10 minutes", "-5m", 0, -1, True, None])
def test_bad_budgets_are_refused(bad):
    with pytest.raises((ValueError, TypeError), match="budget"):
        parse_budget(bad)


def test_the_plan_fits_the_budget_and_grows_with_it():
    small = plan_budget(600, epoch_s=0.26, epochs=30, arms=5, top_k=3, workers=2, trial_eval_s=1.0, run_eval_s=2.0)
    large = plan_budget(1800, epoch_s=0.26, epochs=30, arms=5, top_k=3, workers=2, trial_eval_s=1.0, run_eval_s=2.0)
    for plan, budget in ((small, 600), (large, 1800)):
        assert plan.total_s * SAFETY <= budget
        assert plan.seeds >= MIN_SEEDS and plan.trials >= MIN_TRIALS
    assert large.seeds >= small.seeds and large.trials > small.trials
    fixed = plan_budget(1800, epoch_s=0.26, epochs=30, arms=5, top_k=3, workers=2, trial_eval_s=1.0, run_eval_s=2.0, seeds=7, trials=4)
    assert (fixed.seeds, fixed.trials) == (7, 4)


def test_a_budget_too_small_says_what_it_needs():
    with pytest.raises(ValueError, match=r"too small.*need about [0-9.]+ min"):
        plan_budget(60, epoch_s=1.0, epochs=30, arms=5, top_k=3, workers=2, trial_eval_s=0.0, run_eval_s=0.0)


def test_evaluation_is_priced_from_its_images_not_as_a_share_of_training():
    # 300 training images and 10 000 test images: a run's evaluation (8 s) dwarfs its 5 epochs of 0.43 s. The plan
    # used to charge 15 % of the training for it and planned 1.7 min for a search and confirmation that took 3.9.
    plan = plan_budget(300, epoch_s=0.43, epochs=5, arms=3, top_k=3, workers=2, trial_eval_s=0.3, run_eval_s=8.0)
    assert plan.run_s >= 5 * 0.43 + 8.0 and plan.trial_s >= 5 * 0.43 + 0.3
    waves = -(-(3 + 1) * plan.seeds // 2)
    assert plan.confirm_s == pytest.approx(waves * plan.run_s)
    assert plan.total_s * SAFETY <= 300 + 1e-9


def test_a_budget_too_small_for_the_evaluation_says_so():
    with pytest.raises(ValueError, match=r"too small.*evaluation a run.*--test-size"):
        plan_budget(120, epoch_s=0.43, epochs=5, arms=3, top_k=3, workers=2, trial_eval_s=0.3, run_eval_s=30.0)


@pytest.mark.parametrize("name", ["epoch_s", "trial_eval_s", "run_eval_s"])
def test_bad_times_are_refused_by_name(name):
    kwargs = {"epoch_s": 0.5, "trial_eval_s": 0.1, "run_eval_s": 0.1, name: float("nan")}
    with pytest.raises(ValueError, match=name):
        plan_budget(600, epochs=5, arms=3, top_k=3, workers=2, **kwargs)
