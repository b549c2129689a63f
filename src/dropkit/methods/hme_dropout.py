"""Dropout in a hierarchical mixture of experts (İrsoy & Alpaydın, Neurocomputing 2021, arXiv:1812.10158).

The model is a soft decision tree of depth D: internal node m is a sigmoid gate g_m(x) = σ(w_mᵀx + b_m), the
probability of going *left*; leaf ℓ is an expert (a constant vector ρ_ℓ, or a linear model V_ℓᵀx + c_ℓ). The
response is y_m = g_m·y_left + (1 − g_m)·y_right at every node, y = y_root.

The paper drops "only the left subtree, asymmetrically": at node m, δ_m ~ Bernoulli(p) and

    y_m = (1 − δ_m)·g_m·y_left + (1 − (1 − δ_m)·g_m)·y_right,

so a dropped node sends all its gating mass to the right child (no 1/(1 − p) factor is needed: the leaf weights
still sum to 1), and training samples from a nested family of trees that ends in the rightmost leaf.

Computed in the leaf-probability form, vectorised over all 2^D leaves: with h_m = (1 − δ_m)·g_m,
π_ℓ = Π_{ancestors turning left} h_m · Π_{ancestors turning right} (1 − h_m), y = Σ_ℓ π_ℓ ρ_ℓ; one tensor op per
level, never a loop over samples, nodes or leaves.

Readings (ours, not the paper's; ``docs/methods/hme_dropout.md``): δ is drawn per sample and per
node (``per_sample=True``; ``False`` shares one δ per node across the batch, like the third-party SDTDropout).
At eval the layer uses the deterministic expectation, δ_m replaced by p (``eval_mode="expectation"``): π_ℓ is
multilinear in independent δ's, so this is *exact* for the root response; ``eval_mode="mc"`` averages
``mc_samples`` stochastic passes instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dropkit.base import DropkitModule
from dropkit.masks import sample_keep_mask
from dropkit.registry import register
from dropkit.validation import (
    check_bool, check_choice, check_float_tensor, check_generator, check_positive_int, check_probability,
)

__all__ = ["hme_dropout", "leaf_probabilities", "HMEDropout"]

_NAME = "hme_dropout"
MAX_DEPTH = 16


def leaf_probabilities(left: torch.Tensor, depth: int) -> torch.Tensor:
    """Path probabilities of the 2^D leaves, left to right.

    Args:
        left: (..., 2^D − 1) probability of going left at each internal node, in heap order (node i has children
            2i+1 on the left and 2i+2 on the right; level d holds nodes 2^d − 1 … 2^(d+1) − 2).
        depth: D.
    Returns:
        (..., 2^D), non-negative, summing to 1 over the last dimension.
    """
    pi = left.new_ones(*left.shape[:-1], 1)
    for d in range(depth):
        h = left[..., 2**d - 1: 2 ** (d + 1) - 1]
        # Leaf order at level d+1: [left child of node 0, right child of node 0, left child of node 1, ...].
        pi = torch.stack([pi * h, pi * (1.0 - h)], dim=-1).flatten(-2)
    return pi


def hme_dropout(
    gates: torch.Tensor,
    leaves: torch.Tensor,
    p: float = 0.1,
    *,
    training: bool = True,
    per_sample: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mix leaf responses through a soft tree with left-subtree dropout.

    Args:
        gates: (B, 2^D − 1) left probabilities g_m in [0, 1], heap order.
        leaves: (2^D, K) constant leaves or (B, 2^D, K) per-sample leaf responses.
        p: probability of dropping each node's left subtree.
        training: False gives the expectation (δ replaced by p).
        per_sample: independent δ per row (True) or one δ per node for the batch (False).
        generator: optional generator for δ.
    Returns:
        (B, K) in ``leaves``' dtype (the mixing itself runs in float32 at least).
    """
    check_float_tensor(gates, _NAME, "gates")
    check_float_tensor(leaves, _NAME, "leaves")
    p = check_probability(p, "p", _NAME)
    generator = check_generator(generator, gates, _NAME)
    if gates.ndim != 2:
        raise ValueError(f"{_NAME}: gates must be 2-D (B, 2^D - 1), got shape {tuple(gates.shape)}")
    nodes = gates.shape[1]
    depth = int(round(math.log2(nodes + 1)))
    if 2**depth - 1 != nodes:
        raise ValueError(f"{_NAME}: gates' last dimension must be 2^D - 1 for a depth D, got {nodes}")
    if leaves.ndim not in (2, 3) or leaves.shape[-2] != 2**depth:
        raise ValueError(f"{_NAME}: leaves must be (2^D, K) or (B, 2^D, K) with 2^D = {2**depth}, "
                         f"got shape {tuple(leaves.shape)}")
    g = gates.to(_mix_dtype(gates.dtype))
    if not training:
        left = g * (1.0 - p)
    elif p == 0.0:
        left = g
    else:
        shape = (g.shape[0] if per_sample else 1, nodes)
        left = g * sample_keep_mask(g, 1.0 - p, shape, generator)
    return _mix(leaf_probabilities(left, depth), leaves)


def _mix_dtype(dtype: torch.dtype) -> torch.dtype:
    # Products of many gates and the weighted sum run in float32 at least (float64 stays float64).
    return torch.promote_types(dtype, torch.float32)


