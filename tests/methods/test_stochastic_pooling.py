"""Stochastic pooling: one activation per region, the eval weighting, gradient to the sample only."""

from __future__ import annotations

import math

import pytest
import torch

import dropkit
from dropkit.methods.stochastic_pooling import StochasticPool2d, stochastic_pooling
from helpers.props import assert_compiles_fullgraph_block, seeded


@pytest.mark.parametrize("name, kind", [("stochastic_pooling", "block")])
def test_cards(name, kind):
    card = dropkit.get_card(name)
    assert card.family == "related" and card.kind == kind
    assert card.paper and card.summary
    assert set(card.taxonomy) == set(dropkit.registry.TAXONOMY_AXES)


@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2)])
def test_stochastic_pooling_output_is_an_element_of_its_region(kernel, stride):
    x = torch.relu(torch.randn(3, 4, 9, 9))
    y = stochastic_pooling(x, kernel, stride, generator=seeded())
    s = kernel if stride is None else stride
    windows = x.unfold(2, kernel, s).unfold(3, kernel, s).flatten(-2)
    assert y.shape == windows.shape[:4]
    assert (windows == y.unsqueeze(-1)).any(dim=-1).all()
    positive = windows.amax(dim=-1) > 0
    assert (y[positive] > 0).all()  # a zero entry is never sampled when a positive one exists


def test_stochastic_pooling_mc_mean_equals_eval_and_zero_regions():
    region = torch.tensor([[[[1.0, 3.0], [0.0, 4.0]]]], dtype=torch.float64)
    x = torch.cat([region, torch.zeros_like(region)], dim=3).expand(50000, 1, 2, 4).contiguous()
    train = stochastic_pooling(x, 2, generator=seeded(2))
    ev = stochastic_pooling(x, 2, training=False)
    expected = (1 + 9 + 16) / 8
    torch.testing.assert_close(ev[0, 0, 0], torch.tensor([expected, 0.0], dtype=torch.float64))
    freq = torch.stack([(train[:, 0, 0, 0] == v).double().mean() for v in (1.0, 3.0, 4.0)])
    assert (freq - torch.tensor([1 / 8, 3 / 8, 4 / 8], dtype=torch.float64)).abs().max() < 0.01
    assert abs(train[:, 0, 0, 0].mean().item() - expected) < 4 * 1.1 / math.sqrt(50000)
    assert (train[:, 0, 0, 1] == 0).all() and torch.isfinite(ev).all()


def test_stochastic_pooling_gradient_reaches_only_the_sample():
    x = (torch.rand(2, 3, 4, 4) + 0.1).requires_grad_()
    pool = StochasticPool2d(2, generator=seeded())
    pool(x).sum().backward()
    per_region = x.grad.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
    assert ((per_region != 0).sum(dim=-1) == 1).all() and (per_region.sum(dim=-1) == 1).all()


def test_stochastic_pooling_module_card_compile_and_bad_arguments():
    pool = dropkit.create("stochastic_pooling")
    x = torch.relu(torch.randn(2, 3, 6, 6))
    assert pool(x).shape == (2, 3, 3, 3)
    pool.eval()
    assert torch.isfinite(pool(torch.zeros(1, 1, 4, 4))).all()
    assert_compiles_fullgraph_block(StochasticPool2d(2).train(), x)
    with pytest.raises(ValueError, match="input must be"):
        pool(torch.randn(3, 6, 6))
    with pytest.raises(ValueError, match="kernel_size"):
        stochastic_pooling(x, 7)
    with pytest.raises(ValueError, match="kernel_size"):
        StochasticPool2d(0)
