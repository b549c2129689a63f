"""Property checks shared by the method tests (each asserts; none returns a value to be ignored)."""

from __future__ import annotations

import math

import torch


def assert_eval_identity(module: torch.nn.Module, x: torch.Tensor) -> None:
    """In eval mode an activation method returns its input unchanged."""
    module.eval()
    y = module(x)
    assert y is x or torch.equal(y, x), "eval mode must be the identity"
    module.train()


def assert_compiles_fullgraph(module: torch.nn.Module, x: torch.Tensor, batch_sizes=(8, 5, 3)) -> None:
    """``forward`` traces with ``fullgraph=True`` (no .item(), NumPy or Python RNG) and keeps the shape, also
    when the batch size changes between calls (a compiled loop's smaller last batch: dynamo then retraces with a
    dynamic batch dimension)."""
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    for n in batch_sizes:
        xn = x[:1].expand(n, *x.shape[1:]).clone() + torch.rand(n, *x.shape[1:], generator=torch.Generator().manual_seed(n))
        y = compiled(xn)
        assert y.shape == xn.shape
        assert torch.isfinite(y).all()


def assert_keeps_dtype_and_format(module: torch.nn.Module, x: torch.Tensor) -> None:
    """bf16 in → bf16 out without NaN; channels_last in → channels_last out."""
    module.train()
    y = module(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert torch.isfinite(y.float()).all()
    if x.ndim == 4:
        xc = x.contiguous(memory_format=torch.channels_last)
        yc = module(xc)
        assert yc.is_contiguous(memory_format=torch.channels_last), "channels_last must be preserved"


def binomial_tolerance(n: int, p: float, sigmas: float = 5.0) -> float:
    """Half-width of a ±``sigmas`` band for the mean of ``n`` Bernoulli(p) draws."""
    return sigmas * math.sqrt(max(p * (1 - p), 1e-12) / n)


def seeded(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def positive_input(shape, seed: int = 0, offset: float = 0.1) -> torch.Tensor:
    """U[0, 1) + ``offset``: strictly positive activations (every channel has a GAP score, no exact zeros)."""
    return torch.rand(shape, generator=seeded(seed)) + offset


def assert_compiles_fullgraph_block(module: torch.nn.Module, x: torch.Tensor) -> None:
    """A whole layer (its output shape may differ from the input's) traces with ``fullgraph=True`` and gives a
    finite output."""
    torch._dynamo.reset()
    y = torch.compile(module, fullgraph=True, backend="eager")(x)
    assert torch.isfinite(y).all()
