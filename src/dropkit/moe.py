"""Mixture-of-Experts machinery: router (top-1 / top-2), capacity, load-balancing loss, expert-parallel dispatch.

The mechanics follow the mainstream implementations (``docs/methods/gating_dropout.md``):

* **Router** (GShard / Switch; DeepSpeed ``sharded_moe.py``, fairseq ``top2gate.py``, Tutel ``fp32_gate``):
  ``logits = x W_g`` with no bias, computed in float32 whatever the model dtype (float64 stays float64), optional multiplicative
  *jitter* U(1-ε, 1+ε) on the router input (Switch, DeepSpeed ``"Jitter"``) or Gumbel *rsample* noise on the
  top-1 choice (DeepSpeed ``"RSample"``), training only.
* **Capacity** C = ceil(k·S/E·cf), at least ``min_capacity`` and at most S (an expert cannot receive more than S
  of a rank's S tokens); cf = 1.0 in training and 2.0 in eval (Switch, as used by Gating Dropout). Tokens over
  capacity are dropped (their MoE output is 0; the caller's residual carries them). Top-1 uses Random Token
  Selection by default (DeepSpeed ``use_rts``); top-2 uses first-come order (DeepSpeed, fairseq). Without token
  dropping (``drop_tokens=False``) C is the largest per-expert count of the *actual* choices, noise included,
  all-reduced (MAX) over the group, as DeepSpeed does: nothing is dropped, at the price of a host sync.
* **Load-balancing loss** l_aux = E·Σ_e me_e·ce_e, me = mean gate probability, ce = fraction of tokens whose
  *first* choice is e, both before capacity drops; it is 1 for perfectly uniform routing. For top-2 this is the
  fixed form mean(me·ce)·E² (DeepSpeed PR #5156).
* **Dispatch/combine** is index based instead of GShard's dense ``einsum("sec,sm->ecm")``: each kept (token,
  choice) gets the slot ``expert·C + location``; a gather builds the (E, C, M) buffer and another gather plus a
  weighted sum combines. Same result and gradients as the einsum form (:func:`dense_combine_weights` gives the
  (S, E, C) tensor for checks), but O(S·k·M) instead of O(S·E·C·M).
* **Expert parallelism**: with a process group of W ranks, each rank holds L = E/W experts. The (E, C, M) buffer
  is exchanged with one autograd-aware ``all_to_all_single`` (its backward is the reverse all-to-all), the L
  local experts run batched on (L, W·C, M), and a second all-to-all brings the results home. Every rank must
  pass the same number of tokens (all-to-all needs equal slabs), as in DeepSpeed; fairseq pads instead.
  Collectives other than the all-to-all run on :func:`group_device` (the GPU for NCCL, the CPU for gloo).

Experts are initialised from the default RNG as the whole (E, ...) stack and then sliced to the rank's L experts,
so W ranks seeded identically (``torch.manual_seed``) hold exactly the experts of the one-process model built
with that seed, and the gate is the same on every rank.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dropkit.masks import sample_uniform

__all__ = [
    "Routing",
    "CommStats",
    "compute_capacity",
    "top1_gating",
    "top2_gating",
    "dense_combine_weights",
    "all_to_all",
    "ExpertFFN",
    "MoELayer",
    "group_size_and_rank",
    "group_device",
    "backend_device_type",
    "no_drop_capacity",
    "sync_gradients",
    "broadcast_shared_parameters",
]


class Routing(NamedTuple):
    """Where each token goes. S tokens, k choices each.

    Attributes:
        expert: (S, k) int64 expert index of each choice.
        location: (S, k) int64 slot of the token inside that expert's capacity (meaningless where not kept).
        kept: (S, k) bool, False where the choice was dropped by capacity.
        weight: (S, k) float32 (float64 for float64 input) combine weight (gate probability; renormalised over the kept choices for top-2);
            0 where not kept.
        l_aux: 0-D float32 load-balancing loss.
        capacity: C, the slots per expert on this rank.
    """

    expert: torch.Tensor
    location: torch.Tensor
    kept: torch.Tensor
    weight: torch.Tensor
    l_aux: torch.Tensor
    capacity: int


class CommStats:
    """Counts of the all-to-all calls made by one MoE layer (forward and backward).

    ``bytes_sent`` counts what leaves the rank: (W−1)/W of each buffer (the rank's own slab stays in memory).
    ``buffer_bytes`` counts the whole buffers handed to ``all_to_all_single``.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.bytes_sent = 0
        self.buffer_bytes = 0

    def record(self, t: torch.Tensor, world_size: int) -> None:
        nbytes = t.numel() * t.element_size()
        self.calls += 1
        self.buffer_bytes += nbytes
        self.bytes_sent += nbytes * (world_size - 1) // world_size

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "bytes_sent": self.bytes_sent, "buffer_bytes": self.buffer_bytes}

    def __repr__(self) -> str:
        return f"CommStats(calls={self.calls}, bytes_sent={self.bytes_sent}, buffer_bytes={self.buffer_bytes})"


