"""Clustering-based adaptive dropout (the four characteristics, rates, grouping, bad input)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dropkit
from dropkit.methods.clustering_dropout import ClusteringDropout, group_probabilities, kmeans_1d
from dropkit.protocol import step_statistics
from helpers.props import assert_compiles_fullgraph, assert_eval_identity, binomial_tolerance


def _fed(layer: ClusteringDropout, x: torch.Tensor, steps: int) -> None:
    """Train-mode forwards and protocol steps (no optimizer needed for the feature characteristic)."""
    layer.train()
    for _ in range(steps):
        layer(x)
        step_statistics(layer)


def _graded_input(n: int = 64) -> torch.Tensor:
    """Nine units in three clear magnitude levels: 0.1, 1 and 10."""
    levels = torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0, 1.0, 10.0, 10.0, 10.0])
    return torch.ones(n, 9) * levels


def test_kmeans_recovers_clear_groups_ordered_by_centroid() -> None:
    v = torch.tensor([9.0, 0.1, 5.0, 0.2, 9.5, 5.1, 0.0])
    for init in ("kmeans++", "quantile"):
        centroids, assign = kmeans_1d(v, 3, init=init, generator=torch.Generator().manual_seed(0))
        assert torch.all(centroids[1:] >= centroids[:-1])
        assert torch.equal(assign, torch.tensor([2, 0, 1, 0, 2, 1, 0]))


def test_kmeans_is_deterministic_for_a_seed() -> None:
    torch.manual_seed(0)
    v = torch.rand(200)
    runs = [kmeans_1d(v, 4, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_kmeans_with_fewer_distinct_values_than_groups() -> None:
    centroids, assign = kmeans_1d(torch.zeros(5), 3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(centroids).all() and assign.min() >= 0 and assign.max() < 3
    with pytest.raises(ValueError, match="init"):
        kmeans_1d(torch.ones(3), 2, init="random")


def test_group_probabilities_monotone_with_exact_mean() -> None:
    w = torch.tensor([4.0, 2.0, 1.0, 0.5])
    n = torch.tensor([3.0, 5.0, 7.0, 1.0])
    for p in (0.1, 0.3, 0.5, 0.7):
        probs = group_probabilities(w, n, p)
        assert torch.all(probs[1:] <= probs[:-1])
        assert abs(float((probs * n).sum() / n.sum()) - p) < 1e-6
        assert probs.min() >= 0.05 - 1e-7 and probs.max() <= 0.9 + 1e-7


def test_groups_ordered_rates_fall_with_response_and_average_to_p() -> None:
    layer = ClusteringDropout(0.5, update_every=2)
    _fed(layer, _graded_input(), 2)
    assert int(layer.num_updates) == 1
    assert torch.equal(layer.assignments, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]))
    probs = layer.group_probs
    assert probs[0] > probs[1] > probs[2]  # strong responses are dropped least
    mean = float((probs * layer.group_sizes).sum() / layer.group_sizes.sum())
    assert abs(mean - 0.5) < 1e-6
    assert torch.equal(layer.unit_probs, probs[layer.assignments])


def test_rank_rule_is_linear_in_rank() -> None:
    layer = ClusteringDropout(0.4, update_every=1, rule="rank", p_min=0.0, p_max=1.0)
    _fed(layer, _graded_input(), 1)
    probs = layer.group_probs
    assert torch.allclose(probs, 0.4 * torch.tensor([3.0, 2.0, 1.0]) / 2.0, atol=1e-6)


def test_one_group_is_standard_dropout() -> None:
    torch.manual_seed(0)
    layer = ClusteringDropout(0.3, groups=1, update_every=1)
    _fed(layer, _graded_input(), 1)
    assert torch.allclose(layer.unit_probs, torch.full((9,), 0.3))
    x = torch.ones(4000, 9)
    out = layer(x)
    zero = float((out == 0).float().mean())
    assert abs(zero - 0.3) < binomial_tolerance(out.numel(), 0.3)
    assert torch.allclose(out[out != 0], torch.tensor(1 / 0.7))


def test_unbiased_per_element() -> None:
    torch.manual_seed(1)
    layer = ClusteringDropout(0.5, update_every=1)
    _fed(layer, _graded_input(), 1)
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0, 1.0, 1.0, 2.0, -1.0, 4.0]], dtype=torch.float64)
    n = 100_000
    out = layer(x.expand(n, 9).contiguous())
    q = 1 - layer.unit_probs.double()
    sd = x.abs() * torch.sqrt((1 - q) / q)
    assert torch.all((out.mean(0) - x[0]).abs() <= 4 * sd[0] / n ** 0.5 + 1e-12)
    zero = (out == 0).double().mean(0)
    assert torch.allclose(zero, layer.unit_probs.double(), atol=0.01)


def test_rates_change_only_at_update_boundaries() -> None:
    layer = ClusteringDropout(0.5, update_every=3)
    x = _graded_input()
    history = []
    for step in range(1, 8):
        layer(x * (1 + step))  # responses drift; rates must not, between boundaries
        step_statistics(layer)
        history.append(layer.unit_probs.clone())
    assert torch.equal(history[0], torch.full((9,), 0.5)) and torch.equal(history[1], history[0])
    assert not torch.equal(history[2], history[1])
    assert torch.equal(history[3], history[2]) and torch.equal(history[4], history[2])
    assert int(layer.num_updates) == 2


def test_without_the_protocol_it_stays_standard_dropout() -> None:
    layer = ClusteringDropout(0.5, update_every=1)
    for _ in range(5):
        layer(_graded_input())
    assert torch.equal(layer.unit_probs, torch.full((9,), 0.5)) and int(layer.num_updates) == 0


def test_weight_characteristic_rates_units_by_the_reading_layer() -> None:
    lin = nn.Linear(6, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([0.01, 0.01, 1.0, 1.0, 5.0, 5.0]).expand(4, 6))
    layer = ClusteringDropout(0.5, characteristic="weight", layer=lin, update_every=1)
    model = nn.Sequential(layer, lin)
    step_statistics(model)
    assert torch.equal(layer.assignments, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert layer.unit_probs[0] > layer.unit_probs[2] > layer.unit_probs[4]


@pytest.mark.parametrize("characteristic", ["feature_grad", "weight_grad"])
def test_gradient_characteristics(characteristic: str) -> None:
    """Large gradients → low drop rates. ∂L/∂y_j grows with unit j's outgoing weight (feature_grad); ∂L/∂W_kj
    grows with the feature y_j that the weight reads (weight_grad)."""
    torch.manual_seed(2)
    lin = nn.Linear(6, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.01, 0.01, 1.0, 1.0, 5.0, 5.0]]))
    layer = ClusteringDropout(0.5, characteristic=characteristic, update_every=2,
                              layer=lin if characteristic == "weight_grad" else None)
    model = nn.Sequential(layer, lin)
    levels = torch.tensor([0.01, 0.01, 1.0, 1.0, 5.0, 5.0])
    x = torch.ones(32, 6) if characteristic == "feature_grad" else torch.ones(32, 6) * levels
    if characteristic == "weight_grad":
        with torch.no_grad():
            lin.weight.fill_(1.0)
    x.requires_grad_(True)  # feature_grad probes only tensors that carry gradients
    for _ in range(2):
        model.zero_grad()
        model(x).sum().backward()
        step_statistics(model)
    assert int(layer.num_updates) == 1
    assert layer.unit_probs[0] > layer.unit_probs[2] > layer.unit_probs[4]


def test_missing_statistics_raise_a_clear_error() -> None:
    layer = ClusteringDropout(0.5, characteristic="feature_grad", update_every=1)
    layer(torch.randn(4, 5))  # no backward
    with pytest.raises(RuntimeError, match="backward"):
        step_statistics(layer)
    lin = nn.Linear(5, 2)
    wg = ClusteringDropout(0.5, characteristic="weight_grad", layer=lin, update_every=1)
    with pytest.raises(RuntimeError, match="zero_grad"):
        step_statistics(nn.Sequential(wg, lin))


def test_changing_p_rescales_the_groups() -> None:
    layer = ClusteringDropout(0.5, update_every=1)
    _fed(layer, _graded_input(), 1)
    order = layer.group_probs.argsort()
    layer.p = 0.2
    mean = float((layer.group_probs * layer.group_sizes).sum() / layer.group_sizes.sum())
    assert abs(mean - 0.2) < 1e-6 and torch.equal(layer.group_probs.argsort(), order)


def test_all_zero_input_gives_no_nan() -> None:
    layer = ClusteringDropout(0.5, update_every=1)
    _fed(layer, torch.zeros(8, 5), 1)
    assert torch.allclose(layer.unit_probs, torch.full((5,), 0.5))
    assert torch.isfinite(layer(torch.zeros(8, 5))).all()


def test_eval_identity_and_state_dict_round_trip() -> None:
    layer = ClusteringDropout(0.5, update_every=1)
    _fed(layer, _graded_input(), 1)
    assert_eval_identity(layer, torch.randn(3, 9))
    fresh = ClusteringDropout(0.5, update_every=1)  # lazily sized: takes its size from the checkpoint
    fresh.load_state_dict(layer.state_dict())
    for name in ("assignments", "unit_probs", "group_probs", "centroids", "steps", "num_updates"):
        assert torch.equal(getattr(fresh, name), getattr(layer, name)), name


def test_generator_determinism_conv_layout_dtype_and_compile() -> None:
    x = torch.randn(4, 6, 5, 5)
    a = ClusteringDropout(0.4, generator=torch.Generator().manual_seed(0))
    b = ClusteringDropout(0.4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a(x), b(x))
    layer = ClusteringDropout(0.4, num_features=6)
    out = layer(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16
    assert_compiles_fullgraph(layer, x)


def test_registered_card() -> None:
    card = dropkit.get_card("clustering_dropout")
    assert card.kind == "stateful" and card.family == "aware" and card.defaults["groups"] == 3
    assert isinstance(dropkit.create("clustering_dropout"), ClusteringDropout)


@pytest.mark.parametrize("kwargs, error", [
    ({"p": -0.1}, ValueError), ({"characteristic": "activation"}, ValueError), ({"groups": 0}, ValueError),
    ({"update_every": 0}, ValueError), ({"rule": "linear"}, ValueError), ({"gamma": -1.0}, ValueError),
    ({"p_min": 0.6, "p_max": 0.4}, ValueError), ({"characteristic": "weight"}, ValueError),
    ({"layer": nn.Linear(2, 2)}, ValueError), ({"init": "random"}, ValueError), ({"seed": 1.5}, TypeError),
    ({"dim": 0}, ValueError), ({"characteristic": "weight", "layer": nn.Linear(4, 2), "num_features": 5}, ValueError),
])
def test_bad_arguments(kwargs, error) -> None:
    with pytest.raises(error):
        ClusteringDropout(**kwargs)


def test_bad_inputs() -> None:
    layer = ClusteringDropout(0.5, num_features=4)
    with pytest.raises(ValueError, match="4"):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match="shape"):
        layer(torch.randn(4))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 4, dtype=torch.int32))


class TestStatisticsOnlyFromTraining:
    """Held-out data must not leak into the clustering: only supervised (or plain autograd) training forwards count."""

    @staticmethod
    def _model():
        return nn.Sequential(nn.Linear(4, 9), ClusteringDropout(0.5, update_every=100))

    def test_mc_dropout_inference_does_not_accumulate(self):
        model = self._model().eval()
        layer = model[1]
        with dropkit.mc_dropout(model):
            with torch.no_grad():
                model(torch.randn(8, 4))
            model(torch.randn(8, 4))  # autograd on, still inference
        dropkit.mc_dropout(model)  # the function form, without a context
        model(torch.randn(8, 4))
        assert int(layer.response_count) == 0 and float(layer.response_sum.abs().sum()) == 0.0
        model.train()  # back to training: statistics again
        model(torch.randn(8, 4))
        assert int(layer.response_count) == 1

    def test_validation_feed_does_not_accumulate(self):
        model = nn.Sequential(nn.Linear(4, 9), ClusteringDropout(0.5, update_every=100), dropkit.create("ns_dropout"))
        layer = model[1]
        model.train()
        for mode in ("eval", "train"):
            dropkit.feed_validation(model, torch.randn(6, 4), torch.tensor([0, 1, 0, 1, 0, 1]), mode=mode)
        assert int(layer.response_count) == 0
        with dropkit.supervise(model, torch.tensor([0, 1, 0, 1, 0, 1])):
            model(torch.randn(6, 4))
        assert int(layer.response_count) == 1

    def test_no_grad_training_mode_pass_does_not_accumulate(self):
        model = self._model().train()
        with torch.no_grad():
            model(torch.randn(8, 4))
        assert int(model[1].response_count) == 0

    def test_mc_dropout_rejects_a_name(self):
        with pytest.raises(TypeError, match="model"):
            dropkit.mc_dropout("model")
