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
    small = plan_budget(600, epoch_s=0.26, epochs=30, arms=5, top_k=3, workers=2)
    large = plan_budget(1800, epoch_s=0.26, epochs=30, arms=5, top_k=3, workers=2)
    for plan, budget in ((small, 600), (large, 1800)):
        assert plan.total_s * SAFETY <= budget
        assert plan.seeds >= MIN_SEEDS and plan.trials >= MIN_TRIALS
    assert large.seeds >= small.seeds and large.trials > small.trials
    fixed = plan_budget(1800, epoch_s=0.26, epochs=30, arms=5, top_k=3, workers=2, seeds=7, trials=4)
    assert (fixed.seeds, fixed.trials) == (7, 4)


def test_a_budget_too_small_says_what_it_needs():
    with pytest.raises(ValueError, match=r"too small.*need about [0-9.]+ min"):
        plan_budget(60, epoch_s=1.0, epochs=30, arms=5, top_k=3, workers=2)
