"""Insertion points found automatically, on networks the lab did not write: an nn.Sequential LeNet (names "0", "1",
…), MONAI's BasicUNet, a model whose forward uses functional calls; explicit points NAME / NAME:in."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dropkit
from dropkit.lab.insertion import (InsertionPoints, MethodDoesNotFit, Point, attach_points, explicit_points,
                                   find_insertion_points, parse_point)

torch.set_num_threads(1)


def lenet() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.ReLU(), nn.Linear(32, 10))


class FunctionalNet(nn.Module):
    """The PyTorch MNIST example's style: activations, pooling and flattening are functional calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 3)
        self.fc1, self.fc2 = nn.Linear(8 * 5 * 5, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class SharedReLUNet(nn.Module):
    """One ReLU module called at every stage: a hook on it would act everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.relu = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()
        self.pool, self.head = nn.MaxPool2d(2), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.relu(self.conv2(x))
        return self.head(x.mean((2, 3)))


def basic_unet() -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 4, 8, 8, 8, 4))


def card(name):
    return dropkit.get_card(name)


def test_sequential_lenet_points():
    model, x = lenet(), torch.randn(2, 1, 28, 28)
    points = find_insertion_points(model, x)
    # stages end where the resolution changes: after the ReLUs at 28×28 and 10×10 (the pool-only runs are no stage)
    assert points.stages == [Point("1", "after", (6, 28, 28)), Point("4", "after", (16, 10, 10))]
    assert points.classifier == Point("9", "before", (32,))
    assert points.input == Point("0", "before", (1, 28, 28))
    assert points.for_method(card("dropblock")) == points.stages
    assert points.for_method(card("spatial_dropout")) == points.stages
    assert points.for_method(card("dropout")) == [points.classifier]
    assert points.for_method(card("cutout")) == [points.input]
    assert points.for_method(card("dropconnect")) == [points.classifier]  # it wraps the Linear


def test_functional_net_points():
    model, x = FunctionalNet(), torch.randn(2, 1, 28, 28)
    points = find_insertion_points(model, x)
    # F.relu / F.max_pool2d are invisible to hooks: the stage ends are the convs' outputs
    assert [p.spec for p in points.stages] == ["conv1", "conv2"]
    assert [p.shape for p in points.stages] == [(4, 26, 26), (8, 11, 11)]
    assert points.classifier == Point("fc2", "before", (16,))
    assert points.input == Point("conv1", "before", (1, 28, 28))


def test_monai_basic_unet_points():
    model, x = basic_unet(), torch.randn(2, 1, 32, 32)
    points = find_insertion_points(model, x)
    sides = [p.shape[-1] for p in points.stages]
    assert sides == [32, 16, 8, 4, 2, 4, 8, 16, 32]  # encoder down, decoder up: one stage per resolution run
    # the last stage ends in the output layer: its point is that layer's input (features, not logits)
    assert points.stages[-1] == Point("final_conv", "before", (4, 32, 32))
    assert all(p.shape[0] != 3 for p in points.stages)
    assert points.classifier is None
    # element methods go to the last two stages when there is no nn.Linear
    assert points.for_method(card("dropout")) == points.stages[-2:]
    with pytest.raises(MethodDoesNotFit, match="no nn.Linear"):
        points.for_method(card("dropconnect"))


@pytest.mark.parametrize("make, shape", [(lenet, (1, 28, 28)), (FunctionalNet, (1, 28, 28)),
                                         (basic_unet, (1, 32, 32))])
@pytest.mark.parametrize("method", ["spatial_dropout", "dropblock", "dropout"])
def test_found_points_train_with_the_method_attached(make, shape, method):
    torch.manual_seed(0)
    model, x = make(), torch.randn(4, *shape)
    points = find_insertion_points(model, x[:2]).for_method(card(method), {"p": 0.3})
    handles = attach_points(model, method, points, p=0.3)
    model.train()
    out = model(x)
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    plain = model(x)
    assert torch.equal(plain, model(x))  # identity in eval: deterministic
    for h in handles:
        h.remove()
    assert not [n for n, _ in model.named_modules() if "dropkit_" in n]


def test_shared_modules_are_not_points():
    points = find_insertion_points(SharedReLUNet(), torch.randn(2, 1, 8, 8))
    assert [p.spec for p in points.stages] == ["pool:in", "conv2"]  # not "relu": it runs at both stages
    assert points.classifier == Point("head", "before", (8,))


def test_methods_that_do_not_fit_say_why():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 3))
    points = find_insertion_points(mlp, torch.randn(2, 1, 40))
    assert points.stages == [] and points.classifier == Point("3", "before", (16,))
    with pytest.raises(MethodDoesNotFit, match="spatial feature maps"):
        points.for_method(card("spatial_dropout"))
    with pytest.raises(MethodDoesNotFit, match="block"):
        points.for_method(card("maxout"))
    with pytest.raises(MethodDoesNotFit, match="residual branches"):
        points.for_method(card("drop_path"))
    signal_cnn = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4, 8, 3), nn.ReLU(),
                               nn.Flatten(), nn.Linear(8 * 13, 3))
    points = find_insertion_points(signal_cnn, torch.randn(2, 2, 32))
    assert [p.shape for p in points.stages] == [(4, 30), (8, 13)]
    assert points.for_method(card("spatial_dropout")) == points.stages  # channel dropout works on (C, L)
    with pytest.raises(MethodDoesNotFit, match=r"dropblock does not fit the features \(4, 30\) at 1: .*4-D"):
        points.for_method(card("dropblock"))  # a 2-D method on 1-D signals
    with pytest.raises(MethodDoesNotFit, match="4-D"):
        points.for_method(card("cutout"))
    assert isinstance(MethodDoesNotFit("x"), ValueError)


def test_trial_leaves_the_random_state_alone():
    points = find_insertion_points(lenet(), torch.randn(2, 1, 28, 28))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    points.for_method(card("dropblock"))
    assert torch.equal(torch.rand(3), expected)


def test_tracing_restores_the_mode_and_leaves_no_hooks():
    model = lenet().train()
    find_insertion_points(model, torch.randn(2, 1, 28, 28))
    assert model.training and not any(m._forward_hooks for m in model.modules())
    with pytest.raises(TypeError, match="batch tensor"):
        find_insertion_points(model, [1, 2])


def test_group_names_map_to_found_points():
    points = find_insertion_points(lenet(), torch.randn(2, 1, 28, 28))
    assert points.group("conv") == points.stages[-2:] and points.group("fc") == [points.classifier]
    assert points.group("input") == [points.input]
    with pytest.raises(ValueError, match="placement group must be one of"):
        points.group("branch")
    assert InsertionPoints([], None, None).group("fc") == []


@pytest.mark.parametrize("text, parsed", [("fc", ("fc", "after")), ("fc:in", ("fc", "before")),
                                          ("layer3.0:out", ("layer3.0", "after")), ("0:in", ("0", "before"))])
def test_parse_point(text, parsed):
    assert parse_point(text) == parsed


@pytest.mark.parametrize("text", ["", ":in", "fc:inn", "fc:before", 3])
def test_parse_point_rejects(text):
    with pytest.raises(ValueError, match="NAME:in"):
        parse_point(text)


def test_explicit_points_have_shapes_and_are_checked():
    model, x = lenet(), torch.randn(2, 1, 28, 28)
    assert explicit_points(model, ["4", "9:in"], x) == [Point("4", "after", (16, 10, 10)), Point("9", "before", (32,))]
    with pytest.raises(ValueError, match="did you mean '9'"):
        explicit_points(model, ["99"], x)
    with pytest.raises(ValueError, match="twice"):
        explicit_points(model, ["4", "4:out"], x)
    with pytest.raises(ValueError, match="non-empty list"):
        explicit_points(model, "4", x)
    with pytest.raises(ValueError, match="where must be one of"):
        Point("4", "inside", (1,))
