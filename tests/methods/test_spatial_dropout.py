"""SpatialDropout: the random family's shared properties, whole channels dropped, layout checks."""

import pytest
import torch

import dropkit
from helpers.props import binomial_tolerance
from helpers.shared_properties import RandomFamilyProperties


@pytest.mark.parametrize("name", ["spatial_dropout"])
class TestCommon(RandomFamilyProperties):
    pass


class TestSpatialDropout:
    @pytest.mark.parametrize("shape", [(16, 32, 20), (16, 32, 5, 6), (8, 16, 3, 4, 5)])
    def test_whole_channels_dropped(self, shape):
        x = torch.rand(*shape) + 0.1
        y = dropkit.spatial_dropout(x, 0.25, generator=torch.Generator().manual_seed(1))
        ratio = (y / x).flatten(2)
        per_channel = ratio[..., :1]
        assert torch.allclose(ratio, per_channel.expand_as(ratio))  # each (n, c) slice all zero or all scaled
        nonzero = per_channel[per_channel != 0]
        torch.testing.assert_close(nonzero, torch.full_like(nonzero, 1 / 0.75))
        frac = (per_channel == 0).float().mean().item()
        assert abs(frac - 0.25) < binomial_tolerance(shape[0] * shape[1], 0.25)

    @pytest.mark.parametrize("shape", [(3, 4), (1, 2, 3, 4, 5, 6)])
    def test_ambiguous_ndim_refused(self, shape):
        with pytest.raises(ValueError, match="spatial_dims"):
            dropkit.spatial_dropout(torch.ones(*shape), 0.1)

    def test_spatial_dims_mismatch_refused(self):
        with pytest.raises(ValueError, match="spatial_dims=2"):
            dropkit.create("spatial_dropout", spatial_dims=2)(torch.ones(2, 3, 4))