def _mix(pi: torch.Tensor, leaves: torch.Tensor) -> torch.Tensor:
    """y = Σ_ℓ π_ℓ ρ_ℓ in float32 at least, returned in the leaves' dtype."""
    dtype = torch.promote_types(pi.dtype, _mix_dtype(leaves.dtype))
    if leaves.ndim == 2:
        y = pi.to(dtype) @ leaves.to(dtype)
    else:
        y = torch.einsum("bl,blk->bk", pi.to(dtype), leaves.to(dtype))
    return y.to(leaves.dtype)


@register(
    _NAME,
    family="experts",
    kind="block",
    paper="İrsoy & Alpaydın, Neurocomputing 2021, arXiv:1812.10158",
    summary="soft decision tree (HME) whose nodes drop their left subtree with probability p, mass to the right",
    taxonomy={"element": "architecture", "space": "routing", "theta": "p(θ)", "sampling": "random",
              "unit": "subtree", "phase": "train", "generality": "generic"},
)
class HMEDropout(DropkitModule):
    """Soft decision tree with left-subtree dropout; (N, *, in_features) → (N, *, out_features).

    Args:
        in_features, out_features: input width and response width (1 for regression, classes for logits).
        depth: D ≥ 1 (2^D leaves, 2^D − 1 gates), at most 16.
        p: drop probability of each node's left subtree; the paper sweeps it, its chosen values are not known
            (0.1 is the rate of a public re-implementation).
        leaf: ``"constant"`` (ρ_ℓ) or ``"linear"`` (V_ℓᵀx + c_ℓ).
        per_sample: independent δ per row (default) or one per node per batch.
        eval_mode: ``"expectation"`` (exact) or ``"mc"`` (average of ``mc_samples`` stochastic passes).
        generator: optional generator for δ.
    """

    repr_fields = ("in_features", "out_features", "depth", "leaf", "per_sample", "eval_mode")

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        depth: int = 3,
        p: float = 0.1,
        leaf: str = "constant",
        per_sample: bool = True,
        eval_mode: str = "expectation",
        mc_samples: int = 32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator=generator)
        self.in_features = check_positive_int(in_features, "in_features", _NAME)
        self.out_features = check_positive_int(out_features, "out_features", _NAME)
        self.depth = check_positive_int(depth, "depth", _NAME)
        if self.depth > MAX_DEPTH:
            raise ValueError(f"{_NAME}: depth must be ≤ {MAX_DEPTH} (2^depth leaves), got {depth}")
        self.leaf = check_choice(leaf, "leaf", _NAME, ("constant", "linear"))
        self.per_sample = check_bool(per_sample, "per_sample", _NAME)
        self.eval_mode = check_choice(eval_mode, "eval_mode", _NAME, ("expectation", "mc"))
        self.mc_samples = check_positive_int(mc_samples, "mc_samples", _NAME)
        n_leaves = 2**self.depth
        self.gate = nn.Linear(self.in_features, n_leaves - 1)
        if self.leaf == "constant":
            self.leaf_value = nn.Parameter(torch.randn(n_leaves, self.out_features) * 0.1)
        else:
            bound = 1.0 / math.sqrt(self.in_features)
            self.leaf_weight = nn.Parameter(torch.empty(n_leaves, self.in_features, self.out_features).uniform_(-bound, bound))
            self.leaf_value = nn.Parameter(torch.zeros(n_leaves, self.out_features))

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Left probabilities (B, 2^D − 1) of the rows of x (B, in_features), in float32 (float64 stays float64)."""
        dtype = _mix_dtype(torch.promote_types(x.dtype, self.gate.weight.dtype))
        return torch.sigmoid(F.linear(x.to(dtype), self.gate.weight.to(dtype), self.gate.bias.to(dtype)))

    def leaf_responses(self, x: torch.Tensor) -> torch.Tensor:
        """(2^D, K) constant leaves, or (B, 2^D, K) linear-leaf responses."""
        if self.leaf == "constant":
            return self.leaf_value
        return torch.einsum("bi,lik->blk", x.to(self.leaf_weight.dtype), self.leaf_weight) + self.leaf_value

    def leaf_probabilities(self, x: torch.Tensor, p: float | None = None) -> torch.Tensor:
        """Expected path probabilities (B, 2^D) with δ replaced by ``p`` (default: the layer's p; 0 = plain tree)."""
        left = self.gates(x.reshape(-1, self.in_features)) * (1.0 - (self.p if p is None else p))
        return leaf_probabilities(left, self.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, _NAME)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{_NAME}: input's last dimension must be in_features = {self.in_features}, "
                             f"got shape {tuple(x.shape)}")
        flat = x.reshape(-1, self.in_features)
        g = self.gates(flat)
        leaves = self.leaf_responses(flat)
        if self.training:
            y = hme_dropout(g, leaves, self.p if self.enabled else 0.0, training=True,
                            per_sample=self.per_sample, generator=self._generator_for(x))
        elif self.eval_mode == "mc" and self.p > 0.0:
            # Mean of mc_samples stochastic passes, drawn at once; y is linear in π, so average π, then mix.
            shape = (self.mc_samples, g.shape[0] if self.per_sample else 1, g.shape[1])
            keep = sample_keep_mask(g, 1.0 - self.p, shape, self._generator_for(x))
            y = _mix(leaf_probabilities(g * keep, self.depth).mean(0), leaves)
        else:
            y = hme_dropout(g, leaves, self.p, training=False)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
