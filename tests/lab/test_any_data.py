"""Runs end to end on any data and any model: 1-D signals with cnn1d and the MLP, flat features, an ImageFolder,
the user's own model (points found automatically, or given as NAME / NAME:in), all on tiny generated data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dropkit.lab.train import RunConfig, RunFailed, run

torch.set_num_threads(1)


def _bumps(n, rng, length=40, channels=1):
    """Three classes: a bump at one of three places along the signal, on noise."""
    y = np.arange(n) % 3
    x = rng.normal(0, 0.3, (n, channels, length)).astype(np.float32)
    for k in range(3):
        x[y == k, :, 5 + 12 * k: 10 + 12 * k] += 2.0
    return x, y


@pytest.fixture(scope="module")
def signals(tmp_path_factory):
    rng = np.random.default_rng(0)
    (x_tr, y_tr), (x_te, y_te) = _bumps(90, rng), _bumps(30, rng)
    path = tmp_path_factory.mktemp("sig") / "signals.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return str(path)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (120, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    path = tmp_path_factory.mktemp("feat") / "features.npz"
    np.savez(path, x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
    return str(path)


USER_NET = '''
import torch.nn.functional as F
from torch import nn


def lenet(in_channels, num_classes):
    return nn.Sequential(nn.Conv1d(in_channels, 4, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(4, 8, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(16), nn.ReLU(),
                         nn.Linear(16, num_classes))


class Functional(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.conv = nn.Conv1d(input_shape[0], 4, 3, padding=1)
        self.fc = nn.Linear(4 * input_shape[1], num_classes)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).flatten(1))
'''


@pytest.fixture(scope="module")
def user_net(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "my_net.py"
    path.write_text(USER_NET)
    return str(path)


def tiny(data, **kw):
    values = dict(data=data, train_size=60, val_size=12, epochs=2, batch_size=16, lr=0.05)
    values.update(kw)
    return RunConfig.from_dict(values)


# ------------------------------------------------------------------------------------------------ 1-D signals
def test_cli_runs_cnn1d_and_mlp_on_signals(signals, tmp_path, capsys):
    from dropkit.cli import main

    db = str(tmp_path / "sig.db")
    common = ["--data", signals, "--train-size", "60", "--val-size", "12", "--epochs", "3", "--db", db, "-q"]
    assert main(["run", "--model", "cnn1d", "--method", "spatial_dropout", *common]) == 0
    assert "test_acc" in capsys.readouterr().out
    assert main(["run", "--model", "mlp", "--method", "dropout", *common]) == 0
    assert main(["run", "--model", "cnn1d", "--method", "dropblock", *common]) == 1  # 2-D blocks on 1-D maps
    assert "4-D" in capsys.readouterr().err
    assert main(["run", "--model", "cnn", "--method", "none", *common]) == 2  # bad input: a message, no trace
    assert "use cnn1d or mlp" in capsys.readouterr().err


def test_cnn1d_learns_signals_and_places_methods(signals):
    result = run(tiny(signals, model="cnn1d", method="spatial_dropout", epochs=6, model_params={"width": 8}))
    assert result["metrics"]["test_acc"] > 0.6  # three bump positions: far above chance (1/3)
    assert result["placement"]["points"] == ["features.pool2", "features.relu3"]
    assert [len(s) for s in result["placement"]["shapes"].values()] == [2, 2]  # (C, L) maps


def test_mlp_on_flat_features(features):
    result = run(tiny(features, model="mlp", method="dropout", model_params={"hidden": [16]}, epochs=4))
    assert result["placement"]["shapes"] == {"body.relu1": [16]}
    assert result["metrics"]["n_train"] == 60


def test_image_folder_runs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(("a", "b")):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(12):
            img = rng.integers(0, 50, (10, 10), dtype=np.uint8)
            img[:, 5 * k: 5 * k + 5] += 180
            Image.fromarray(img).save(tmp_path / "imgs" / name / f"{i}.png")
    result = run(tiny(str(tmp_path / "imgs"), model="cnn", train_size=14, val_size=4, epochs=1,
                      model_params={"width": 4}))
    assert result["metrics"]["n_test"] == 5 and result["task"] == "classification"  # round(0.2 · 24) test images


# ------------------------------------------------------------------------------------------- the user's model
def test_user_model_gets_points_found_automatically(signals, user_net):
    result = run(tiny(signals, model=f"{user_net}:lenet", method="spatial_dropout"))
    assert result["placement"]["points"] == ["1", "4"] and result["placement"]["group"] == "conv"
    result = run(tiny(signals, model=f"{user_net}:lenet", method="dropout"))
    assert result["placement"]["points"] == ["8:in"] and result["placement"]["shapes"] == {"8:in": [16]}
    result = run(tiny(signals, model=f"{user_net}:Functional", method="dropout"))
    assert result["placement"]["points"] == ["fc:in"]
    assert np.isfinite(result["metrics"]["test_loss"])


def test_user_model_with_explicit_points(signals, user_net):
    result = run(tiny(signals, model=f"{user_net}:lenet", method="dropout", placement=["2:in", "7"]))
    assert result["placement"]["points"] == ["2:in", "7"] and result["placement"]["group"] is None
    assert result["placement"]["shapes"] == {"2:in": [4, 40], "7": [16]}
    with pytest.raises(ValueError, match="did you mean"):
        run(tiny(signals, model=f"{user_net}:lenet", method="dropout", placement=["44"]))
    with pytest.raises(ValueError, match="NAME:in"):
        tiny(signals, model=f"{user_net}:lenet", method="dropout", placement=["4:inside"])
    result = run(tiny(signals, model=f"{user_net}:lenet", method="dropout", placement="fc"))
    assert result["placement"]["points"] == ["8:in"]


def test_method_that_does_not_fit_a_user_model_says_why(signals, user_net):
    with pytest.raises(RunFailed, match=r"dropblock does not fit .*my_net.py:lenet.*4-D"):
        run(tiny(signals, model=f"{user_net}:lenet", method="dropblock"))
    with pytest.raises(RunFailed, match="residual branches"):
        run(tiny(signals, model=f"{user_net}:lenet", method="drop_path"))


def test_user_model_baseline_and_methods_start_from_the_same_weights(signals, user_net, monkeypatch):
    from dropkit.lab import train as T

    seen = []
    real = T._make_optimizer

    def spy(config, model):
        seen.append(torch.cat([p.detach().flatten() for n, p in model.named_parameters() if "dropkit_" not in n]))
        return real(config, model)

    monkeypatch.setattr(T, "_make_optimizer", spy)
    for method in ("none", "dropout", "spatial_dropout"):
        run(tiny(signals, model=f"{user_net}:lenet", method=method, epochs=1, seed=4))
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[0], seen[2])  # LazyLinear included


def test_user_model_config_errors(signals, tmp_path, user_net):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tiny(signals, model=f"{tmp_path / 'gone.py'}:build")
    with pytest.raises(ValueError, match="FILE.py:NAME"):
        tiny(signals, model="vgg16")
    with pytest.raises(ValueError, match="probe_point"):
        run(tiny(signals, model=f"{user_net}:lenet", probe={"fractions": [0.0, 0.5]}))


def test_editing_the_user_model_file_makes_a_new_run(signals, tmp_path):
    path = tmp_path / "net.py"
    path.write_text("from torch import nn\ndef build(in_channels, num_classes):\n"
                    "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n")
    before = tiny(signals, model=f"{path}:build").config_hash()
    assert tiny(signals, model=f"{path}:build").config_hash() == before  # same file: same run (resumable)
    path.write_text(path.read_text().replace("nn.LazyLinear(num_classes)", "nn.LazyLinear(8), nn.ReLU(), "
                                                                         "nn.Linear(8, num_classes)"))
    assert tiny(signals, model=f"{path}:build").config_hash() != before  # another network: not "already done"
    assert tiny(signals, model="mlp").to_dict()["model"] == "mlp"
