"""Dropout and Gaussian dropout (``dropkit.methods.dropout``): the random family's shared properties, drop fraction, scale, noise moments."""

import pytest
import torch

import dropkit
from helpers.props import binomial_tolerance
from helpers.shared_properties import RandomFamilyProperties


@pytest.mark.parametrize("name", ["dropout", "gaussian_dropout"])
class TestCommon(RandomFamilyProperties):
    pass


class TestDropout:
    def test_drop_fraction_and_scale(self):
        x = torch.ones(64, 32, 8, 8)
        for gen in (None, torch.Generator().manual_seed(0)):
            y = dropkit.dropout(x, 0.3, generator=gen)
            frac = (y == 0).float().mean().item()
            assert abs(frac - 0.3) < binomial_tolerance(x.numel(), 0.3)
            assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))

    def test_p_one_gives_zeros(self):
        assert torch.equal(dropkit.dropout(torch.ones(3, 4), 1.0, generator=torch.Generator()), torch.zeros(3, 4))


class TestGaussianDropout:
    def test_mean_one_variance_p_over_1_minus_p(self):
        y = dropkit.gaussian_dropout(torch.ones(200_000), 0.3, generator=torch.Generator().manual_seed(0))
        assert abs(y.mean().item() - 1) < 0.01
        assert abs(y.var().item() - 0.3 / 0.7) < 0.01

    def test_p_one_refused(self):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            dropkit.create("gaussian_dropout", p=1.0)
