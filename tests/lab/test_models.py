"""The lab's models (``dropkit.lab.models``): any image size, named insertion points, variants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dropkit
from dropkit.lab import models as M


@pytest.mark.parametrize("name", ["cnn", "resnet", "mlp", "unet"])
@pytest.mark.parametrize("size", [8, 13, 28])
def test_models_take_any_size_and_name_their_points(name, size):
    classes = 3
    model = M.build_model(name, 2, classes, (size, size), **({"width": 4} if name != "mlp" else {"hidden": (8,)}))
    x = torch.randn(2, 2, size, size)
    out = model(x)
    assert out.shape == ((2, classes, size, size) if name == "unet" else (2, classes))
    names = [n for group in model.insertion_points.values() for n in group]
    shapes = M.feature_shapes(model, names, x)
    assert set(shapes) == set(names)
    for n in model.insertion_points.get("conv", []):
        assert len(shapes[n]) == 3  # conv points carry (C, H, W) maps
    assert model.probe_point in dict(model.named_modules())


def test_unet_points_sit_between_the_two_convolutions():
    model = M.UNet(1, 2, (32, 32), width=4)
    points = model.insertion_points["conv"]
    assert model.levels == 3 and len(points) == 2 * 3 + 1  # encoder, bottleneck and decoder stages
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    for name in points:
        stage = modules[name.rsplit(".", 1)[0]]
        first, second = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
        assert [m for m in modules[name].modules() if isinstance(m, nn.Conv2d)] == [first]
        modules[name].register_forward_hook(lambda _m, _i, out, n=name: seen.__setitem__(n, out))
        second.register_forward_pre_hook(lambda _m, args, n=name: seen.__setitem__(n + " → conv", args[0]))
    model.eval()
    model(torch.randn(2, 1, 32, 32))
    for name in points:  # the point's output is exactly what the stage's second convolution reads
        assert seen[name] is seen[name + " → conv"]


def test_unet_points_take_a_method_by_name():
    torch.manual_seed(0)
    model = M.UNet(1, 3, (16, 16), width=4)
    x = torch.randn(2, 1, 16, 16)
    model.eval()
    plain = model(x)
    handle = dropkit.attach(model, "dropout", at=model.insertion_points["conv"], p=0.5)
    assert len(handle.layers) == len(model.insertion_points["conv"])
    model.eval()  # the attached layers are new modules, in training mode until told
    assert torch.equal(model(x), plain)  # eval: the identity
    model.train()
    assert not torch.allclose(model(x), model(x))  # train: fresh masks each call


def test_build_model_rejects_bad_names_and_sizes():
    with pytest.raises(ValueError, match="model must be one of"):
        M.build_model("vgg", 1, 10, (28, 28))
    with pytest.raises(ValueError, match="at least 8"):
        M.build_model("cnn", 1, 10, (6, 6))


def test_the_config_lists_exactly_the_models_built_here():
    from dropkit.lab.config import MODEL_NAMES, VARIANTS

    assert tuple(M.MODELS) == MODEL_NAMES
    assert set(VARIANTS) <= set(M.MODELS)


@pytest.mark.parametrize("name, params, message", [
    ("cnn", {"width": 0}, "width must be an integer ≥ 1, got 0"),        # built an empty network, silently
    ("cnn", {"width": -2}, "width must be an integer ≥ 1, got -2"),      # failed inside torch
    ("cnn", {"width": "abc"}, "width must be an integer ≥ 1, got 'abc'"),
    ("cnn", {"width": 2.5}, "width must be an integer ≥ 1, got 2.5"),
    ("resnet", {"blocks": 0}, "blocks must be an integer ≥ 1"),
    ("mlp", {"hidden": [0]}, "hidden must be a list of integers ≥ 1"),   # built a zero-width layer, silently
    ("cnn", {"depth": 3}, "unknown parameter 'depth'; its parameters: width, variant"),
])
def test_bad_model_parameters_are_refused_by_name(name, params, message):
    with pytest.raises(ValueError, match=f"model {name}: {message}"):
        M.build_model(name, 1, 10, (32, 32), **params)
