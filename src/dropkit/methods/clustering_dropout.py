"""Clustering-based adaptive dropout: Wen, Ke, Xie & Shen, "Clustering-Based Adaptive Dropout for CNN-Based
Classification", ACPR 2019, LNCS 12046, pp. 46–58 (Springer 2020), DOI 10.1007/978-3-030-41404-7_4.

The paper clusters "network characteristics of features, weights, or their derivatives" of the FC layer, so that
similar elements share one dropout probability, and updates the probabilities during training from "the
clustering group of the average characteristic response": strong responses get low drop rates. No code and no
formula are public; this file implements a reconstruction, every step a reading of ours
(``docs/methods/clustering_dropout.md``):

1. characteristic response per feature unit j (the FC layer's input features; channels for conv inputs):
   ``"feature"``: E|f_j| over the training batches since the last update; ``"feature_grad"``: E|∂L/∂y_j|, the
   gradient at this layer's output (not at its input, which the mask itself zeroes); ``"weight"``: mean_k |W_kj|
   of the FC ``layer`` that reads these features; ``"weight_grad"``: mean_k |∂L/∂W_kj|, read after each step.
2. every ``update_every`` optimizer steps (counted by ``dropkit.step_statistics``): 1-D k-means of the responses
   into ``groups`` groups (default 3: the paper's insignificant / fair / significant levels), in torch on the
   layer's device, deterministic for ``seed``; group ids ordered by centroid.
3. group drop probabilities decreasing in the group-mean response r̄_g: ``p_g = clip(s · w_g, p_min, p_max)``
   with ``w_g = (r̄ / r̄_g)^γ`` (``rule="inverse"``, default) or ``w_g = G − rank_g`` (``rule="rank"``), the scalar
   s found by bisection so that the size-weighted mean of p_g equals the base rate ``p`` (exact whenever
   p_min ≤ p ≤ p_max; "clip, then renormalise", done so that it also holds when clipping binds).
4. training forward: per-sample, per-element Bernoulli masks with the unit's keep probability 1 − p_g(j) and
   inverted scaling 1/(1 − p_g(j)) per element, so E[out] = x; eval is the identity.

Before the first update every unit has probability ``p``: the layer is standard inverted dropout, as it also is
with ``groups=1``. Not implemented: DropConnect-style masks over the *elements* of W for the weight
modes; here the weight statistics rate the feature units that the weights read.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dropkit.base import DropkitModule
from dropkit.masks import sample_uniform
from dropkit.protocol import ProtocolLayer
from dropkit.registry import register
from dropkit.validation import (
    check_choice,
    check_float_tensor,
    check_generator,
    check_positive_int,
    check_probability,
    check_real,
)

__all__ = ["kmeans_1d", "group_probabilities", "ClusteringDropout"]

_METHOD = "clustering_dropout"
_CHARACTERISTICS = ("feature", "weight", "feature_grad", "weight_grad")
_RULES = ("inverse", "rank")
_INITS = ("kmeans++", "quantile")


@torch.no_grad()
def kmeans_1d(
    values: torch.Tensor,
    k: int,
    *,
    iterations: int = 10,
    init: str = "kmeans++",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on scalars, in torch on ``values``' device.

    Args:
        values: (n,) responses.
        k: number of clusters (the loop over clusters in the k-means++ seeding is over k, never over n).
        iterations: Lloyd iterations.
        init: ``"kmeans++"`` (D²-weighted seeding from ``generator``) or ``"quantile"`` (centroids at the
            (i + ½)/k quantiles: no randomness at all).
        generator: the seeding's generator (same device as ``values``); a seeded one makes the result
            deterministic.

    Returns:
        ``(centroids (k,), assignments (n,))`` with centroids ascending and assignments in 0..k−1 ordered by
        centroid. An empty cluster keeps its previous centroid.
    """
    v = values.detach().float().reshape(-1)
    if v.numel() == 0:
        raise ValueError("kmeans_1d: values must not be empty")
    if init == "quantile":
        centroids = torch.quantile(v, (torch.arange(k, device=v.device, dtype=torch.float32) + 0.5) / k)
    elif init == "kmeans++":
        first = torch.randint(v.numel(), (1,), generator=generator, device=v.device)
        centroids = v[first]
        for _ in range(1, k):
            d2 = (v[:, None] - centroids[None, :]).square().min(1).values
            # all remaining mass zero (fewer distinct values than k): fall back to a uniform pick
            weights = torch.where(d2.sum() > 0, d2, torch.ones_like(d2))
            pick = torch.multinomial(weights, 1, generator=generator)
            centroids = torch.cat([centroids, v[pick]])
    else:
        raise ValueError(f"kmeans_1d: init must be one of {_INITS}; got {init!r}")
    for _ in range(iterations):
        assign = (v[:, None] - centroids[None, :]).abs().argmin(1)
        sums = torch.zeros(k, device=v.device).index_add_(0, assign, v)
        counts = torch.bincount(assign, minlength=k).float()
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1.0), centroids)
    centroids = centroids.sort().values
    assign = (v[:, None] - centroids[None, :]).abs().argmin(1)
    return centroids, assign