def group_size_and_rank(group: Any) -> tuple[int, int]:
    """(W, rank in group) of an expert-parallel group; (1, 0) for ``None``."""
    if group is None:
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def backend_device_type(backend: str) -> str:
    """Device type of the tensors a ``torch.distributed`` backend takes: ``"cpu"`` for gloo, mpi and any backend
    with a CPU part (``"cpu:gloo,cuda:nccl"``), else the device whose default backend it is (nccl → cuda)."""
    backend = str(backend).lower()
    if backend in ("gloo", "mpi") or "cpu" in backend:
        return "cpu"
    for device_type, name in dist.Backend.default_device_backend_map.items():
        if name == backend and device_type != "cpu":
            return device_type
    return "cpu"


def group_device(group: Any) -> torch.device:
    """Device for the small collectives (decisions, checks) of ``group``: NCCL only takes CUDA tensors, on the
    rank's current GPU; gloo takes CPU tensors. The CPU for ``group=None``."""
    if group is None:
        return torch.device("cpu")
    device_type = backend_device_type(dist.get_backend(group))
    if device_type == "cpu":
        return torch.device("cpu")
    return torch.device(device_type, getattr(torch, device_type).current_device())


# ----------------------------------------------------------------------------------------------------- gating


def compute_capacity(num_tokens: int, num_experts: int, k: int, capacity_factor: float, min_capacity: int) -> int:
    """C = ceil(k·S/E·cf), clipped to [min_capacity, S] (DeepSpeed ``_capacity`` / ``topkgating``)."""
    capacity = math.ceil(k * num_tokens / num_experts * capacity_factor)
    return max(1, min(max(capacity, min_capacity), num_tokens))


def no_drop_capacity(load: torch.Tensor, group: Any = None) -> int:
    """C that drops nothing: the largest entry of the per-expert ``load`` (E,), all-reduced (MAX) over ``group``
    so that every rank uses the same C (DeepSpeed ``drop_tokens=False``). At least 1. A host sync."""
    with torch.no_grad():
        peak = load.max().reshape(1).to(torch.int64) if load.numel() else load.new_zeros(1, dtype=torch.int64)
        if group is not None and dist.get_world_size(group) > 1:
            peak = peak.to(group_device(group))
            dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
    return max(1, int(peak.item()))


