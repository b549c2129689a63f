"""Where the lab inserts a method (``dropkit.lab.placement``): the papers' placements, fitted block sizes."""

from __future__ import annotations

import pytest

import dropkit
from dropkit.lab import models as M
from dropkit.lab.placement import adapt_params, placement_group


def test_paper_placements():
    cnn, resnet, unet, mlp = (M.SmallCNN(1, 3, (28, 28)), M.ResNet(1, 3, (28, 28)), M.UNet(1, 2, (16, 16)),
                              M.MLP(1, 3, (8, 8)))
    card = dropkit.get_card
    assert placement_group(card("dropout"), cnn) == "fc"
    assert placement_group(card("dropblock"), cnn) == "conv"
    assert placement_group(card("drop_path"), resnet) == "branch"
    assert placement_group(card("drop_path"), cnn) == "conv"  # no residual branches: falls back
    assert placement_group(card("dropout"), unet) == "conv"
    assert placement_group(card("dropblock"), mlp) == "fc"  # then fails on flat features, and is reported
    assert placement_group(card("dropout"), cnn, "conv") == "conv"
    with pytest.raises(ValueError, match="placement must be one of"):
        placement_group(card("dropout"), cnn, "branch")


def test_block_size_fits_small_maps_unless_given():
    card = dropkit.get_card("dropblock")
    assert card.defaults["block_size"] == 7
    assert adapt_params(card, {}, {"a": (64, 7, 7), "b": (128, 7, 7)})["block_size"] == 3
    assert adapt_params(card, {}, {"a": (64, 30, 30)})["block_size"] == 7
    assert adapt_params(card, {"block_size": 5}, {"a": (64, 7, 7)})["block_size"] == 5
