"""Guided dropout: top-k / bottom-k by strength, the active-random variant, warm-up, lazy strengths."""

from __future__ import annotations

import pytest
import torch

import dropkit
from dropkit.methods.guided_dropout import GuidedDropout, guided_dropout
from helpers.props import assert_compiles_fullgraph, assert_keeps_dtype_and_format, binomial_tolerance, seeded


@pytest.mark.parametrize("name, kind", [("guided_dropout", "stateful")])
def test_cards(name, kind):
    card = dropkit.get_card(name)
    assert card.family == "related" and card.kind == kind
    assert card.paper and card.summary
    assert set(card.taxonomy) == set(dropkit.registry.TAXONOMY_AXES)


def test_guided_top_k_drops_the_strongest_units_for_the_whole_batch():
    m = GuidedDropout(10, p=0.3)
    x = torch.randn(5, 10)
    y = m(x)
    strongest = m.strength.detach().abs().topk(3).indices
    dropped = (y == 0).all(dim=0)
    assert dropped.sum() == 3 and dropped[strongest].all()
    kept = ~dropped
    torch.testing.assert_close(y[:, kept], x[:, kept] * m.strength.detach()[kept])


def test_guided_bottom_k_and_conv_layout():
    m = GuidedDropout(8, p=0.25, selection="bottom_k")
    x = torch.rand(3, 8, 4, 4) + 0.1
    y = m(x)
    weakest = m.strength.detach().abs().topk(2, largest=False).indices
    dropped = (y == 0).flatten(2).all(dim=2).all(dim=0)
    assert dropped.sum() == 2 and dropped[weakest].all()


def test_guided_warmup_switch_eval_and_strength_gradient():
    m = GuidedDropout(6, p=0.5)
    x = torch.rand(4, 6) + 0.1
    scaled = x * m.strength.detach()
    m.enabled = False  # warm-up: strengths scale, nothing dropped
    torch.testing.assert_close(m(x), scaled)
    m.enabled = True
    assert (m(x) == 0).all(dim=0).sum() == 3
    m.eval()
    torch.testing.assert_close(m(x), scaled)  # eval: identity apart from the strength scaling
    m.train()
    m(x).sum().backward()
    assert m.strength.grad is not None and (m.strength.grad != 0).sum() == 3  # kept units learn


def test_guided_active_random_keeps_the_inactive_region():
    strength = torch.tensor([0.5] * 12 + [0.9, 1.0, 0.2, 0.7])  # mode bin: the twelve 0.5s
    x = torch.ones(20000, 16)
    y = guided_dropout(x, strength, 0.4, selection="active_random", generator=seeded(1))
    assert (y[:, :12] != 0).all()
    rate = (y[:, 12:] == 0).double().mean(dim=0)
    assert (rate - 0.4).abs().max() < binomial_tolerance(20000, 0.4)


def test_guided_lazy_strength_state_dict_and_compile():
    m = dropkit.create("guided_dropout")
    x = torch.randn(2, 12, 4, 4)
    m(x)
    assert m.strength.shape == (12,)
    clone = GuidedDropout(12)
    clone.load_state_dict(m.state_dict())
    assert torch.equal(clone.strength, m.strength)
    assert_compiles_fullgraph(m, x)
    assert_keeps_dtype_and_format(m, x)


def test_guided_bad_arguments():
    with pytest.raises(ValueError, match="selection"):
        GuidedDropout(4, selection="middle")
    with pytest.raises(ValueError, match="dim"):
        GuidedDropout(4, dim=0)
    with pytest.raises(ValueError, match="num_features"):
        GuidedDropout(0)
    with pytest.raises(ValueError, match="strength"):
        GuidedDropout(4)(torch.randn(2, 5))


def test_guided_has_warmup_schedule():
    sched = dropkit.get_card("guided_dropout").schedule
    assert sched["type"] == "warmup" and 0 < sched["fraction"] < 1
    # The lab turns the card into a WarmUp schedule that keeps the layer off for that share of the steps.
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    dropkit.attach(model, "guided_dropout", at=["0"])
    warm = dropkit.schedule.from_card(dropkit.get_card("guided_dropout"), model, total_steps=100)
    assert isinstance(warm, dropkit.schedule.WarmUp) and warm.n_steps == 20
