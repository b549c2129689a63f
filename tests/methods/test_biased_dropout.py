"""Biased dropout and crossmap dropout (``dropkit.methods.biased_dropout``): groups by response, rates, shared crossmap masks."""

from __future__ import annotations

import math

import pytest
import torch

import dropkit
from dropkit.methods.biased_dropout import BiasedDropout, biased_dropout, biased_group_rates, crossmap_dropout
from helpers.props import binomial_tolerance, seeded
from helpers.shared_properties import ActivationDefaultsProperties


@pytest.mark.parametrize("name", ["biased_dropout", "crossmap_dropout"])
class TestDefaults(ActivationDefaultsProperties):
    pass


@pytest.mark.parametrize("name, kind", [("biased_dropout", "activation"), ("crossmap_dropout", "activation")])
def test_cards(name, kind):
    card = dropkit.get_card(name)
    assert card.family == "related" and card.kind == kind
    assert card.paper and card.summary
    assert set(card.taxonomy) == set(dropkit.registry.TAXONOMY_AXES)


def test_group_rates_keep_the_mean():
    assert biased_group_rates(0.5, 0.4) == pytest.approx((0.3, 0.7))
    strong, weak = biased_group_rates(0.8, 0.5)  # weak capped at 1
    assert weak == 1.0 and strong == pytest.approx(0.6) and (strong + weak) / 2 == pytest.approx(0.8)


@pytest.mark.parametrize("unit, shape", [("channel", (3, 7, 4, 4)), ("channel", (5, 9)), ("element", (3, 5, 3, 3))])
def test_biased_groups_are_equal_halves_ranked_by_response(unit, shape):
    # bias = 1 with p = 0.5: strong group never dropped, weak group always dropped → the kept set is the group.
    x = torch.rand(shape) + 0.1
    y = biased_dropout(x, 0.5, bias=1.0, unit=unit, generator=seeded())
    n = x.shape[0]
    if unit == "channel" and x.ndim == 4:
        score = x.mean(dim=(2, 3))
        kept = (y != 0).flatten(2).all(dim=2)
        assert torch.equal((y != 0).flatten(2).any(dim=2), kept)  # whole maps
    else:
        score = x.reshape(n, -1)
        kept = (y != 0).reshape(n, -1)
    units = score.shape[1]
    assert (kept.sum(dim=1) == units // 2).all()  # strong group: ⌊U/2⌋, weak: ⌈U/2⌉
    for i in range(n):
        assert score[i][kept[i]].min() >= score[i][~kept[i]].max()
    torch.testing.assert_close(y[y != 0], x[y != 0])  # strong group's rate is 0: scale 1


def test_biased_drop_rates_and_expectation():
    torch.manual_seed(0)
    row = torch.rand(1, 8, dtype=torch.float64) + 0.5
    x = row.expand(40000, 8).contiguous()
    y = biased_dropout(x, 0.5, bias=0.4, generator=seeded(2))
    strong = torch.zeros(8, dtype=torch.bool)
    strong[row[0].topk(4).indices] = True
    dropped = (y == 0).double().mean(dim=0)
    n = x.shape[0]
    assert (dropped[strong] - 0.3).abs().max() < binomial_tolerance(n, 0.3)
    assert (dropped[~strong] - 0.7).abs().max() < binomial_tolerance(n, 0.7)
    sigma = row[0] * torch.tensor([math.sqrt(0.3 / 0.7) if s else math.sqrt(0.7 / 0.3) for s in strong])
    assert ((y.mean(dim=0) - row[0]).abs() <= 5 * sigma / math.sqrt(n)).all()


def test_biased_abs_criterion_ranks_by_magnitude():
    x = torch.tensor([[-5.0, 0.1, 4.0, -0.2]])
    by_value = biased_dropout(x, 0.5, bias=1.0, generator=seeded())
    by_abs = biased_dropout(x, 0.5, bias=1.0, criterion="abs", generator=seeded())
    assert torch.equal(by_value != 0, torch.tensor([[False, True, True, False]]))
    assert torch.equal(by_abs != 0, torch.tensor([[True, False, True, False]]))


def test_biased_bad_options():
    with pytest.raises(ValueError, match="bias"):
        BiasedDropout(bias=1.5)
    with pytest.raises(ValueError, match="unit"):
        BiasedDropout(unit="block")
    with pytest.raises(ValueError, match="criterion"):
        biased_dropout(torch.randn(2, 4), criterion="energy")


def test_crossmap_mask_is_shared_across_maps():
    x = torch.rand(4, 6, 8, 8) + 0.1
    y = crossmap_dropout(x, 0.5, generator=seeded())
    ratio = y / x
    assert torch.equal(ratio, ratio[:, :1].expand_as(ratio))  # constant along C
    assert set(ratio.unique().tolist()) <= {0.0, 2.0}


def test_crossmap_fraction_and_expectation():
    x = torch.ones(64, 3, 32, 32, dtype=torch.float64)
    y = crossmap_dropout(x, 0.3, generator=seeded(5))
    positions = 64 * 32 * 32
    assert abs((y[:, 0] == 0).double().mean().item() - 0.3) < binomial_tolerance(positions, 0.3)
    assert abs(y.mean().item() - 1.0) < 5 * math.sqrt(0.3 / 0.7 / positions)


def test_crossmap_needs_spatial_dims():
    with pytest.raises(ValueError, match="input must be"):
        crossmap_dropout(torch.randn(4, 8))
