"""One rank of the 2-process gloo checks of ``gating_dropout`` (launched by tests/test_gating_dropout.py).

Usage: python dist_moe_worker.py RANK WORLD_SIZE PORT OUT_DIR

Every scenario builds its layer after ``torch.manual_seed(0)`` on every rank, so the rank's experts are the slice
of the one-process layer built with that seed; the test recomputes the one-process reference and compares.
The rank saves what it saw to OUT_DIR/rank{RANK}.pt; all assertions live in the test.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

import dropkit
from dropkit.methods.gating_dropout import begin_gating_dropout_step
from dropkit.moe import sync_gradients

CFG = dict(d_model=8, d_ff=16, num_experts=4)
SHAPE = (2, 6, 8)  # 12 tokens per rank
TIGHT = dict(capacity_factor=0.5, min_capacity=1)


class A2ASpy:
    """Counts calls of dist.all_to_all_single while installed."""

    def __init__(self) -> None:
        self.calls = 0
        self._orig = dist.all_to_all_single

    def __enter__(self) -> "A2ASpy":
        def spy(*args, **kwargs):
            self.calls += 1
            return self._orig(*args, **kwargs)

        dist.all_to_all_single = spy
        return self

    def __exit__(self, *exc) -> None:
        dist.all_to_all_single = self._orig


def make(rank: int, group, **kw):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1000 + rank)
    params = dict(CFG, process_group=group, generator=gen)
    params.update(kw)
    return dropkit.create("gating_dropout", **params)


def inputs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


def grads(layer) -> dict[str, torch.Tensor | None]:
    return {name: (p.grad.clone() if p.grad is not None else None) for name, p in layer.named_parameters()}


def run_step(layer, x, gout, with_aux: bool = True) -> dict:
    x = x.clone().requires_grad_(True)
    layer.comm.reset()
    y = layer(x)
    fwd = layer.comm.as_dict()
    # (0·Σx keeps the graph alive when Gate-Expert-Drop returns constant zeros; it adds exactly 0 to x.grad.)
    loss = (y * gout).sum() + (layer.aux_loss if with_aux else 0.0) + 0.0 * x.sum()
    loss.backward()
    return {"y": y.detach(), "x_grad": x.grad.clone(), "aux": layer.aux_loss.detach().clone(),
            "grads": grads(layer), "comm_forward": fwd, "comm_step": layer.comm.as_dict(),
            "dropped": layer.last_dropped}


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    group = dist.group.WORLD
    x, gout = inputs(rank)
    res: dict = {}

    # Routed path, top-1 and top-2, jitter and RTS on (same generator seeds as the reference), p = 0, with a
    # small capacity so that tokens are dropped.
    for k in (1, 2):
        layer = make(rank, group, k=k, p=0.0, **TIGHT)
        res[f"routed_k{k}"] = run_step(layer, x, gout)
        sync_gradients(layer, group)
        res[f"routed_k{k}"]["synced"] = grads(layer)

    # Eval ignores p: always routed with all-to-all, eval capacity.
    layer = make(rank, group, k=1, p=0.3)
    layer.eval()
    with A2ASpy() as spy:
        res["eval_p03"] = {"y": layer(x).detach(), "a2a_calls": spy.calls, "dropped": layer.last_dropped}
    layer = make(rank, group, k=1, p=1.0)
    layer.eval()
    with A2ASpy() as spy:
        res["eval_p1"] = {"y": layer(x).detach(), "a2a_calls": spy.calls}

    # p = 1, gated_local: no all-to-all in forward or backward, local experts serve every slot.
    # (The shared-generator decision leaves the layer's generator to the router, as in the reference.)
    layer = make(rank, group, k=1, p=1.0, decision="shared_generator")
    with A2ASpy() as spy:
        res["local"] = run_step(layer, x, gout)
        for _ in range(2):
            run_step(layer, x, gout)
        res["local"]["a2a_calls"] = spy.calls

    # bypass_gate with one expert per rank.
    layer = make(rank, group, k=1, p=1.0, num_experts=2, mode="bypass_gate", decision="shared_generator")
    with A2ASpy() as spy:
        res["bypass"] = run_step(layer, x, gout)
        res["bypass"]["a2a_calls"] = spy.calls

    # Gate-Expert-Drop.
    layer = make(rank, group, k=1, p=1.0, expert_drop=True, decision="shared_generator")
    with A2ASpy() as spy:
        res["expert_drop"] = run_step(layer, x, gout, with_aux=False)
        res["expert_drop"]["a2a_calls"] = spy.calls

    # Rank agreement over 100 steps, both decision mechanisms, training forwards with backward.
    for decision in ("broadcast", "shared_generator"):
        layer = make(rank, group, k=1, p=0.5, decision=decision, d_ff=8)
        seen = []
        for _ in range(100):
            y = layer(x)
            y.sum().backward()
            seen.append(layer.last_dropped)
        res[f"agree_{decision}"] = seen

    # One decision per step shared by two layers.
    torch.manual_seed(0)
    model = torch.nn.Sequential(make(rank, group, p=0.5, granularity="step"),
                                make(rank, group, p=0.5, granularity="step"))
    steps = []
    for _ in range(30):
        begin_gating_dropout_step(model)
        model(x).sum().backward()
        steps.append((model[0].last_dropped, model[1].last_dropped))
    res["step_granularity"] = steps

    torch.save(res, f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
