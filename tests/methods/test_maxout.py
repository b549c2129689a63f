"""Maxout: shapes, ReLU as a special case, gradient to the winning piece."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dropkit
from dropkit.methods.maxout import Maxout, maxout
from helpers.props import assert_compiles_fullgraph_block


@pytest.mark.parametrize("name, kind", [("maxout", "block")])
def test_cards(name, kind):
    card = dropkit.get_card(name)
    assert card.family == "related" and card.kind == kind
    assert card.paper and card.summary
    assert set(card.taxonomy) == set(dropkit.registry.TAXONOMY_AXES)


def test_maxout_shapes_linear_and_conv():
    assert Maxout(6, 4, pieces=3)(torch.randn(5, 6)).shape == (5, 4)
    assert Maxout(6, 4)(torch.randn(5, 2, 6)).shape == (5, 2, 4)
    conv = dropkit.create("maxout", in_features=3, out_features=5, pieces=2, kernel_size=3, padding=1)
    assert conv(torch.randn(2, 3, 8, 8)).shape == (2, 5, 8, 8)


def test_maxout_with_a_zero_piece_is_relu():
    layer = Maxout(4, 4, pieces=2)
    with torch.no_grad():
        w = torch.zeros(8, 4)
        w[0::2] = torch.randn(4, 4)  # piece 0 of unit i: z_i; piece 1: constant 0
        layer.layer.weight.copy_(w)
        layer.layer.bias.zero_()
    x = torch.randn(10, 4)
    torch.testing.assert_close(layer(x), torch.relu(F.linear(x, w[0::2])))


def test_maxout_gradient_only_to_the_winning_piece():
    z = torch.randn(4, 6, 3, 3, requires_grad=True)
    maxout(z, 3, dim=1).sum().backward()
    grad = z.grad.view(4, 2, 3, 3, 3)
    winners = z.detach().view(4, 2, 3, 3, 3).argmax(dim=2, keepdim=True)
    assert torch.equal(grad, torch.zeros_like(grad).scatter(2, winners, 1.0))
    tied = torch.zeros(1, 4, requires_grad=True)  # ties: still exactly one piece gets the gradient
    maxout(tied, 2).sum().backward()
    assert torch.equal(tied.grad.view(2, 2).sum(dim=1), torch.ones(2)) and (tied.grad != 0).sum() == 2


def test_maxout_bad_arguments_and_compile():
    with pytest.raises(ValueError, match="multiple"):
        maxout(torch.randn(2, 5), 2)
    with pytest.raises(ValueError, match="pieces"):
        Maxout(3, 3, pieces=0)
    with pytest.raises(ValueError, match="conv form"):
        Maxout(3, 2, kernel_size=3)(torch.randn(2, 3))
    assert_compiles_fullgraph_block(Maxout(3, 2, kernel_size=3), torch.randn(2, 3, 6, 6))