@torch.no_grad()
def group_probabilities(
    group_weights: torch.Tensor,
    group_sizes: torch.Tensor,
    p: float,
    p_min: float = 0.05,
    p_max: float = 0.9,
    iterations: int = 60,
) -> torch.Tensor:
    """``clip(s·w_g, p_min, p_max)`` with s chosen by bisection so that Σ n_g p_g / Σ n_g = p.

    The bounds widen to include ``p`` itself (p = 0 gives all zeros, p = 1 all ones). Monotone in ``w``.
    """
    lo, hi = min(p_min, p), max(p_max, p)
    w = group_weights.float().clamp_min(0.0)
    n = group_sizes.float()
    total = n.sum().clamp_min(1.0)
    s_lo = torch.zeros((), device=w.device)
    s_hi = hi / w[w > 0].min().clamp_min(1e-30) if bool((w > 0).any()) else torch.ones((), device=w.device)
    s_hi = torch.as_tensor(s_hi, device=w.device, dtype=torch.float32) * 2.0
    for _ in range(iterations):
        s = (s_lo + s_hi) / 2
        mean = ((s * w).clamp(lo, hi) * n).sum() / total
        too_high = mean > p
        s_hi = torch.where(too_high, s, s_hi)
        s_lo = torch.where(too_high, s_lo, s)
    return ((s_lo + s_hi) / 2 * w).clamp(lo, hi)


