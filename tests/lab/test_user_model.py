"""The 1-D CNN, the MLP on any input, and the user's own model FILE.py:NAME (callable, class, bad specs)."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from dropkit.lab import models as M
from dropkit.lab.user_model import is_user_model_spec, load_user_model, parse_user_model_spec

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------- built-in models
@pytest.mark.parametrize("length", [8, 13, 40])
def test_cnn1d_takes_signals_and_names_its_points(length):
    model = M.build_model("cnn1d", 3, 4, (length,), width=4)
    x = torch.randn(2, 3, length)
    assert model(x).shape == (2, 4)
    names = [n for group in model.insertion_points.values() for n in group]
    shapes = M.feature_shapes(model, names, x)
    assert all(len(shapes[n]) == 2 for n in model.insertion_points["conv"])  # (C, L) maps
    assert shapes["flatten"] == (16,)
    assert model.probe_point in dict(model.named_modules())


@pytest.mark.parametrize("name, input_shape", [("cnn1d", (2, 40)), ("mlp", (7,))])
def test_new_models_compile_in_one_graph(name, input_shape):
    model = M.build_model(name, input_shape[0], 3, input_shape[1:], **({"width": 4} if name == "cnn1d" else {}))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    for n in (2, 5):
        x = torch.randn(n, *input_shape)
        assert torch.allclose(compiled(x), model(x))


@pytest.mark.parametrize("input_shape", [(1, 10, 10), (2, 40), (7,)])
def test_mlp_takes_any_input(input_shape):
    model = M.build_model("mlp", input_shape[0], 3, input_shape[1:], hidden=(8,))
    assert model(torch.randn(5, *input_shape)).shape == (5, 3)


@pytest.mark.parametrize("name, shape, message", [
    ("cnn", (1, 40), "takes image data, but these inputs are signal data .* use cnn1d or mlp"),
    ("cnn1d", (1, 10, 10), "takes signal data"),
    ("resnet", (12,), "for features data use mlp"),
    ("cnn1d", (1, 5), "at least 8 long"),
    ("cnn", (1, 6, 6), "at least 8×8"),
    ("vgg", (1, 10, 10), "FILE.py:NAME"),
])
def test_build_model_refuses_the_wrong_kind_of_input(name, shape, message):
    with pytest.raises(ValueError, match=message):
        M.build_model(name, shape[0], 3, shape[1:])


# ---------------------------------------------------------------------------------------------------- user models
USER_FILE = '''
import torch
from torch import nn

from helper_layers import Scale   # a neighbour module in the same folder


def build(in_channels, num_classes):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), Scale(), nn.Flatten(),
                         nn.LazyLinear(num_classes))


def build_all(**kwargs):
    return MlpNet(**kwargs)


def build_with_shape(input_shape, num_classes, hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


class MlpNet(nn.Module):
    def __init__(self, in_channels, num_classes, input_shape, hidden=6):
        super().__init__()
        self.seen = dict(in_channels=in_channels, num_classes=num_classes, input_shape=input_shape, hidden=hidden)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), hidden))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def needs_depth(in_channels, num_classes, depth):
    return nn.Linear(in_channels, num_classes)


def not_a_model(num_classes):
    return "a string"


ready = nn.Linear(3, 3)
CONSTANT = 3
'''


@pytest.fixture()
def user_file(tmp_path):
    (tmp_path / "helper_layers.py").write_text(textwrap.dedent('''
        from torch import nn

        class Scale(nn.Module):
            def forward(self, x):
                return 2 * x
    '''))
    path = tmp_path / "my_net.py"
    path.write_text(USER_FILE)
    return str(path)


def build(spec, shape=(1, 8, 8), classes=3, **options):
    return load_user_model(spec, in_channels=shape[0], num_classes=classes, input_shape=shape, **options)


def test_user_function_receives_what_it_declares(user_file):
    model = build(f"{user_file}:build")
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    model = build(f"{user_file}:build_with_shape", shape=(2, 40), hidden=5)
    assert model(torch.randn(2, 2, 40)).shape == (2, 3) and model[1].out_features == 5


def test_user_class_and_kwargs_receive_everything(user_file):
    model = build(f"{user_file}:MlpNet", shape=(7,), classes=4, hidden=9)
    assert model.seen == {"in_channels": 7, "num_classes": 4, "input_shape": (7,), "hidden": 9}
    assert build(f"{user_file}:build_all", shape=(7,)).seen["input_shape"] == (7,)
    assert build(f"{user_file}:MlpNet") is not build(f"{user_file}:MlpNet")  # fresh weights every time


def test_build_model_accepts_a_user_spec(user_file):
    model = M.build_model(f"{user_file}:MlpNet", 2, 3, (40,), hidden=4)
    assert model(torch.randn(2, 2, 40)).shape == (2, 3)
    with pytest.raises(ValueError, match="variants"):
        M.build_model(f"{user_file}:MlpNet", 2, 3, (40,), variant="maxout")


@pytest.mark.parametrize("tail, error, message", [
    (":nope", ValueError, r"has no 'nope'; functions and nn.Module classes defined there: \['MlpNet', 'build'"),
    (":CONSTANT", TypeError, "is an object of type int, not a function or an nn.Module subclass"),
    (":ready", TypeError, "nn.Module instance"),
    (":not_a_model", TypeError, "returned a str, not an nn.Module"),
    (":needs_depth", ValueError, r"needs \['depth'\], which dropkit cannot give"),
    (":build:x", ValueError, "FILE.py:NAME"),
    (":1bad", ValueError, "FILE.py:NAME"),
])
def test_bad_user_specs_are_refused_clearly(user_file, tail, error, message):
    with pytest.raises(error, match=message):
        build(user_file + tail)


def test_user_spec_errors_before_loading(tmp_path, user_file):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build(f"{tmp_path / 'missing.py'}:build")
    with pytest.raises(ValueError, match="FILE.py:NAME"):
        parse_user_model_spec("my_net.txt:build")
    with pytest.raises(ValueError, match=r"does not take the model parameter\(s\) \['width'\]"):
        build(f"{user_file}:build", width=3)
    assert is_user_model_spec("a/b.py:f") and not is_user_model_spec("cnn")


def test_an_edited_file_is_loaded_again(tmp_path):
    path = tmp_path / "net.py"
    path.write_text("from torch import nn\ndef build(num_classes):\n    return nn.Linear(4, num_classes)\n")
    assert build(f"{path}:build").in_features == 4
    path.write_text("from torch import nn\ndef build(num_classes):\n    return nn.Linear(5, num_classes)\n"
                    "# longer file\n")
    assert build(f"{path}:build").in_features == 5
    assert isinstance(build(f"{path}:build"), nn.Linear)
