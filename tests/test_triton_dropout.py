"""The opt-in Triton dropout kernel, run on the CPU in Triton's interpreter (marker ``triton_interpret``).

Skipped with a reason when triton is not installed. TRITON_INTERPRET must be set before triton is imported.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")

import dropkit  # noqa: E402
from dropkit.triton_dropout import triton_available  # noqa: E402

pytestmark = [
    pytest.mark.triton_interpret,
    pytest.mark.skipif(not triton_available(), reason="triton is not installed (pip install triton)"),
]


def _x(shape=(4, 8, 16, 16), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + 3.0  # no zeros: y/x is the mask


def test_drop_fraction_and_exact_scaling():
    x = _x()
    y = dropkit.dropout(x, 0.3, backend="triton", generator=torch.Generator().manual_seed(1))
    dropped = y == 0
    frac = dropped.float().mean().item()
    n = x.numel()
    assert abs(frac - 0.3) < 5 * (0.3 * 0.7 / n) ** 0.5
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.7, rtol=1e-6, atol=0)


def test_gradient_is_the_same_mask_regenerated_from_the_seed():
    x = _x().requires_grad_()
    y = dropkit.dropout(x, 0.4, backend="triton", generator=torch.Generator().manual_seed(2))
    grad = torch.randn_like(x)
    y.backward(grad)
    scale = (y / x).detach()  # keep / (1 − p), exactly the mask the forward used
    torch.testing.assert_close(x.grad, grad * scale, rtol=1e-6, atol=0)


def test_same_generator_seed_same_mask_and_nan_propagates():
    x = _x()
    x[0, 0, 0, :] = float("nan")
    ys = [dropkit.dropout(x, 0.5, backend="triton", generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(ys[0].nan_to_num(), ys[1].nan_to_num())
    assert torch.isnan(ys[0][0, 0, 0]).all()  # 0 · NaN is NaN, dropped or not, as in nn.Dropout


def test_module_and_bad_backend():
    layer = dropkit.create("dropout", p=0.2, backend="triton").train()
    assert layer(_x()).shape == (4, 8, 16, 16)
    with pytest.raises(ValueError, match="backend"):
        dropkit.create("dropout", backend="cuda")


def test_compiles_fullgraph_as_one_custom_op():
    torch._dynamo.reset()
    layer = dropkit.create("dropout", p=0.3, backend="triton").train()
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    for batch in (2, 3):
        x = _x((batch, 4, 8, 8)).requires_grad_()
        y = compiled(x)
        y.sum().backward()
        torch.testing.assert_close(x.grad, (y / x).detach(), rtol=1e-6, atol=0)