def _gumbel(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel noise −log(−log u) in ``like``'s dtype and device.

    Both logs get a positive argument: u is clamped away from 0 and −log u (which is ≥ 0, and 0 when u rounds to
    1 in a low precision) away from 0 before the outer log.
    """
    u = sample_uniform(shape, like, generator).to(like.dtype)
    tiny = torch.finfo(like.dtype).tiny
    return -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))


def top1_gating(
    logits: torch.Tensor,
    capacity: int | None,
    *,
    use_rts: bool = True,
    rsample: bool = False,
    generator: torch.Generator | None = None,
    group: Any = None,
) -> Routing:
    """Switch / DeepSpeed ``top1gating`` on float32 ``logits`` (S, E).

    The combine weight is the chosen expert's gate probability (not renormalised). Over capacity, ``use_rts``
    keeps a uniformly random C of an expert's tokens (Random Token Selection); otherwise the first C in order.
    ``rsample`` picks the expert by argmax of Gumbel-perturbed logits (DeepSpeed ``"RSample"``).
    ``capacity=None`` drops nothing: C is the largest load of the choices made, over ``group``
    (:func:`no_drop_capacity`).
    """
    S, E = logits.shape
    gates = torch.softmax(logits, dim=1)
    choice = logits + _gumbel(logits.shape, logits, generator) if rsample else gates
    index = choice.argmax(dim=1)
    mask = F.one_hot(index, E).to(logits.dtype)
    if capacity is None:
        capacity = no_drop_capacity(mask.sum(0), group)
    # Load balance from the router's wish, before capacity drops (DeepSpeed, Switch).
    l_aux = (gates.mean(0) * mask.mean(0)).sum() * E
    with torch.no_grad():
        if use_rts:
            # Priority in [1, 2) for a token routed to e, 0 otherwise: the top-C by priority are C random tokens
            # among those routed to e (or all of them when fewer).
            u = sample_uniform(mask.shape, logits, generator).to(mask.dtype)
            top = (mask * (1.0 + u)).topk(capacity, dim=0).indices
            mask = torch.zeros_like(mask).scatter_(0, top, 1.0) * mask
        else:
            mask = mask * (mask.cumsum(0) <= capacity)
        location = ((mask.cumsum(0) - 1.0) * mask).sum(1).long()
        kept = mask.sum(1) > 0
    weight = (gates * mask).sum(1)
    return Routing(index[:, None], location[:, None], kept[:, None], weight[:, None], l_aux, capacity)


def top2_gating(
    logits: torch.Tensor,
    capacity: int | None,
    *,
    sample_second: bool = True,
    generator: torch.Generator | None = None,
    group: Any = None,
) -> Routing:
    """GShard top-2 as in DeepSpeed / fairseq ``top2gating`` on float32 ``logits`` (S, E).

    First expert: argmax of the gates. Second: argmax of Gumbel-perturbed logits with the first masked out
    (``second_expert_policy="sampling"``) when ``sample_second``, else the plain second best. Capacity is
    first-come, the second choices queued after all first choices. The two kept weights are renormalised to sum
    to 1 (after capacity drops, DeepSpeed's order); a token that lost both choices gets weight 0.
    ``capacity=None`` drops nothing: C is the largest load of both choices, over ``group``.
    """
    S, E = logits.shape
    gates = torch.softmax(logits, dim=1)
    index1 = gates.argmax(dim=1)
    mask1 = F.one_hot(index1, E).to(logits.dtype)
    noisy = logits + _gumbel(logits.shape, logits, generator) if sample_second else logits
    index2 = noisy.masked_fill(mask1.bool(), float("-inf")).argmax(dim=1)
    mask2 = F.one_hot(index2, E).to(logits.dtype)
    if capacity is None:
        capacity = no_drop_capacity((mask1 + mask2).sum(0), group)
    l_aux = (gates.mean(0) * mask1.mean(0)).mean() * E * E
    with torch.no_grad():
        loc1 = mask1.cumsum(0) - 1.0
        loc2 = mask2.cumsum(0) - 1.0 + mask1.sum(0, keepdim=True)
        mask1 = mask1 * (loc1 < capacity)
        mask2 = mask2 * (loc2 < capacity)
        location = torch.stack([(loc1 * mask1).sum(1), (loc2 * mask2).sum(1)], dim=1).long()
        kept = torch.stack([mask1.sum(1) > 0, mask2.sum(1) > 0], dim=1)
    g1 = (gates * mask1).sum(1)
    g2 = (gates * mask2).sum(1)
    denom = (g1 + g2).clamp_min(torch.finfo(logits.dtype).eps)
    weight = torch.stack([g1 / denom, g2 / denom], dim=1)
    return Routing(torch.stack([index1, index2], dim=1), location, kept, weight, l_aux, capacity)


def _slots(routing: Routing, num_experts: int) -> torch.Tensor:
    """(S, k) flat slot ``expert·C + location`` of each kept choice; E·C (a dummy slot) where dropped."""
    C = routing.capacity
    slot = routing.expert * C + routing.location
    return torch.where(routing.kept, slot, torch.full_like(slot, num_experts * C))


def dense_combine_weights(routing: Routing, num_experts: int) -> torch.Tensor:
    """GShard's (S, E, C) combine tensor: weight of token s in slot c of expert e (dispatch mask = it > 0)."""
    S = routing.expert.shape[0]
    C = routing.capacity
    dense = torch.zeros(S, num_experts * C + 1, dtype=routing.weight.dtype, device=routing.weight.device)
    dense = dense.scatter_add(1, _slots(routing, num_experts), routing.weight * routing.kept)
    return dense[:, : num_experts * C].reshape(S, num_experts, C)


# ------------------------------------------------------------------------------------------------ all-to-all


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with equal slabs along dim 0; the backward sends the gradients back the same way."""

    @staticmethod
    def forward(ctx: Any, group: Any, stats: CommStats | None, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.group, ctx.stats = group, stats
        return _exchange(x, group, stats)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:  # type: ignore[override]
        return None, None, _exchange(grad, ctx.group, ctx.stats)


def _exchange(x: torch.Tensor, group: Any, stats: CommStats | None) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    if stats is not None:
        stats.record(x, dist.get_world_size(group))
    return out


def all_to_all(x: torch.Tensor, group: Any, stats: CommStats | None = None) -> torch.Tensor:
    """Autograd-aware all-to-all: slab w of ``x`` (split evenly along dim 0) goes to rank w of ``group``."""
    return _AllToAll.apply(group, stats, x)


# -------------------------------------------------------------------------------------------------- experts


class ExpertFFN(nn.Module):
    """L feed-forward experts stored as stacked weights and run with one batched matmul (no loop over experts).

    Parameters carry ``expert = True`` (fairseq's tag), so data-parallel gradient averaging can leave them out.
    """

    def __init__(self, num_experts: int, d_model: int, d_ff: int, *, first: int = 0, count: int | None = None,
                 activation: str = "relu") -> None:
        super().__init__()
        count = num_experts if count is None else count
        # Draw the whole (E, ...) stack, keep experts [first, first + count): seeded ranks agree with one process.
        b1_bound, b2_bound = 1.0 / math.sqrt(d_model), 1.0 / math.sqrt(d_ff)
        full = {
            "w1": torch.empty(num_experts, d_model, d_ff).uniform_(-b1_bound, b1_bound),
            "b1": torch.empty(num_experts, d_ff).uniform_(-b1_bound, b1_bound),
            "w2": torch.empty(num_experts, d_ff, d_model).uniform_(-b2_bound, b2_bound),
            "b2": torch.empty(num_experts, d_model).uniform_(-b2_bound, b2_bound),
        }
        for name, value in full.items():
            param = nn.Parameter(value[first:first + count].clone())
            param.expert = True  # type: ignore[attr-defined]
            self.register_parameter(name, param)
        self.activation = activation

    @property
    def num_local(self) -> int:
        return self.w1.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (L, n, M) → (L, n, M): expert l applied to row block l."""
        h = torch.baddbmm(self.b1.unsqueeze(1), x, self.w1)
        h = F.gelu(h) if self.activation == "gelu" else F.relu(h)
        return torch.baddbmm(self.b2.unsqueeze(1), h, self.w2)


# ------------------------------------------------------------------------------------------------ MoE layer


class MoELayer(nn.Module):
    """Expert-parallel MoE feed-forward layer (no regularizer; :mod:`dropkit.methods.gating_dropout` wraps it).

    Args: see :class:`dropkit.methods.gating_dropout.GatingDropoutMoE`, which validates them.
    """

    def __init__(self, d_model: int, d_ff: int, num_experts: int, *, k: int = 1, capacity_factor: float = 1.0,
                 eval_capacity_factor: float = 2.0, min_capacity: int = 4, noisy_gate: str | None = "jitter",
                 jitter_eps: float = 1e-2, use_rts: bool = True, drop_tokens: bool = True,
                 activation: str = "relu", process_group: Any = None) -> None:
        super().__init__()
        self.d_model, self.d_ff, self.num_experts, self.k = d_model, d_ff, num_experts, k
        self.capacity_factor, self.eval_capacity_factor, self.min_capacity = capacity_factor, eval_capacity_factor, min_capacity
        self.noisy_gate, self.jitter_eps, self.use_rts, self.drop_tokens = noisy_gate, jitter_eps, use_rts, drop_tokens
        self.process_group = process_group
        self.world_size, self.rank = group_size_and_rank(process_group)
        self.num_local = num_experts // self.world_size
        self.gate = nn.Linear(d_model, num_experts, bias=False)
        self.experts = ExpertFFN(num_experts, d_model, d_ff, first=self.rank * self.num_local, count=self.num_local,
                                 activation=activation)
        self.comm = CommStats()

    # -- routing
    def route(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Routing:
        """Router on x (S, M) in float32, with the capacity of the current mode."""
        S = x.shape[0]
        # float32 at least (float64 stays float64, for gradcheck); never bf16/fp16: softmax and cumsum need it.
        h = x.to(torch.promote_types(x.dtype, torch.float32))
        if self.training and self.noisy_gate == "jitter":
            u = sample_uniform(h.shape, h, generator).to(h.dtype)
            h = h * (1.0 - self.jitter_eps + 2.0 * self.jitter_eps * u)
        logits = F.linear(h, self.gate.weight.to(h.dtype))
        capacity: int | None = None  # drop_tokens=False: sized by the gating function from its noisy choices
        if self.drop_tokens:
            cf = self.capacity_factor if self.training else self.eval_capacity_factor
            capacity = compute_capacity(S, self.num_experts, self.k, cf, self.min_capacity)
        group = self.process_group if self.world_size > 1 else None
        if self.k == 1:
            rsample = self.training and self.noisy_gate == "rsample"
            return top1_gating(logits, capacity, use_rts=self.use_rts, rsample=rsample, generator=generator,
                               group=group)
        return top2_gating(logits, capacity, sample_second=self.training, generator=generator, group=group)

    # -- paths
    def forward_routed(self, x: torch.Tensor, *, exchange: bool = True,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Route x (S, M), run the experts, combine: returns (y (S, M), l_aux).

        ``exchange=False`` is fairseq's local drop: the same (E, C, M) buffer is handed to the local experts
        without the two all-to-alls, expert e being served by local expert e mod L. No tokens (S = 0, on every
        rank of the group) give the empty output and a zero aux loss.
        """
        if x.shape[0] == 0:
            return self.empty_output(x)
        routing = self.route(x, generator)
        E, C, W, L, M = self.num_experts, routing.capacity, self.world_size, self.num_local, x.shape[1]
        slot = _slots(routing, E)  # (S, k), dummy slot E·C for dropped choices
        S = x.shape[0]
        with torch.no_grad():
            token_of_slot = torch.full((E * C + 1,), S, dtype=torch.long, device=x.device)
            token_ids = torch.arange(S, device=x.device).repeat_interleave(self.k)
            token_of_slot.scatter_(0, slot.reshape(-1), token_ids)
        wdtype = self.experts.w1.dtype
        x_pad = torch.cat([x.to(wdtype), x.new_zeros(1, M, dtype=wdtype)])
        dispatched = x_pad[token_of_slot[: E * C]].reshape(E, C, M)
        if exchange and W > 1:
            dispatched = all_to_all(dispatched, self.process_group, self.comm)
        # (W, L, C, M): slab w holds rank w's slots for the L local experts (or, without exchange, this rank's
        # slots for experts w·L + l, which local expert l serves).
        local_in = dispatched.reshape(W, L, C, M).transpose(0, 1).reshape(L, W * C, M)
        local_out = self.experts(local_in).reshape(L, W, C, M).transpose(0, 1).reshape(E, C, M)
        if exchange and W > 1:
            local_out = all_to_all(local_out, self.process_group, self.comm)
        out_pad = torch.cat([local_out.reshape(E * C, M), local_out.new_zeros(1, M)])
        picked = out_pad[slot]  # (S, k, M)
        y = (picked * routing.weight.unsqueeze(-1).to(picked.dtype)).sum(1)
        return y.to(x.dtype), routing.l_aux

    def empty_output(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, l_aux) for x with no tokens: (S=0, M) zeros still attached to x's graph, and a 0-D float32 zero."""
        return x * 0, torch.zeros((), dtype=torch.float32, device=x.device)

    def forward_bypass(self, x: torch.Tensor) -> torch.Tensor:
        """No gate, no exchange: token s goes to local expert s mod L with weight 1 (round-robin)."""
        S, M = x.shape
        L = self.num_local
        pad = (-S) % L
        h = x.to(self.experts.w1.dtype)
        if pad:
            h = torch.cat([h, h.new_zeros(pad, M)])
        out = self.experts(h.reshape(-1, L, M).transpose(0, 1)).transpose(0, 1).reshape(-1, M)
        return out[:S].to(x.dtype)


# --------------------------------------------------------------------------------------- data-parallel help


def _is_expert(param: torch.Tensor) -> bool:
    return bool(getattr(param, "expert", False))


@torch.no_grad()
def sync_gradients(model: nn.Module, group: Any) -> None:
    """Make each rank's gradients those of the mean loss over all ranks' tokens.

    Shared (non-expert) gradients are averaged over ``group`` (what DDP does). Expert gradients already hold every
    rank's contribution through the backward all-to-all, so they are divided by W instead of being reduced.
    Call after ``backward`` and before ``optimizer.step``; a no-op for ``group=None``.
    """
    world, _ = group_size_and_rank(group)
    if world == 1:
        return
    shared = [p.grad for p in model.parameters() if p.grad is not None and not _is_expert(p)]
    if shared:
        flat = torch.cat([g.reshape(-1) for g in shared])
        dist.all_reduce(flat, group=group)
        flat /= world
        offset = 0
        for g in shared:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
    for p in model.parameters():
        if p.grad is not None and _is_expert(p):
            p.grad /= world


@torch.no_grad()
def broadcast_shared_parameters(model: nn.Module, group: Any, src: int = 0) -> None:
    """Copy every non-expert parameter and buffer from group rank ``src`` to the others."""
    world, _ = group_size_and_rank(group)
    if world == 1:
        return
    root = dist.get_global_rank(group, src)
    for p in model.parameters():
        if not _is_expert(p):
            dist.broadcast(p.data, src=root, group=group)
    for b in model.buffers():
        dist.broadcast(b, src=root, group=group)
