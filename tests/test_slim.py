"""dropkit.slim: physically smaller models with the same eval outputs; width sweep and width choice."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dropkit.methods.structural_dropout import StructuralDropout
from dropkit.slim import Rescale, count_parameters, select_width, set_width, slim, width_sweep


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), StructuralDropout(),
        nn.Linear(32, 32), nn.ReLU(), nn.Dropout(0.2), StructuralDropout(), nn.Linear(32, 5),
    )


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.sd1 = StructuralDropout()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.sd2 = StructuralDropout()
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sd1(F.relu(self.bn1(self.conv1(x))))
        x = F.max_pool2d(x, 2)
        x = self.sd2(F.max_pool2d(torch.relu(self.conv2(x)), 2))
        return self.fc(torch.flatten(x, 1))


def _warm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    torch.manual_seed(1)
    model.train()
    for _ in range(3):
        model(x)  # BatchNorm gets running statistics; the layers learn H
    return model.eval()


def _reference(model: nn.Module, x: torch.Tensor, width) -> torch.Tensor:
    previous = set_width(model, width)
    try:
        return model(x)
    finally:
        for m in model.modules():
            if isinstance(m, StructuralDropout):
                m.eval_size = previous[next(n for n, mm in model.named_modules() if mm is m)]


@pytest.mark.parametrize("width", [1, 7, 20, 32])
def test_mlp_slim_matches_eval_at_width_with_fewer_parameters(width: int) -> None:
    x = torch.randn(6, 4, 4)
    model = _warm(_mlp(), x)
    small = slim(model, width)
    assert torch.allclose(small(x), _reference(model, x, width), atol=1e-5)
    linears = [m for m in small.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, width), (width, width), (width, 5)]
    expected = (16 * width + width) + 2 * width + (width * width + width) + (width * 5 + 5)
    assert count_parameters(small) == expected
    if width < 32:
        assert count_parameters(small) < count_parameters(model)
    assert not any(isinstance(m, StructuralDropout) for m in small.modules())


def test_cnn_slim_through_batchnorm_pooling_and_flatten() -> None:
    x = torch.randn(5, 1, 16, 16)
    model = _warm(SmallCNN(), x)
    for width in (1, 3, 8):
        small = slim(model, width)
        assert torch.allclose(small(x), _reference(model, x, width), atol=1e-5)
        assert small.conv1.out_channels == width and small.bn1.num_features == width
        assert small.conv2.in_channels == width and small.fc.in_features == width * 16
    assert count_parameters(slim(model, 3)) < count_parameters(model)


def test_fractional_width() -> None:
    x = torch.randn(4, 1, 16, 16)
    model = _warm(SmallCNN(), x)
    small = slim(model, 0.5)
    assert small.conv1.out_channels == 4
    assert torch.allclose(small(x), _reference(model, x, 4), atol=1e-5)


def test_scale_kept_as_rescale_when_it_cannot_be_folded() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 12), StructuralDropout(), nn.GELU(), nn.Linear(12, 3))
    x = torch.randn(4, 6)
    _warm(model, x)
    small = slim(model, 5)
    assert isinstance(small[1], Rescale) and small[1].scale == pytest.approx(12 / 5)
    assert torch.allclose(small(x), _reference(model, x, 5), atol=1e-5)


def test_batchnorm_or_sigmoid_after_the_structural_layer_is_refused() -> None:
    """BatchNorm's shift (or sigmoid(0) = 0.5) turns the zeroed features into constants the consumer reads."""
    for after in (nn.BatchNorm1d(12), nn.Sigmoid()):
        model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), StructuralDropout(), after, nn.Linear(12, 3))
        with pytest.raises(ValueError, match="non-zero"):
            slim(model, 4)


def test_original_model_is_untouched() -> None:
    x = torch.randn(6, 4, 4)
    model = _warm(_mlp(), x)
    before = {k: v.clone() if isinstance(v, torch.Tensor) else dict(v) for k, v in model.state_dict().items()}
    out = model(x)
    slim(model, 3)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) if isinstance(v, torch.Tensor) else v == before[k], k
    assert torch.equal(model(x), out)


@pytest.mark.parametrize("width", [0, 33, -1, 1.5, 0.0])
def test_widths_outside_one_to_h_are_refused(width) -> None:
    model = _warm(_mlp(), torch.randn(4, 4, 4))
    with pytest.raises(ValueError, match="width"):
        slim(model, width)


def test_bad_width_types() -> None:
    model = _warm(_mlp(), torch.randn(4, 4, 4))
    with pytest.raises(TypeError, match="width"):
        slim(model, "8")
    with pytest.raises(TypeError, match="width"):
        slim(model, True)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.sd, self.b = nn.Linear(8, 8), StructuralDropout(), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(self.sd(h)) + h


