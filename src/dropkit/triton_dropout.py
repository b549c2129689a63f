"""Opt-in fused dropout kernel in Triton (``dropout(..., backend="triton")``): speed not yet measured.

One kernel reads x, draws each element's uniform number in-kernel with Philox (``tl.rand(seed, offset)``), and
writes x · keep / (1 − p): one pass, no mask in memory. Backward runs the same kernel on the output gradient with
the same seed, so the mask is regenerated rather than stored: autograd keeps only the 0-d int64 seed. The seed is
drawn from torch's generator as a tensor (no ``.item()``), and the op is a ``torch.library`` custom op with its
autograd formula registered, so ``torch.compile(fullgraph=True)`` and CUDA graphs see one opaque op.

It is never the default: nobody has timed it on a GPU yet. The random stream differs from the ``"torch"``
backend's (Philox in-kernel rather than ``torch.rand``), so the same seed gives a different, equally distributed
mask. Correctness is tested on the CPU in Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import importlib.util

import torch

__all__ = ["triton_available", "triton_dropout"]

_BLOCK = 1024


def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


_kernel = None


def _get_kernel():  # noqa: ANN202 — built lazily: importing triton is slow and optional
    global _kernel
    if _kernel is None:
        import triton
        import triton.language as tl

        @triton.jit
        def dropout_kernel(x_ptr, out_ptr, seed_ptr, n, p, scale, BLOCK: tl.constexpr):  # noqa: N803
            offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            inside = offsets < n
            seed = tl.load(seed_ptr)
            x = tl.load(x_ptr + offsets, mask=inside)
            keep = tl.rand(seed, offsets) >= p
            # x · (keep · scale) rather than where(keep, x · scale, 0): a dropped NaN stays NaN, as in nn.Dropout.
            factor = tl.where(keep, scale, 0.0)
            tl.store(out_ptr + offsets, (x.to(tl.float32) * factor).to(x.dtype), mask=inside)

        _kernel = dropout_kernel
    return _kernel


@torch.library.custom_op("dropkit::triton_dropout_apply", mutates_args=())
def _triton_dropout_apply(x: torch.Tensor, seed: torch.Tensor, p: float) -> torch.Tensor:
    import triton

    x = x.contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    if n:
        _get_kernel()[(triton.cdiv(n, _BLOCK),)](x, out, seed, n, p, 1.0 / (1.0 - p), BLOCK=_BLOCK)
    return out


@_triton_dropout_apply.register_fake
def _(x: torch.Tensor, seed: torch.Tensor, p: float) -> torch.Tensor:
    return torch.empty_like(x.contiguous())


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    _, seed, p = inputs
    ctx.save_for_backward(seed)
    ctx.p = p


def _backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN202
    (seed,) = ctx.saved_tensors
    # The map is x ↦ x · keep · scale with keep fixed by the seed: its gradient is the same map applied to grad.
    return _triton_dropout_apply(grad, seed, ctx.p), None, None


_triton_dropout_apply.register_autograd(_backward, setup_context=_setup_context)


def triton_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout with the fused Triton kernel; ``0 < p < 1`` (the caller handles 0 and 1).

    Raises:
        ValueError: triton is not installed.
    """
    if not triton_available():
        raise ValueError("dropout: backend='triton' needs the triton package (pip install triton); "
                         "use backend='torch'")
    kwargs = {} if generator is None else {"generator": generator}
    seed = torch.randint(0, 2**31 - 1, (1,), device=x.device, dtype=torch.int64, **kwargs)
    return _triton_dropout_apply(x, seed, p)  # contiguous output, whatever x's memory format
