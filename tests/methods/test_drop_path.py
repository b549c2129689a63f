"""DropPath: the random family's shared properties, whole samples dropped, row and batch modes."""

import pytest
import torch

import dropkit
from helpers.props import binomial_tolerance
from helpers.shared_properties import RandomFamilyProperties


@pytest.mark.parametrize("name", ["drop_path"])
class TestCommon(RandomFamilyProperties):
    pass


class TestDropPath:
    def test_row_mode_drops_whole_samples(self):
        x = torch.rand(400, 3, 4) + 0.1
        y = dropkit.drop_path(x, 0.25, generator=torch.Generator().manual_seed(0))
        ratio = (y / x).flatten(1)
        assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))
        frac = (ratio[:, 0] == 0).float().mean().item()
        assert abs(frac - 0.25) < binomial_tolerance(400, 0.25)

    def test_batch_mode_shares_one_draw(self):
        x = torch.rand(8, 3) + 0.1
        outs = [dropkit.drop_path(x, 0.5, mode="batch", generator=torch.Generator().manual_seed(s)) for s in range(20)]
        for y in outs:
            assert torch.equal(y, torch.zeros_like(y)) or torch.allclose(y, 2 * x)
        assert any(torch.equal(y, torch.zeros_like(y)) for y in outs)

    def test_p_one_and_no_scaling(self):
        x = torch.rand(5, 3)
        assert torch.equal(dropkit.drop_path(x, 1.0), torch.zeros_like(x))
        y = dropkit.drop_path(x, 0.5, scale_by_keep=False, generator=torch.Generator().manual_seed(0))
        assert set((y / x).unique().tolist()) <= {0.0, 1.0}

    def test_bad_mode(self):
        with pytest.raises(ValueError, match="mode must be one of"):
            dropkit.create("drop_path", mode="sample")