class Dynamic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.sd, self.b = nn.Linear(4, 4), StructuralDropout(), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: not traceable
            x = -x
        return self.b(self.sd(self.a(x)))


@pytest.mark.parametrize("model, message", [
    (lambda: Residual(), "more than once"),
    (lambda: nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), StructuralDropout(), nn.Conv2d(8, 2, 1)), "producer"),
    (lambda: nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), StructuralDropout(), nn.Linear(8, 2)), "LayerNorm"),
    (lambda: nn.Sequential(nn.Linear(4, 8), StructuralDropout(), nn.Softmax(-1), nn.Linear(8, 2)), "Softmax"),
    (lambda: nn.Sequential(nn.Linear(4, 8), StructuralDropout()), "nothing consumes"),
    (lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU()), "no structural_dropout"),
    (lambda: Dynamic(), "trace"),
])
def test_unsliceable_structures_are_refused(model, message) -> None:
    with pytest.raises(ValueError, match=message):
        slim(model(), 2)


def test_a_layer_called_twice_is_refused() -> None:
    sd = StructuralDropout()
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, sd, nn.Linear(4, 4), sd, nn.Linear(4, 2))
    with pytest.raises(ValueError, match="called 2 times"):
        slim(model, 2)


def test_select_width_on_a_synthetic_curve() -> None:
    widths = [1, 2, 4, 8, 16, 32]
    acc = [0.30, 0.55, 0.80, 0.895, 0.91, 0.905]
    assert select_width(widths, acc, 0.02) == 8
    assert select_width(widths, acc, 0.0) == 16
    assert select_width(widths, acc, 1.0) == 1
    with pytest.raises(ValueError, match="tolerance"):
        select_width(widths, acc, -0.1)
    with pytest.raises(ValueError, match="equal length"):
        select_width(widths, acc[:-1])


def test_width_sweep_with_a_callable_and_restores_the_model() -> None:
    x = torch.randn(6, 4, 4)
    model = _warm(_mlp(), x)
    model.train()
    model[4].eval_size = 30
    seen = []

    def evaluate(m: nn.Module) -> float:
        assert not m.training
        width = next(l for l in m.modules() if isinstance(l, nn.Linear)).out_features
        seen.append(width)
        return min(width, 12) / 12  # saturates at width 12

    sweep = width_sweep(model, evaluate, widths=[2, 4, 8, 12, 16, 32], tolerance=0.1)
    assert seen == [2, 4, 8, 12, 16, 32]
    assert sweep.best_width == 12 and sweep.chosen_width == 12
    assert list(sweep.parameters) == sorted(sweep.parameters) and sweep.parameters[-1] == sweep.full_parameters
    assert model.training and model[4].eval_size == 30 and model[8].eval_size is None
    assert len(sweep.rows()) == 6 and sweep.as_dict()["chosen_width"] == 12


def test_width_sweep_on_data_agrees_with_masked_evaluation() -> None:
    x = torch.randn(40, 1, 16, 16)
    y = torch.randint(0, 10, (40,))
    model = _warm(SmallCNN(), x)
    sliced = width_sweep(model, (x, y), step=2, tolerance=0.05)
    masked = width_sweep(model, [(x[:20], y[:20]), (x[20:], y[20:])], step=2, tolerance=0.05, use_slim=False)
    assert sliced.widths == (2, 4, 6, 8) == masked.widths
    assert sliced.accuracies == masked.accuracies
    assert sliced.chosen_width == masked.chosen_width
    assert sliced.parameters[0] < sliced.parameters[-1]


def test_width_sweep_bad_input() -> None:
    model = _mlp()
    with pytest.raises(ValueError, match="unknown"):
        width_sweep(model, lambda m: 1.0)
    _warm(model, torch.randn(4, 4, 4))
    with pytest.raises(ValueError, match=r"\[1, 32\]"):
        width_sweep(model, lambda m: 1.0, widths=[0, 4])
    with pytest.raises(TypeError, match="evaluate"):
        width_sweep(model, 3.0)
    with pytest.raises(ValueError, match="structural_dropout"):
        width_sweep(nn.Linear(2, 2), lambda m: 1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_slim_keeps_the_dtype_of_batchnorm(dtype) -> None:
    x = torch.randn(5, 1, 16, 16, dtype=torch.float64)
    model = _warm(SmallCNN().double(), x).to(dtype)
    small = slim(model, 3)
    assert {p.dtype for p in small.parameters()} == {dtype}
    assert small.bn1.running_mean.dtype == dtype and small.bn1.num_batches_tracked.dtype == torch.long
    y = small(x.to(dtype))  # before: "expected all tensors to be of the same dtype" (BatchNorm left in float32)
    ref = _reference(model, x.to(dtype), 3)
    tol = 1e-6 if dtype == torch.float64 else 5e-2
    assert y.dtype == dtype and torch.allclose(y.double(), ref.double(), atol=tol, rtol=tol)
