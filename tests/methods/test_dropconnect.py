"""DropConnect: mask statistics on the weights, eval, per-sample convolutions against a loop, bad layers."""

import pytest
import torch
from torch import nn

import dropkit


class TestDropConnect:
    def test_linear_mask_statistics_and_eval(self):
        lin = nn.Linear(200, 100)
        layer = dropkit.create("dropconnect", layer=lin, p=0.4, generator=torch.Generator().manual_seed(0))
        x = torch.eye(200)[:5]
        y = layer(x) - lin.bias  # row i = column i of the dropped, rescaled weight
        ratio = (y / lin.weight[:, :5].T).detach()
        frac = (ratio.abs() < 1e-6).float().mean().item()
        assert abs(frac - 0.4) < 0.05
        layer.eval()
        torch.testing.assert_close(layer(x), lin(x))

    @pytest.mark.parametrize("conv", [nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.Conv1d(3, 5, 3)])
    def test_per_sample_conv_matches_a_loop(self, conv):
        layer = dropkit.create("dropconnect", layer=conv, p=0.5, per_sample=True,
                               generator=torch.Generator().manual_seed(1))
        x = torch.randn(3, conv.in_channels, *([7] * (conv.weight.ndim - 2)))
        y = layer(x)
        weights = dropkit.dropconnect_weight(conv.weight, 0.5, copies=3, generator=torch.Generator().manual_seed(1))
        f = {2: torch.nn.functional.conv2d, 1: torch.nn.functional.conv1d}[conv.weight.ndim - 2]
        for n in range(3):  # reference loop over samples: in the test only
            ref = f(x[n:n + 1], weights[n], conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
            torch.testing.assert_close(y[n:n + 1], ref)

    def test_bad_layer(self):
        with pytest.raises(TypeError, match="layer must be one of"):
            dropkit.create("dropconnect", layer=nn.ReLU())
