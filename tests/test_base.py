"""DropkitModule: the generator checks every layer inherits."""

import pytest
import torch

import dropkit


def test_generator_on_another_device_is_refused():
    # No second device here: a meta-device input stands in for "another device" than the CPU generator.
    layer = dropkit.create("dropout", p=0.5, generator=torch.Generator())
    with pytest.raises(ValueError, match="generator is on device"):
        layer(torch.ones(2, 3, device="meta"))


def test_generator_must_be_a_generator():
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        dropkit.create("dropblock", generator=3)
