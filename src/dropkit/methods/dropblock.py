"""DropBlock (Ghiasi, Lin & Le, NeurIPS 2018, arXiv:1810.12890): drop contiguous b×b (or b×b×b) regions.

Algorithm 1 of the paper, read as the official TF TPU code does:

1. γ = p / b² · HW / ((H − b + 1)(W − b + 1)) — the seed rate that drops ≈ p of the map, ignoring overlaps
   (so the realised fraction is slightly below p, as the paper notes).
2. Seeds ~ Bernoulli(γ) only where a whole block fits (the valid region), independently per sample and
   channel (the paper: per-channel masks "tend to work better"; ``share_channels=True`` gives the variant
   with one spatial mask per sample that current timm uses by default).
3. Each seed grows into a block; A ← A ⊙ keep · numel(keep)/sum(keep), the realised keep fraction of the whole
   batch's mask, summed in float32 (``scale_by_keep=False`` switches the rescaling off).

Block sizes larger than the map are clipped per axis (b' = min(b, S)), so b ≥ the map size drops whole
channels (the TF code's special case); even block sizes are exact (blocks start at their seed, no centring).
The ramp of p from 0 (the paper's "scheduled DropBlock") is done by ``dropkit.schedule.LinearRamp``.

The seeds are drawn by skip sampling (``dropkit.masks.sample_block_drop_mask``): the same Bernoulli field as the
textbook algorithm, at a cost proportional to the number of seeds rather than to the map size.

Memory kept for backward: the keep mask as bool (one byte per element) and the 0-d scale; with ``recompute=True``
only the generator state, the mask being rebuilt in backward from the same single draw (``dropkit.replay``).
"""

from __future__ import annotations

import torch

from dropkit.base import DropkitModule
from dropkit.masks import (
    apply_keep_mask,
    block_keep_bool_from_noise,
    block_mask_plan,
    block_seed_rate,
    keep_fraction_scale,
    sample_uniform,
)
from dropkit.registry import register
from dropkit.replay import apply_recomputed_mask
from dropkit.validation import (
    check_bool,
    check_choice,
    check_float_tensor,
    check_generator,
    check_int_tuple,
    check_ndim,
    check_probability,
)

__all__ = ["dropblock", "DropBlock"]

ALGORITHMS = ("auto", "sparse", "dense", "table")


def dropblock(
    x: torch.Tensor,
    p: float = 0.1,
    block_size: int | tuple[int, ...] = 7,
    *,
    training: bool = True,
    share_channels: bool = False,
    scale_by_keep: bool = True,
    generator: torch.Generator | None = None,
    algorithm: str = "auto",
    recompute: bool = False,
) -> torch.Tensor:
    """DropBlock for (N, C, H, W) or (N, C, D, H, W) inputs.

    Args:
        x: 4-D or 5-D floating tensor.
        p: target fraction of units to drop (1 − the paper's keep_prob).
        block_size: int or one int per spatial axis, ≥ 1; clipped to the map per axis.
        share_channels: one mask per sample shared by all channels instead of one per channel.
        scale_by_keep: rescale by the realised keep fraction of the whole mask.
        generator: optional generator for the seeds.
        algorithm: ``"auto"``, ``"sparse"`` (skip sampling), ``"dense"`` (a draw per valid position) or
            ``"table"`` (the dense draws, each map's mask looked up among all 2^V seed patterns; maps with at most
            16 valid positions); the same distribution, different cost.
        recompute: keep the generator state instead of the bool mask and rebuild the mask in backward (same
            output and gradient, bit for bit; no activation-sized memory kept, the mask built twice).
    """
    check_float_tensor(x, "dropblock")
    check_ndim(x, "dropblock", (4, 5), "(N, C, H, W) or (N, C, D, H, W)")
    p = check_probability(p, "p", "dropblock")
    spatial = tuple(x.shape[2:])
    block = check_int_tuple(block_size, "block_size", "dropblock", len(spatial))
    check_bool(share_channels, "share_channels", "dropblock")
    check_bool(scale_by_keep, "scale_by_keep", "dropblock")
    check_choice(algorithm, "algorithm", "dropblock", ALGORITHMS)
    check_bool(recompute, "recompute", "dropblock")
    generator = check_generator(generator, x, "dropblock")
    if not training or p == 0.0 or x.numel() == 0:
        return x
    block = tuple(min(b, s) for b, s in zip(block, spatial))
    gamma = block_seed_rate(p, spatial, block)
    lead = (x.shape[0], 1 if share_channels else x.shape[1])
    plan = block_mask_plan(x, lead, block, gamma, algorithm)
    if plan[0] == "none":  # no seed expected anywhere: nothing drops
        return x
    dtype = x.dtype

    def build(noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        keep = block_keep_bool_from_noise(noise, spatial, lead, block, gamma, plan)  # not x: backward must not keep it
        return keep, (keep_fraction_scale(keep, dtype) if scale_by_keep else None)

    if recompute:
        return apply_recomputed_mask(x, plan[2], build, generator=generator)
    keep, scale = build(sample_uniform(plan[2], x, generator))
    return apply_keep_mask(x, keep, scale)


@register(
    "dropblock",
    family="random",
    kind="activation",
    paper="Ghiasi, Lin & Le, NeurIPS 2018, arXiv:1810.12890",
    summary="contiguous b×b blocks dropped (seeds only where a block fits), rescaled by the realised keep fraction",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ)+time", "sampling": "random",
              "unit": "block", "phase": "train", "generality": "generic"},
    schedule={"type": "linear_ramp", "param": "p", "start": 0.0},
)
class DropBlock(DropkitModule):
    """Module form of :func:`dropblock`.

    Args:
        p: drop fraction (default 0.1: the paper's best ImageNet keep_prob 0.9).
        block_size: default 7 (the paper's ResNet-50 value); clipped to small maps.
        share_channels, scale_by_keep, generator, algorithm, recompute: as in :func:`dropblock`.
    """

    repr_fields = ("block_size", "share_channels", "scale_by_keep", "recompute")

    def __init__(self, p: float = 0.1, block_size: int | tuple[int, ...] = 7, share_channels: bool = False,
                 scale_by_keep: bool = True, generator: torch.Generator | None = None, algorithm: str = "auto",
                 recompute: bool = False) -> None:
        super().__init__(p, generator=generator)
        if isinstance(block_size, (tuple, list)):
            check_int_tuple(block_size, "block_size", self.method_name, len(block_size))
            block_size = tuple(block_size)
        else:
            check_int_tuple(block_size, "block_size", self.method_name, 1)
        self.block_size = block_size
        self.share_channels = check_bool(share_channels, "share_channels", self.method_name)
        self.scale_by_keep = check_bool(scale_by_keep, "scale_by_keep", self.method_name)
        self.algorithm = check_choice(algorithm, "algorithm", self.method_name, ALGORITHMS)
        self.recompute = check_bool(recompute, "recompute", self.method_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return dropblock(x, self.p, self.block_size, training=True, share_channels=self.share_channels,
                         scale_by_keep=self.scale_by_keep, generator=self.generator, algorithm=self.algorithm,
                         recompute=self.recompute)
