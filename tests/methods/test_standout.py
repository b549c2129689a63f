"""Standout: input-dependent keep probabilities, the eval expectation, no gradient through the sample."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import dropkit
from dropkit.methods.standout import Standout, standout
from helpers.props import assert_compiles_fullgraph_block, seeded


@pytest.mark.parametrize("name, kind", [("standout", "block")])
def test_cards(name, kind):
    card = dropkit.get_card(name)
    assert card.family == "related" and card.kind == kind
    assert card.paper and card.summary
    assert set(card.taxonomy) == set(dropkit.registry.TAXONOMY_AXES)


def test_standout_eval_is_expectation_and_mc_mean_approaches_it():
    torch.manual_seed(0)
    layer = Standout(5, 4, alpha=1.0, beta=0.0).double()
    x = torch.randn(1, 5, dtype=torch.float64)
    layer.eval()
    ev = layer(x)
    z = layer.linear(x)
    torch.testing.assert_close(ev, torch.sigmoid(z) * torch.relu(z))
    layer.train()
    layer.generator = seeded(3)
    samples = layer(x.expand(100000, 5))
    pi = torch.sigmoid(z)
    sd = torch.relu(z) * torch.sqrt(pi * (1 - pi))
    assert ((samples.mean(dim=0, keepdim=True) - ev).abs() <= 4 * sd / math.sqrt(1e5) + 1e-12).all()


def test_standout_keep_probability_depends_on_input_and_no_gradient_through_the_sample():
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[4.0, 0.5], [0.5, 4.0]]).repeat(5000, 1)
    y = standout(x, w, alpha=2.0, beta=-4.0, generator=seeded())
    kept = (y != 0).double().view(5000, 2, 2).mean(dim=0)
    pi = torch.sigmoid(2 * torch.tensor([[4.0, 0.5], [0.5, 4.0]]) - 4).double()
    assert (kept - pi).abs().max() < 0.03
    xs = torch.randn(3, 2, requires_grad=True)
    ws = w.clone().requires_grad_()
    out = standout(xs, ws, generator=seeded(1))
    mask = (out != 0).float()
    out.sum().backward()
    ref_x = xs.detach().clone().requires_grad_()
    ref_w = w.clone().requires_grad_()
    (torch.relu(F.linear(ref_x, ref_w)) * mask).sum().backward()
    torch.testing.assert_close(ws.grad, ref_w.grad)
    torch.testing.assert_close(xs.grad, ref_x.grad)


def test_standout_module_and_bad_arguments():
    layer = dropkit.create("standout", in_features=6, out_features=3, generator=seeded())
    assert layer(torch.randn(4, 2, 6)).shape == (4, 2, 3)
    assert_compiles_fullgraph_block(Standout(6, 3), torch.randn(4, 6))
    with pytest.raises(ValueError, match="missing"):
        dropkit.create("standout")
    with pytest.raises(ValueError, match="activation"):
        Standout(2, 2, activation="gelu2")
    with pytest.raises(ValueError, match="in_features"):
        Standout(2, 2)(torch.randn(3, 5))