class _GradProbe(torch.autograd.Function):
    """Identity whose backward adds the per-unit mean |gradient| to an accumulator (feature_grad mode)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, acc: torch.Tensor, count: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.acc, ctx.count, ctx.dim = acc, count, dim
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        with torch.no_grad():
            g = grad.detach().movedim(ctx.dim, 1)
            ctx.acc.add_(g.reshape(g.shape[0], g.shape[1], -1).abs().float().mean((0, 2)))
            ctx.count.add_(1)
        return grad, None, None, None


def _weight_response(weight: torch.Tensor) -> torch.Tensor:
    """(in_features,) mean |W| over outputs (and kernel positions) per input unit."""
    w = weight.detach().abs().float().transpose(0, 1)
    return w.reshape(w.shape[0], -1).mean(1)


@register(
    _METHOD,
    family="aware",
    kind="stateful",
    paper="Wen, Ke, Xie & Shen, Clustering-Based Adaptive Dropout for CNN-Based Classification, ACPR 2019, "
          "LNCS 12046 (2020)",
    summary="1-D k-means of feature/weight/gradient responses into groups; per-group drop rates falling with "
            "the response and averaging to p; inverted per-element dropout",
    taxonomy={"element": "architecture", "space": "hidden", "theta": "p(θ|D)+time", "sampling": "adaptive",
              "unit": "element", "phase": "train", "generality": "generic"},
)
class ClusteringDropout(ProtocolLayer, DropkitModule):
    """Clustering-based adaptive dropout (steps counted through :func:`dropkit.protocol.step_statistics`).

    Args:
        p: base drop rate, the size-weighted mean of the group rates (default 0.5).
        characteristic: ``"feature"`` (default), ``"weight"``, ``"feature_grad"`` or ``"weight_grad"``.
        groups: number of k-means groups G (default 3).
        update_every: re-cluster every T optimizer steps (default 100; a "once per epoch" reading is
            ``update_every=len(train_loader)``).
        rule: ``"inverse"`` (w_g = (r̄/r̄_g)^γ, default) or ``"rank"`` (w_g = G − rank).
        gamma: exponent of the inverse rule (default 1).
        p_min, p_max: clip range of the group rates (defaults 0.05, 0.9).
        layer: for the weight modes, the ``nn.Linear`` (or ``nn.ConvNd``) that *reads* this layer's output;
            unit j is rated by column j of its weight. Must be None for the feature modes.
        dim: the unit axis (default 1: features of (N, F), channels of (N, C, *spatial)).
        num_features: number of units, to allocate the statistics up front (else sized by the first forward).
        kmeans_iterations, init, seed: k-means settings; update u seeds its generator with ``seed + u``.
        generator: optional generator for the dropout masks.

    Buffers (saved in ``state_dict``): ``unit_probs`` (H,), ``assignments`` (H,), ``centroids`` (G,),
    ``group_weights`` (G,), ``group_probs`` (G,), ``group_sizes`` (G,), the response accumulators, ``steps``
    and ``num_updates``.
    """

    repr_fields = ("characteristic", "groups", "update_every")
    needs_steps = True

    def __init__(
        self,
        p: float = 0.5,
        characteristic: str = "feature",
        groups: int = 3,
        update_every: int = 100,
        rule: str = "inverse",
        gamma: float = 1.0,
        p_min: float = 0.05,
        p_max: float = 0.9,
        layer: nn.Module | None = None,
        dim: int = 1,
        num_features: int | None = None,
        kmeans_iterations: int = 10,
        init: str = "kmeans++",
        seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        self._built = False
        super().__init__(p, generator=generator)
        self.characteristic = check_choice(characteristic, "characteristic", _METHOD, _CHARACTERISTICS)
        self.groups = check_positive_int(groups, "groups", _METHOD)
        self.update_every = check_positive_int(update_every, "update_every", _METHOD)
        self.rule = check_choice(rule, "rule", _METHOD, _RULES)
        self.gamma = check_real(gamma, "gamma", _METHOD, low=0.0)
        self.p_min = check_probability(p_min, "p_min", _METHOD)
        self.p_max = check_probability(p_max, "p_max", _METHOD)
        if self.p_min > self.p_max:
            raise ValueError(f"{_METHOD}: p_min must be ≤ p_max, got p_min={p_min}, p_max={p_max}")
        self.kmeans_iterations = check_positive_int(kmeans_iterations, "kmeans_iterations", _METHOD)
        self.init = check_choice(init, "init", _METHOD, _INITS)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"{_METHOD}: seed must be an int, got {seed!r}")
        self.seed = seed
        if isinstance(dim, bool) or not isinstance(dim, int) or dim == 0:
            raise ValueError(f"{_METHOD}: dim must be a non-zero int (a non-batch axis), got {dim!r}")
        self.dim = dim
        weight_mode = self.characteristic.startswith("weight")
        if weight_mode:
            weight = getattr(layer, "weight", None)
            if not isinstance(layer, nn.Module) or not isinstance(weight, torch.Tensor) or weight.ndim < 2:
                raise ValueError(f"{_METHOD}: characteristic={characteristic!r} needs layer=<the nn.Linear or "
                                 f"nn.ConvNd that reads this layer's output>, got {layer!r}")
            if num_features is not None and num_features != weight.shape[1]:
                raise ValueError(f"{_METHOD}: num_features={num_features} but layer reads {weight.shape[1]} inputs")
            num_features = weight.shape[1]
        elif layer is not None:
            raise ValueError(f"{_METHOD}: layer is only used by the weight characteristics "
                             f"('weight', 'weight_grad'), not by {characteristic!r}")
        self._layer = [layer]  # a plain list: the layer belongs to the model, not to this module's state_dict
        h = 0 if num_features is None else check_positive_int(num_features, "num_features", _METHOD)
        g = self.groups
        self.register_buffer("unit_probs", torch.full((h,), self.p))
        self.register_buffer("assignments", torch.zeros(h, dtype=torch.long))
        self.register_buffer("response_sum", torch.zeros(h))
        self.register_buffer("response_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(g))
        self.register_buffer("group_weights", torch.ones(g))
        self.register_buffer("group_sizes", torch.zeros(g))
        self.register_buffer("group_probs", torch.full((g,), self.p))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self._built = True

    # p may be changed by a schedule: the group rates follow, keeping the same groups and weights.
    @DropkitModule.p.setter  # type: ignore[attr-defined]
    def p(self, value: float) -> None:
        self._p = check_probability(value, "p", self.method_name)
        if getattr(self, "_built", False):
            self._refresh_probs()

    @torch.no_grad()
    def _refresh_probs(self) -> None:
        if int(self.num_updates) == 0:
            self.group_probs.fill_(self._p)
            self.unit_probs.fill_(self._p)
            return
        self.group_probs.copy_(group_probabilities(self.group_weights, self.group_sizes, self._p, self.p_min,
                                                   self.p_max))
        self.unit_probs.copy_(self.group_probs[self.assignments])

    def _size(self, h: int, device: torch.device) -> None:
        if self.unit_probs.numel() == 0:
            self.unit_probs = torch.full((h,), self._p, device=device)
            self.assignments = torch.zeros(h, dtype=torch.long, device=device)
            self.response_sum = torch.zeros(h, device=device)
        elif self.unit_probs.numel() != h:
            raise ValueError(f"{_METHOD}: input has {h} units on dim {self.dim} but the layer has "
                             f"{self.unit_probs.numel()} (fixed by num_features, layer or the first forward)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, _METHOD)
        if x.ndim < 2 or not -x.ndim <= self.dim < x.ndim or self.dim % x.ndim == 0:
            raise ValueError(f"{_METHOD}: input must be (N, F) or (N, C, *spatial) with dim={self.dim} a non-batch "
                             f"axis, got shape {tuple(x.shape)}")
        dim = self.dim % x.ndim
        self._size(x.shape[dim], x.device)
        if not self.training:
            return x
        if self.characteristic == "feature" and self.observes_training():
            # only training batches: not feed_validation, MC-dropout inference or a no_grad pass (held-out data
            # must not leak into the clustering)
            with torch.no_grad():
                a = x.detach().movedim(dim, 1)
                self.response_sum.add_(a.reshape(a.shape[0], a.shape[1], -1).abs().float().mean((0, 2)))
                self.response_count.add_(1)
        out = x
        if self.active:
            generator = check_generator(self.generator, x, _METHOD)
            shape = [1] * x.ndim
            shape[dim] = x.shape[dim]
            with torch.no_grad():
                q = (1.0 - self.unit_probs).view(shape)
                keep = sample_uniform(x.shape, x, generator) < q
                scale = torch.where(q > 0, 1.0 / q.clamp_min(1e-12), torch.zeros_like(q))
                factor = (keep * scale).to(x.dtype)
            out = x * factor
        if self.characteristic == "feature_grad" and out.requires_grad and self.observes_training():
            out = _GradProbe.apply(out, self.response_sum, self.response_count, dim)
        return out

    # -- protocol ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def protocol_step(self) -> None:
        """Count one optimizer step; accumulate weight gradients; re-cluster every ``update_every`` steps."""
        self.steps.add_(1)
        if self.characteristic == "weight_grad":
            grad = self._layer[0].weight.grad
            if grad is not None:
                self._size(grad.shape[1], grad.device)
                self.response_sum.add_(_weight_response(grad))
                self.response_count.add_(1)
        if int(self.steps) % self.update_every == 0:
            self.recluster()

    @torch.no_grad()
    def recluster(self) -> None:
        """Cluster the current responses and set the group and unit drop rates (also callable by hand).

        Raises:
            RuntimeError: no statistics were gathered since the last update (for example ``feature_grad`` without
                a backward pass, or ``weight_grad`` with ``step_statistics`` called after ``zero_grad``).
        """
        if self.characteristic == "weight":
            responses = _weight_response(self._layer[0].weight)
            self._size(responses.numel(), responses.device)
        else:
            if int(self.response_count) == 0:
                where = {"feature": "training forward passes",
                         "feature_grad": "backward passes through this layer (its input must require grad)",
                         "weight_grad": "step_statistics() calls while layer.weight.grad is set (call it after "
                                        "optimizer.step() and before zero_grad)"}[self.characteristic]
                raise RuntimeError(f"{_METHOD}: no {self.characteristic} statistics since the last update: "
                                   f"they come from {where}")
            responses = self.response_sum / self.response_count
        device = responses.device
        gen = torch.Generator(device=device).manual_seed(self.seed + int(self.num_updates))
        centroids, assign = kmeans_1d(responses, self.groups, iterations=self.kmeans_iterations, init=self.init,
                                      generator=gen)
        g = self.groups
        sizes = torch.bincount(assign, minlength=g).float()
        group_mean = torch.zeros(g, device=device).index_add_(0, assign, responses.float()) / sizes.clamp_min(1.0)
        group_mean = torch.where(sizes > 0, group_mean, centroids)
        if self.rule == "inverse":
            eps = 1e-12
            weights = ((responses.float().mean() + eps) / (group_mean.clamp_min(0.0) + eps)).pow(self.gamma)
        else:
            weights = torch.arange(g, 0, -1, device=device, dtype=torch.float32)
        self.centroids.copy_(centroids)
        self.group_weights.copy_(weights)
        self.group_sizes.copy_(sizes)
        self.assignments.copy_(assign)
        self.num_updates.add_(1)
        self._refresh_probs()
        self.response_sum.zero_()
        self.response_count.zero_()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        incoming = state_dict.get(prefix + "unit_probs")
        if incoming is not None and self.unit_probs.numel() == 0:
            self._size(incoming.numel(), self.unit_probs.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
