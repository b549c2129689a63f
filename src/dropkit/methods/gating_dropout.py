"""Gating Dropout (Liu, Kim, Muzio & Hassan Awadalla, ICML 2022, arXiv:2205.14336) in an expert-parallel MoE layer.

In training, with probability p a whole MoE step skips both all-to-alls and every token is served by the experts
of its own rank; with probability 1 − p the layer routes as usual. Off at inference. Page:
``docs/methods/gating_dropout.md`` (the MoE mechanics live in :mod:`dropkit.moe`).

Readings implemented (the paper's code is not public, so these details are uncertain):

* ``mode="gated_local"`` (default): the public fairseq ``moe_local_drop`` behaviour. The gate runs as usual
  (capacity, combine weights, aux loss); the (E, C, M) buffer is handed to the *local* experts without exchange,
  global expert e being served by local expert e mod L. With one rank this is exactly the base layer.
* ``mode="bypass_gate"``: the paper's literal "tokens ignore the gating network": no gate, no exchange, token s
  goes to local expert s mod L with weight 1 (round-robin); no aux loss on that step.
* ``expert_drop=True`` (Gate-Expert-Drop): on a dropped step the layer also skips its experts and outputs zeros,
  so a residual block passes tokens through (y = x + 0) [a reading; "skip only some local experts" is not
  implemented].
* The decision is drawn once per layer per forward (``granularity="layer"``, fairseq) or once per training step
  for all layers (``granularity="step"``: call :func:`begin_gating_dropout_step` before each step; each layer
  uses that decision in one training forward, and a second training forward without a new step raises). It is
  the same on every rank: ``decision="broadcast"`` (default, fairseq: group rank 0 draws u ~ U(0, 1) and sends
  it) or ``decision="shared_generator"`` (each rank draws from a CPU generator seeded with ``decision_seed``;
  every rank must call the layer the same number of times).
* No 1/(1 − p) rescaling; ``p`` must be the same on every rank (a schedule sets it identically).

With W > 1 ranks every forward starts with one small collective, an ``all_reduce(MAX)`` on the group's device
(:func:`dropkit.moe.group_device`: the GPU under NCCL), before any branch that could differ between ranks. It
carries rank 0's draw (fairseq's broadcast, folded in) and each rank's token count, p and training state, so
that ranks passing different token counts (the all-to-all needs equal slabs) or holding different p get the same
``ValueError`` on every rank instead of a deadlock in a later collective. Checking instead of padding keeps the
capacity C = ceil(k·S/E·cf) of each rank what its own S says, and costs the same single collective as fairseq's
all-reduce of the padded size; padding would also need every padded token masked out of routing and aux loss.

With one rank, the ``gated_local`` draw cannot change the output and is skipped, so that default layer compiles
with ``torch.compile(fullgraph=True)``. Every other dropped-step decision is a host-side branch (its point is to
skip a collective) and breaks a compiled graph there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dropkit import moe as _moe  # group_device looked up at call time (tests replace it)
from dropkit.base import DropkitModule
from dropkit.moe import CommStats, MoELayer, group_size_and_rank
from dropkit.registry import register
from dropkit.validation import (
    check_bool, check_choice, check_float_tensor, check_ndim, check_positive_int, check_real,
)

__all__ = ["GatingDropoutMoE", "begin_gating_dropout_step", "moe_aux_loss", "moe_comm_stats", "reset_moe_comm_stats"]

_NAME = "gating_dropout"
MODES = ("gated_local", "bypass_gate")
DECISIONS = ("broadcast", "shared_generator")
GRANULARITIES = ("layer", "step")


@register(
    _NAME,
    family="experts",
    kind="block",
    paper="Liu, Kim, Muzio & Hassan Awadalla, ICML 2022, arXiv:2205.14336",
    summary="MoE FFN layer; with probability p a step skips the all-to-all and tokens use their rank's local experts",
    taxonomy={"element": "architecture", "space": "routing", "theta": "p(θ)", "sampling": "random",
              "unit": "expert", "phase": "train", "generality": "domain-specific"},
)
class GatingDropoutMoE(DropkitModule):
    """Mixture-of-Experts feed-forward layer with Gating Dropout; (N, T, d_model) or (S, d_model) → same shape.

    Args:
        d_model, d_ff: token width and expert hidden width.
        num_experts: E, the global number of experts; must be divisible by the process group's size W.
        k: 1 (Switch) or 2 (GShard).
        p: Gating Dropout rate (0.3, the value usually cited for Gate-Drop).
        mode: ``"gated_local"`` or ``"bypass_gate"`` (see the module docstring).
        expert_drop: Gate-Expert-Drop: a dropped step outputs zeros.
        granularity: ``"layer"`` or ``"step"``; decision: ``"broadcast"`` or ``"shared_generator"``;
            decision_seed: seed of the shared generator.
        capacity_factor, eval_capacity_factor: 1.0 and 2.0 (Switch, the paper's setting); min_capacity: floor of C.
        noisy_gate: ``"jitter"`` (multiplicative U(1-ε, 1+ε) on the router input, the paper's choice),
            ``"rsample"`` (Gumbel top-1) or None; jitter_eps: ε.
        use_rts: Random Token Selection for top-1 capacity drops; drop_tokens: False sizes C to the largest load
            of the actual (noisy) choices, so no token is dropped (one all-reduce and a host sync per forward).
        aux_loss_coef: weight used by :func:`moe_aux_loss` (Switch's α = 1e-2).
        activation: ``"relu"`` or ``"gelu"`` inside the experts.
        process_group: expert-parallel group (``torch.distributed``) or None for one process.
        generator: optional generator for jitter, token selection and the broadcast draw.

    After each forward: ``aux_loss`` (0-D float32, the raw load-balancing loss, 0 on a step with no gate or no
    tokens), ``routed`` (whether the gate ran), ``last_dropped``; ``comm`` counts all-to-all calls and bytes.
    An input with no tokens gives the empty output.
    """

    repr_fields = ("d_model", "d_ff", "num_experts", "k", "mode", "expert_drop", "world_size")

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        num_experts: int = 8,
        k: int = 1,
        p: float = 0.3,
        mode: str = "gated_local",
        expert_drop: bool = False,
        granularity: str = "layer",
        decision: str = "broadcast",
        decision_seed: int = 0,
        capacity_factor: float = 1.0,
        eval_capacity_factor: float = 2.0,
        min_capacity: int = 4,
        noisy_gate: str | None = "jitter",
        jitter_eps: float = 1e-2,
        use_rts: bool = True,
        drop_tokens: bool = True,
        aux_loss_coef: float = 1e-2,
        activation: str = "relu",
        process_group: Any = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator=generator)
        n = _NAME
        d_model = check_positive_int(d_model, "d_model", n)
        d_ff = check_positive_int(d_ff, "d_ff", n)
        num_experts = check_positive_int(num_experts, "num_experts", n)
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"{n}: k must be the int 1 or 2, got {k!r}")
        k = check_choice(k, "k", n, (1, 2))
        if k > num_experts:
            raise ValueError(f"{n}: k must be ≤ num_experts = {num_experts}, got {k}")
        self.mode = check_choice(mode, "mode", n, MODES)
        self.expert_drop = check_bool(expert_drop, "expert_drop", n)
        self.granularity = check_choice(granularity, "granularity", n, GRANULARITIES)
        self.decision = check_choice(decision, "decision", n, DECISIONS)
        if isinstance(decision_seed, bool) or not isinstance(decision_seed, int):
            raise TypeError(f"{n}: decision_seed must be an int, got {decision_seed!r}")
        capacity_factor = check_real(capacity_factor, "capacity_factor", n, low=0.0, low_open=True)
        eval_capacity_factor = check_real(eval_capacity_factor, "eval_capacity_factor", n, low=0.0, low_open=True)
        min_capacity = check_positive_int(min_capacity, "min_capacity", n, minimum=0)
        check_choice(noisy_gate, "noisy_gate", n, ("jitter", "rsample", None))
        if noisy_gate == "rsample" and k != 1:
            raise ValueError(f"{n}: noisy_gate='rsample' is defined for k=1 only, got k={k}")
        jitter_eps = check_real(jitter_eps, "jitter_eps", n, low=0.0, high=1.0, high_open=True)
        check_bool(use_rts, "use_rts", n)
        check_bool(drop_tokens, "drop_tokens", n)
        self.aux_loss_coef = check_real(aux_loss_coef, "aux_loss_coef", n, low=0.0)
        check_choice(activation, "activation", n, ("relu", "gelu"))
        if process_group is not None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError(f"{n}: process_group was given but torch.distributed is not initialised")
            if not isinstance(process_group, dist.ProcessGroup):
                raise TypeError(f"{n}: process_group must be a torch.distributed ProcessGroup or None, "
                                f"got {type(process_group).__name__}")
        world, _ = group_size_and_rank(process_group)
        if num_experts % world:
            raise ValueError(f"{n}: num_experts must be divisible by the process group's size {world}, got {num_experts}")
        self.moe = MoELayer(d_model, d_ff, num_experts, k=k, capacity_factor=capacity_factor,
                            eval_capacity_factor=eval_capacity_factor, min_capacity=min_capacity,
                            noisy_gate=noisy_gate, jitter_eps=jitter_eps, use_rts=use_rts, drop_tokens=drop_tokens,
                            activation=activation, process_group=process_group)
        self.decision_seed = decision_seed
        self._shared_gen = torch.Generator().manual_seed(decision_seed)
        self._step_drop: bool | None = None
        self.aux_loss = torch.zeros((), dtype=torch.float32)
        self.routed = False
        self.last_dropped = False
        self.decisions = 0  # decisions drawn (host counters, for the drop-frequency check)
        self.drops = 0

    # -- shape of the layer
    d_model = property(lambda self: self.moe.d_model)
    d_ff = property(lambda self: self.moe.d_ff)
    num_experts = property(lambda self: self.moe.num_experts)
    k = property(lambda self: self.moe.k)
    world_size = property(lambda self: self.moe.world_size)
    num_local_experts = property(lambda self: self.moe.num_local)

    @property
    def comm(self) -> CommStats:
        """All-to-all calls and bytes of this layer (forward and backward) since the last ``comm.reset()``."""
        return self.moe.comm

    # -- the decision
    def _decision_matters(self) -> bool:
        return self.world_size > 1 or self.mode == "bypass_gate" or self.expert_drop

    def draw_drop(self) -> bool:
        """One Bernoulli(p) decision, identical on every rank of the group (a collective in broadcast mode)."""
        u = self._draw_u()
        if self.decision == "broadcast" and self.world_size > 1:
            u = self._agree(u, num_tokens=0)
        return self._decide(u)

    def _draw_u(self) -> float:
        """This rank's u ~ U(0, 1) (every rank draws, so the layer generators advance alike on all ranks)."""
        gen = self._shared_gen if self.decision == "shared_generator" else self.generator
        return float(torch.rand((1,), generator=gen, device=gen.device if gen is not None else "cpu").item())

    def _decide(self, u: float) -> bool:
        drop = self.active and u < self.p
        self.decisions += 1
        self.drops += int(drop)
        return drop

    def _agree(self, u: float | None, num_tokens: int) -> float:
        """The one collective of a W > 1 call; returns group rank 0's u (-1 when it sent none).

        ``all_reduce(MAX)`` on the group's device of [u of rank 0 (others -1), n, -n, p, -p, t, -t], t = 1 when
        training with p > 0: max and min of each value over the ranks, so every rank sees the same mismatch and
        raises the same error (no rank is left waiting in a later collective).
        """
        group = self.moe.process_group
        active = self.active
        mine = [u if (u is not None and self.moe.rank == 0) else -1.0, num_tokens, -num_tokens,
                self.p, -self.p, float(active), -float(active)]
        t = torch.tensor(mine, dtype=torch.float64).to(_moe.group_device(group))
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        u0, n_max, n_min, p_max, p_min, t_max, t_min = t.tolist()
        n_min, p_min, t_min = -n_min, -p_min, -t_min
        if n_max != n_min:
            raise ValueError(f"{_NAME}: every rank of the process group must pass the same number of tokens (the "
                             f"all-to-all exchanges equal slabs); the ranks passed between {int(n_min)} and "
                             f"{int(n_max)} tokens (N·T) in this call")
        if t_max != t_min:
            raise ValueError(f"{_NAME}: some ranks are training with p > 0 and others are not (eval mode, p = 0 "
                             f"or disabled); every rank must be in the same mode with the same p")
        if active and p_max != p_min:
            raise ValueError(f"{_NAME}: p must be the same on every rank of the process group; the ranks hold p "
                             f"between {p_min!r} and {p_max!r} (set it identically, e.g. by the same schedule)")
        return u0

    def _dropped(self, num_tokens: int) -> bool:
        """This forward's decision; with W > 1 ranks, also the forward's agreement collective (always run)."""
        u = None
        drop = False
        if self.active:
            if self.granularity == "step":
                if self._step_drop is None:
                    raise RuntimeError(f"{_NAME}: granularity='step' needs begin_gating_dropout_step(model) before "
                                       "each training step (each layer uses a step's decision in one forward)")
                drop, self._step_drop = self._step_drop, None
            elif self._decision_matters():
                u = self._draw_u()
        if self.world_size > 1:
            u0 = self._agree(u if self.decision == "broadcast" else None, num_tokens)
            if self.decision == "broadcast" and u is not None:
                u = u0
        if u is not None:
            drop = self._decide(u)
        return drop

    # -- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, _NAME)
        check_ndim(x, _NAME, (2, 3), "(N, T, d_model) or (S, d_model)")
        if x.shape[-1] != self.d_model:
            raise ValueError(f"{_NAME}: input's last dimension must be d_model = {self.d_model}, got {x.shape[-1]}")
        flat = x.reshape(-1, self.d_model)
        gen = self._generator_for(x)
        drop = self._dropped(flat.shape[0])
        if flat.shape[0] == 0:  # nothing to route (on every rank: _dropped checked the counts agree)
            y, aux = self.moe.empty_output(flat)
            self.aux_loss, self.routed, self.last_dropped = aux, False, drop
            return y.reshape(x.shape)
        if drop and self.expert_drop:
            y, aux, routed = torch.zeros_like(flat), torch.zeros((), device=x.device), False
        elif drop and self.mode == "bypass_gate":
            y, aux, routed = self.moe.forward_bypass(flat), torch.zeros((), device=x.device), False
        else:
            y, aux = self.moe.forward_routed(flat, exchange=not drop, generator=gen)
            routed = True
        self.aux_loss, self.routed, self.last_dropped = aux, routed, drop
        return y.reshape(x.shape)

    # -- serialisation of the regularizer's settings and of the shared decision stream
    def get_extra_state(self) -> dict[str, Any]:
        return {"p": self.p, "mode": self.mode, "expert_drop": self.expert_drop, "granularity": self.granularity,
                "decision": self.decision, "decision_seed": self.decision_seed,
                "shared_generator_state": self._shared_gen.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.p = state["p"]
        self.mode = check_choice(state["mode"], "mode", _NAME, MODES)
        self.expert_drop = check_bool(state["expert_drop"], "expert_drop", _NAME)
        self.granularity = check_choice(state["granularity"], "granularity", _NAME, GRANULARITIES)
        self.decision = check_choice(state["decision"], "decision", _NAME, DECISIONS)
        self.decision_seed = state["decision_seed"]
        self._shared_gen.set_state(state["shared_generator_state"])


# ----------------------------------------------------------------------------------------- model-level help


def _layers(model: nn.Module) -> Iterator[GatingDropoutMoE]:
    return (m for m in model.modules() if isinstance(m, GatingDropoutMoE))


def begin_gating_dropout_step(model: nn.Module) -> bool | None:
    """Draw one decision for every ``granularity="step"`` layer of ``model`` (call on every rank, once per step).

    Each such layer uses the decision in its next training forward; a second training forward before the next
    call raises. Returns the decision, or None when no layer needs one (none active, or one rank with
    ``gated_local``, where the decision cannot change the output). The first deciding layer's settings
    (decision mechanism, p, group) are used for the draw. A layer on W > 1 ranks takes part whether or not it is
    active on this rank, so that every rank enters the broadcast draw and a p or mode mismatch raises there.
    """
    layers = [m for m in _layers(model) if m.granularity == "step"]
    deciders = [m for m in layers if m._decision_matters() and (m.active or m.world_size > 1)]
    drop = deciders[0].draw_drop() if deciders else None
    for m in layers:
        m._step_drop = bool(drop)
    return drop


def moe_aux_loss(model: nn.Module) -> torch.Tensor:
    """Σ coef·aux over the layers whose gate ran in their last forward, divided by how many did.

    Averaging over the routed layers only keeps the aux weight from shrinking by (1 − p) under ``bypass_gate`` or
    ``expert_drop`` (a library choice). 0 when no layer routed.
    """
    terms = [m.aux_loss_coef * m.aux_loss for m in _layers(model) if m.routed]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum() / len(terms)


def moe_comm_stats(model: nn.Module) -> dict[str, int]:
    """All-to-all calls and bytes summed over the MoE layers of ``model`` since the last reset."""
    total = {"calls": 0, "bytes_sent": 0, "buffer_bytes": 0}
    for m in _layers(model):
        for key, value in m.comm.as_dict().items():
            total[key] += value
    return total


def reset_moe_comm_stats(model: nn.Module) -> None:
    for m in _layers(model):
        m.comm.reset()
