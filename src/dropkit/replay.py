"""Masks recomputed in backward from a saved generator state instead of being kept for it.

A stored mask costs activation memory from the forward to the backward: one byte per element for a bool mask,
four for a float32 one (Gaussian dropout's real-valued noise cannot be stored exactly in less). When the mask is a
deterministic function of one random draw, the generator state before that draw (5 KB for the CPU's Mersenne
Twister, 16 bytes for CUDA's Philox seed and offset) is enough: backward replays the draw with a private generator
set to that state and rebuilds the identical mask, so nothing of activation size is kept.

The draw and its replay are two custom ops (``torch.library``), because dynamo cannot trace
``Generator.get_state``/``set_state``: as opaque ops they keep ``torch.compile(fullgraph=True)`` working, and
because the forward draw is the same eager ``torch.rand``/``torch.randn`` call the replay makes, an inductor graph
cannot swap in its own random kernels and desynchronise forward and backward. Under ``torch.compile`` only the
default generator is supported (dynamo cannot pass a ``torch.Generator`` to any op, stored-mask path included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from dropkit.masks import apply_keep_mask

__all__ = ["draw_with_state", "replay_draw", "apply_recomputed_mask", "MaskBuilder"]

# A mask builder turns the float32 noise of one draw into (mask, scale): the output is x * mask (* scale).
MaskBuilder = Callable[[torch.Tensor], tuple[torch.Tensor, float | torch.Tensor | None]]


def _default_generator(device: torch.device) -> torch.Generator:
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    raise ValueError(f"recompute=True: no default generator known for device type {device.type!r}; pass a generator")


def _draw(shape: Sequence[int], device: torch.device, normal: bool, generator: torch.Generator) -> torch.Tensor:
    sampler = torch.randn if normal else torch.rand
    return sampler(tuple(shape), generator=generator, device=device, dtype=torch.float32)


# Each call advances the generator and must draw anew, but a traced graph sees a pure function of its arguments:
# AOT autograd's common-subexpression elimination would merge two draws with equal arguments (two layers on one
# input) into one mask. ``nonce`` is a fresh empty tensor per call, which that pass never merges, so no two calls
# have equal arguments. (The seeded-random tag says the same to passes that read tags.)
@torch.library.custom_op("dropkit::draw_with_state", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))
def _draw_with_state_op(
    like: torch.Tensor, nonce: torch.Tensor, shape: list[int], normal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = _default_generator(like.device)
    state = generator.get_state()
    return _draw(shape, like.device, normal, generator), state


@_draw_with_state_op.register_fake
def _(like: torch.Tensor, nonce: torch.Tensor, shape: list[int], normal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    state_bytes = _default_generator(like.device).get_state().numel()  # 5056 on the CPU, 16 on CUDA
    return (torch.empty(shape, dtype=torch.float32, device=like.device),
            torch.empty(state_bytes, dtype=torch.uint8, device="cpu"))


@torch.library.custom_op("dropkit::replay_draw", mutates_args=())
def _replay_draw_op(state: torch.Tensor, like: torch.Tensor, shape: list[int], normal: bool) -> torch.Tensor:
    generator = torch.Generator(device=like.device)
    generator.set_state(state)
    return _draw(shape, like.device, normal, generator)


@_replay_draw_op.register_fake
def _(state: torch.Tensor, like: torch.Tensor, shape: list[int], normal: bool) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32, device=like.device)


def draw_with_state(
    like: torch.Tensor, shape: Sequence[int], normal: bool = False, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One float32 draw (U[0, 1), or N(0, 1) when ``normal``) on ``like``'s device, and the generator state just
    before it (a CPU uint8 tensor). The draw is the same as ``torch.rand``/``torch.randn`` with ``generator``."""
    if generator is None:
        nonce = torch.empty(0, device=like.device)
        return _draw_with_state_op(like.detach(), nonce, list(shape), normal)  # `like` gives the device only
    state = generator.get_state()
    return _draw(shape, like.device, normal, generator), state


def replay_draw(state: torch.Tensor, like: torch.Tensor, shape: Sequence[int], normal: bool = False) -> torch.Tensor:
    """The draw :func:`draw_with_state` made from ``state``, bit for bit; no generator is advanced."""
    return _replay_draw_op(state, like.detach(), list(shape), normal)


class _RecomputedMask(torch.autograd.Function):
    """y = x · mask(noise) (· scale); saves the generator state, not the mask, and rebuilds it in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, noise: torch.Tensor, state: torch.Tensor, build: MaskBuilder,  # noqa: ANN001
                normal: bool) -> torch.Tensor:
        mask, scale = build(noise)
        ctx.build, ctx.normal, ctx.noise_shape = build, normal, tuple(noise.shape)
        ctx.save_for_backward(state)
        return apply_keep_mask(x, mask, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        (state,) = ctx.saved_tensors
        mask, scale = ctx.build(replay_draw(state, grad, ctx.noise_shape, ctx.normal))
        return apply_keep_mask(grad, mask, scale), None, None, None, None


def apply_recomputed_mask(
    x: torch.Tensor, noise_shape: Sequence[int], build: MaskBuilder, *, normal: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``x * mask * scale`` where ``(mask, scale) = build(noise)`` and ``noise`` is one draw of ``noise_shape``;
    backward replays the draw from the saved generator state instead of keeping the mask.

    ``build`` must be deterministic and must not draw random numbers itself. The output and the gradient are
    bit-identical to applying the same mask with plain tensor ops (multiplying by 0/1 is exact in any order).
    """
    noise, state = draw_with_state(x, noise_shape, normal, generator)
    return _RecomputedMask.apply(x, noise, state, build, normal)
