"""Cutout: squares of the given size in every channel, count and apply probability."""

from __future__ import annotations

import pytest
import torch

import dropkit
from dropkit.methods.cutout import Cutout, cutout
from helpers.props import binomial_tolerance, seeded
from helpers.shared_properties import ActivationDefaultsProperties


@pytest.mark.parametrize("name", ["cutout"])
class TestDefaults(ActivationDefaultsProperties):
    pass


@pytest.mark.parametrize("name, kind", [("cutout", "activation")])
def test_cards(name, kind):
    card = dropkit.get_card(name)
    assert card.family == "related" and card.kind == kind
    assert card.paper and card.summary
    assert set(card.taxonomy) == set(dropkit.registry.TAXONOMY_AXES)


def _cut_boxes(y: torch.Tensor) -> list[tuple[int, int, int, int]]:
    boxes = []
    for cut in (y[:, 0] == 0):
        rows = cut.any(dim=1).nonzero().flatten()
        cols = cut.any(dim=0).nonzero().flatten()
        boxes.append((int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1))
        r0, r1, c0, c1 = boxes[-1]
        assert cut[r0:r1, c0:c1].all() and cut.sum() == (r1 - r0) * (c1 - c0)  # one filled rectangle
    return boxes


@pytest.mark.parametrize("size", [4, 5])
def test_cutout_one_square_of_the_given_size_in_every_channel(size):
    x = torch.ones(400, 3, 20, 20)
    y = cutout(x, size=size, generator=seeded(1))
    assert torch.equal(y, y[:, :1].expand_as(y))  # all channels share the square
    boxes = _cut_boxes(y)
    heights = torch.tensor([b[1] - b[0] for b in boxes])
    widths = torch.tensor([b[3] - b[2] for b in boxes])
    assert (heights <= size).all() and (widths <= size).all()
    full = [b for b in boxes if 0 < b[0] and b[1] < 20 and 0 < b[2] and b[3] < 20]
    assert full and all(b[1] - b[0] == size and b[3] - b[2] == size for b in full)
    assert (heights < size).any()  # centres near the border: the square is clipped


def test_cutout_count_and_apply_probability():
    x = torch.ones(300, 1, 24, 24)
    one = (cutout(x, size=3, generator=seeded(2)) == 0).flatten(1).sum(dim=1)
    two = (cutout(x, size=3, count=2, generator=seeded(2)) == 0).flatten(1).sum(dim=1)
    assert one.max() <= 9 and two.max() <= 18 and (two > 9).any()
    y = cutout(x, 0.3, size=4, generator=seeded(3))
    cut_fraction = ((y == 0).flatten(1).any(dim=1)).double().mean().item()
    assert abs(cut_fraction - 0.3) < binomial_tolerance(300, 0.3)


def test_cutout_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        Cutout(size=0)
    with pytest.raises(TypeError, match="count"):
        Cutout(count=1.5)
    with pytest.raises(ValueError, match="input must be"):
        cutout(torch.randn(3, 8, 8))


def test_cutout_is_input_space():
    assert dropkit.get_card("cutout").taxonomy["space"] == "input"
