"""What the advisor needs from a lab run: cocktails (``RunConfig.also``), a search that skips the test split and
reads validation only where asked, and search spaces clipped to the feature maps."""

import pytest

import dropkit
from dropkit.lab.train import RunConfig, train
from dropkit.search_space import SEARCH_SPACES, Range, fit_to_maps


def _config(npz, **kw):
    values = dict(data=npz, model="cnn", model_params={"width": 4}, train_size=None, val_size=15, epochs=2)
    return RunConfig(**{**values, **kw})


def test_a_cocktail_run_attaches_both_methods_at_their_points(npz):
    config = _config(npz, method="spatial_dropout", params={"p": 0.1}, placement=["features.relu3"],
                     also=[{"method": "dropout", "params": {"p": 0.3}, "placement": ["head:in"]}])
    result, model, _ = train(config)
    assert sorted(m.method_name for _, m in dropkit.dropkit_layers(model)) == ["dropout", "spatial_dropout"]
    assert result["placement"]["points"] == ["features.relu3"]
    assert result["placement"]["also"][0]["points"] == ["head:in"]


def test_also_is_checked(npz):
    with pytest.raises(ValueError, match="already in this run"):
        _config(npz, method="dropout", also=[{"method": "dropout"}])
    with pytest.raises(ValueError, match="closest|unknown method"):
        _config(npz, method="dropout", also=[{"method": "dropuot"}])
    with pytest.raises(ValueError, match="baseline"):
        _config(npz, also=[{"method": "dropout"}])
    with pytest.raises(ValueError, match="unknown key"):
        _config(npz, method="dropout", also=[{"method": "spatial_dropout", "at": ["x"]}])


def test_old_configs_keep_their_hash():
    # a config without cocktails hashes as it did before `also` existed (stores stay resumable)
    assert "also" not in RunConfig().to_dict() or RunConfig().config_hash() == RunConfig(also=[]).config_hash()
    assert RunConfig(method="dropout").config_hash() != RunConfig(
        method="dropout", also=[{"method": "spatial_dropout"}]).config_hash()


def test_a_search_run_reads_no_test_and_validates_only_where_asked(npz):
    result, _, _ = train(_config(npz, epochs=3), evaluate_test=False, val_epochs={1, 3})
    assert [("val_acc" in r) for r in result["curves"]] == [True, False, True]
    assert not any(k.startswith("test_") for r in result["curves"] for k in r)
    assert "test_acc" not in result["metrics"] and "gap" in result["metrics"]


def test_search_spaces_cover_the_insertable_methods_and_clip_to_the_maps():
    for card in dropkit.methods():
        if card.kind == "block":
            assert card.search_space == {}
        else:
            assert card.search_space, f"{card.name} has no search space"
            for name in card.search_space:
                assert name in card.defaults, f"{card.name}: {name} is not a parameter"
    assert set(SEARCH_SPACES) <= {c.name for c in dropkit.methods()}
    clipped = fit_to_maps(dropkit.get_card("dropblock").search_space, [(8, 7, 7), (16, 5, 5)])
    assert clipped["block_size"] == Range(1, 2, integer=True) and clipped["p"] == Range(0.02, 0.4)
    assert fit_to_maps({"size": Range(2, 16, integer=True)}, [(1, 3, 3)])["size"].fixed
    assert fit_to_maps(dropkit.get_card("dropout").search_space, [(64,)]) == dropkit.get_card("dropout").search_space


def test_a_trial_lost_to_a_race_for_the_last_slot_is_not_reported_as_a_failure():
    # Two workers may both start an arm's last trial; the later one stops with OverBudget before training. Optuna
    # used to warn "Trial N failed ... because of the following error: OverBudget(...)" and "Trial N failed with
    # value None." for each, which read as a broken search. Real failures must still be reported.
    import logging

    import optuna

    from dropkit.lab.advisor.search import OverBudget, quiet_optuna

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    quiet_optuna()
    keep = Keep()
    root = logging.getLogger("optuna")  # Optuna's own root logger (it does not propagate to the root)
    root.addHandler(keep)
    try:
        study = optuna.create_study(direction="maximize")

        def over(trial):
            raise OverBudget("dropout: 3 trials already started")

        def broken(trial):
            raise RuntimeError("the model diverged")

        study.optimize(over, n_trials=2, catch=(OverBudget,))
        assert keep.messages == []
        study.optimize(broken, n_trials=1, catch=(RuntimeError,))
    finally:
        root.removeHandler(keep)
    assert any("the model diverged" in m for m in keep.messages)
    assert any("Trial 2 failed with value None" in m for m in keep.messages)
