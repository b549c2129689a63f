"""The dental recipe: the edges transform (erosion, blur, Canny) and the input-dropout MLP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dropkit.lab.config import RunConfig
from dropkit.lab.recipes.dental import EdgeMLP, Edges, canny, edge_mlp, edges, erode, gaussian_blur
from dropkit.methods.dropout import Dropout
from props import binomial_tolerance


def _square(n: int = 24, lo: int = 6, hi: int = 18) -> torch.Tensor:
    img = torch.zeros(1, 1, n, n)
    img[..., lo:hi, lo:hi] = 1.0
    return img


def test_output_is_binary_with_the_input_shape() -> None:
    torch.manual_seed(0)
    imgs = torch.rand(3, 1, 20, 24)
    for x in (imgs, imgs[:, 0]):
        out = edges(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_deterministic_and_batch_independent() -> None:
    torch.manual_seed(1)
    imgs = (torch.rand(4, 1, 16, 16) > 0.5).float() * 0.8
    a, b = edges(imgs), edges(imgs.clone())
    assert torch.equal(a, b)
    for i in range(4):
        assert torch.equal(edges(imgs[i:i + 1]), a[i:i + 1])


def test_constant_image_has_no_edges() -> None:
    for value in (0.0, 0.5, 1.0):
        assert edges(torch.full((2, 1, 12, 12), value)).sum() == 0


def test_square_edges_lie_on_its_outline_and_are_closed() -> None:
    out = canny(gaussian_blur(_square(), 1.0))[0, 0]
    ys, xs = out.nonzero(as_tuple=True)
    assert len(ys) > 0
    # every edge pixel is within one pixel of the square's boundary (between rows/cols 5..6 and 17..18)
    near_border = ((ys - 5.5).abs() <= 1.5) | ((ys - 17.5).abs() <= 1.5) | ((xs - 5.5).abs() <= 1.5) | \
                  ((xs - 17.5).abs() <= 1.5)
    assert near_border.all()
    # the outline crosses every row and column strictly inside the square
    assert torch.all(out[8:16].sum(1) >= 2) and torch.all(out[:, 8:16].sum(0) >= 2)
    # interior and far exterior are empty
    assert out[9:15, 9:15].sum() == 0 and out[:3].sum() == 0


def test_non_maximum_suppression_gives_thin_lines() -> None:
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    out = canny(gaussian_blur(step, 1.0))[0, 0]
    assert torch.all(out.sum(1) == 1)  # one edge pixel per row on a straight vertical step


def test_erosion_never_grows_the_foreground_and_removes_specks() -> None:
    torch.manual_seed(2)
    imgs = torch.rand(3, 1, 16, 16)
    eroded = erode(imgs)
    assert torch.all(eroded <= imgs)
    binary = (imgs > 0.7).float()
    assert erode(binary).sum() <= binary.sum()
    speck = torch.zeros(1, 1, 9, 9)
    speck[..., 4, 4] = 1.0
    assert erode(speck).sum() == 0
    ones = torch.ones(1, 1, 5, 5)
    assert torch.equal(erode(ones, 3, 2), ones)  # the border does not erode
    assert torch.equal(erode(imgs, 3, 0), imgs)
    square = _square()
    assert erode(square).sum() == 10 * 10


def test_gaussian_blur_keeps_constants_and_mass() -> None:
    const = torch.full((1, 1, 10, 10), 0.3)
    assert torch.allclose(gaussian_blur(const, 1.5), const)
    img = _square(32, 12, 20)
    assert torch.allclose(gaussian_blur(img, 1.0).sum(), img.sum(), rtol=1e-5)
    assert torch.equal(gaussian_blur(img, 0.0), img)


def test_thresholds_and_uint8_input() -> None:
    img = _square()
    weak = img * 0.2  # a faint square: Sobel magnitude ≤ 4·0.2
    assert edges(weak).sum() == 0
    assert edges(weak, low_threshold=0.05, high_threshold=0.1).sum() > 0
    assert torch.equal(edges((img * 255).to(torch.uint8)), edges(img))


def test_edges_callable() -> None:
    t = Edges(sigma=0.5)
    img = _square()
    assert torch.equal(t(img), edges(img, sigma=0.5))
    with pytest.raises(ValueError, match="unknown setting"):
        Edges(threshold=3)


@pytest.mark.parametrize("call, error, message", [
    (lambda: edges(torch.rand(16, 16)), ValueError, "shape"),
    (lambda: edges(torch.rand(2, 3, 8, 8)), ValueError, "shape"),
    (lambda: edges(torch.rand(1, 8, 8) * 2), ValueError, r"\[0, 1\]"),
    (lambda: edges(torch.ones(1, 8, 8, dtype=torch.int32)), TypeError, "dtype"),
    (lambda: edges([[0.0]]), TypeError, "Tensor"),
    (lambda: erode(torch.rand(1, 8, 8), 4), ValueError, "odd"),
    (lambda: canny(torch.rand(1, 8, 8), 0.5, 0.1), ValueError, "low_threshold"),
    (lambda: gaussian_blur(torch.rand(1, 8, 8), -1.0), ValueError, "sigma"),
])
def test_bad_inputs(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()


def test_edge_mlp_structure_with_and_without_input_dropout() -> None:
    model = EdgeMLP(1, 10, (28, 28), hidden=(64, 32))
    assert isinstance(model.input_dropout, Dropout) and model.input_dropout.p == 0.3
    order = [name for name, _ in model.named_children()]
    assert order == ["flatten", "input_dropout", "body", "head"]
    assert not any(isinstance(m, Dropout) for m in model.body.modules())
    plain = edge_mlp(hidden=(64, 32), input_dropout=False)
    assert not any(isinstance(m, (Dropout, nn.Dropout)) for m in plain.modules())
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in model.parameters())


def test_edge_mlp_drops_thirty_percent_of_the_input_in_training_only() -> None:
    torch.manual_seed(3)
    model = edge_mlp(hidden=(16,))
    seen = []
    model.input_dropout.register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.ones(64, 1, 28, 28)
    model.train()
    model(x)
    zero = float((seen[-1] == 0).float().mean())
    assert abs(zero - 0.3) < binomial_tolerance(seen[-1].numel(), 0.3)
    assert torch.allclose(seen[-1][seen[-1] != 0], torch.tensor(1 / 0.7))
    model.eval()
    assert torch.equal(model(x), model(x))
    assert torch.equal(seen[-1], x.flatten(1))


@pytest.mark.parametrize("kwargs, error", [
    ({"p_in": 1.5}, ValueError), ({"hidden": ()}, ValueError), ({"hidden": (0,)}, ValueError),
    ({"image_size": (28,)}, ValueError), ({"input_dropout": 1}, TypeError), ({"num_classes": 0}, ValueError),
])
def test_edge_mlp_bad_arguments(kwargs, error) -> None:
    with pytest.raises(error):
        edge_mlp(**kwargs)


def test_edges_preprocessing_and_the_edge_mlp_recipe(npz):
    from dropkit.lab.data import load_dataset
    from dropkit.lab.train import run

    data = load_dataset(npz, train_size=48, val_size=12, preprocess="edges")
    for split in (data.x_train, data.x_val, data.x_test):
        assert len(split.unique()) <= 2  # a binary edge map, normalised
    plain = load_dataset(npz, train_size=48, val_size=12)
    assert len(plain.x_train.unique()) > 100
    common = dict(data=npz, train_size=48, val_size=12, epochs=1, batch_size=16, model="edge_mlp",
                  preprocess="edges", model_params={"hidden": (16,)})
    with_dropout = run(RunConfig.from_dict({**common, "method": "none"}))
    without = run(RunConfig.from_dict({**common, "method": "none", "model_params": {"hidden": (16,), "p_in": 0.0}}))
    assert 0 <= with_dropout["metrics"]["test_acc"] <= 1 and 0 <= without["metrics"]["test_acc"] <= 1
    with pytest.raises(ValueError, match="preprocess must be one of"):
        RunConfig.from_dict({**common, "preprocess": "sobel"})
