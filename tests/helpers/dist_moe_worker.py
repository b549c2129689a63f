"""One rank of the 2-process gloo checks of ``gating_dropout`` (launched by tests/methods/test_gating_dropout.py).

Usage: python dist_moe_worker.py RANK WORLD_SIZE PORT OUT_DIR [SUITE]

SUITE ``checks`` (default, tests/methods/test_gating_dropout.py): every scenario builds its layer after
``torch.manual_seed(0)`` on every rank, so the rank's experts are the slice of the one-process layer built with
that seed; the test recomputes the one-process reference and compares.
SUITE ``reliability`` (tests/test_moe_reliability.py): a long run at p = 0.5 and the rank-mismatch errors.
The rank saves what it saw to OUT_DIR/rank{RANK}.pt; all assertions live in the tests.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

import dropkit
from dropkit.methods.gating_dropout import begin_gating_dropout_step, moe_aux_loss
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
    suite = sys.argv[5] if len(sys.argv) > 5 else "checks"
    torch.set_num_threads(1)
    # A short collective timeout turns a deadlock into an error well inside the tests' own timeouts.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    group = dist.group.WORLD
    res = reliability(rank, group) if suite == "reliability" else checks(rank, group)
    torch.save(res, f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def error_of(call) -> str | None:
    """The ValueError message of ``call()``, or None when it returned."""
    try:
        call()
    except ValueError as err:
        return str(err)
    return None


def long_run(rank: int, group, steps: int = 1000) -> dict:
    """``steps`` training steps at p = 0.5 of a two-layer model (a per-layer broadcast decision and a per-step
    decision), tiny dims, with backward and gradient sync (the optimizer, which makes no collective, is left out)."""
    tiny = dict(d_model=4, d_ff=4, num_experts=2, p=0.5, process_group=group)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        dropkit.create("gating_dropout", **tiny, generator=torch.Generator().manual_seed(7 + rank)),
        dropkit.create("gating_dropout", **tiny, mode="bypass_gate", granularity="step"))
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(rank))
    layer_drops, step_drops = [], []
    t0 = time.perf_counter()
    for _ in range(steps):
        begin_gating_dropout_step(model)
        loss = model(x).square().mean() + moe_aux_loss(model)
        model.zero_grad()
        loss.backward()
        sync_gradients(model, group)
        layer_drops.append(model[0].last_dropped)
        step_drops.append(model[1].last_dropped)
    return {"layer_drops": layer_drops, "step_drops": step_drops, "seconds": time.perf_counter() - t0,
            "finite": all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)}


def stepped(model, x: torch.Tensor) -> torch.Tensor:
    begin_gating_dropout_step(model)
    return model(x)


def reliability(rank: int, group) -> dict:
    res: dict = {"long_run": long_run(rank, group)}
    small = dict(CFG, process_group=group)

    def layer(**kw):
        torch.manual_seed(0)
        return dropkit.create("gating_dropout", **dict(small, **kw))

    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(rank))
    uneven = x[:, : 6 - rank]  # rank 0: 12 tokens, rank 1: 10
    res["uneven_tokens"] = {
        "train": error_of(lambda: layer(p=0.3)(uneven)),
        "eval": error_of(lambda: layer(p=0.3).eval()(uneven)),
        "no_drop": error_of(lambda: layer(p=0.0, drop_tokens=False)(uneven)),
    }
    p_rank = 0.3 + 0.2 * rank
    res["uneven_p"] = {
        "broadcast": error_of(lambda: layer(p=p_rank)(x)),
        "shared_generator": error_of(lambda: layer(p=p_rank, decision="shared_generator")(x)),
        "step": error_of(lambda: begin_gating_dropout_step(layer(p=p_rank, granularity="step"))),
        "step_shared_generator": error_of(lambda: stepped(layer(p=p_rank, granularity="step",
                                                                decision="shared_generator"), x)),
        "p0_on_one_rank": error_of(lambda: layer(p=0.3 * rank)(x)),
        "train_eval": error_of(lambda: layer(p=0.3).train(rank == 0)(x)),
    }
    # After the errors the ranks are still in step: a matching call runs.
    res["after_errors"] = layer(p=0.5)(x).shape

    # drop_tokens=False: every (noisy) choice kept, one capacity for the group.
    routing = layer(k=2, drop_tokens=False).moe.route(x.reshape(-1, 8) * 3)
    res["no_drop"] = {"capacity": routing.capacity, "all_kept": bool(routing.kept.all()),
                      "load": torch.bincount(routing.expert.reshape(-1), minlength=CFG["num_experts"]).tolist()}
    y = layer(k=2, drop_tokens=False, p=0.5)(x)
    res["no_drop"]["forward_finite"] = bool(torch.isfinite(y).all())

    # Empty batch on every rank.
    empty = layer(k=2, p=0.5)
    y = empty(torch.randn(0, 6, 8))
    res["empty"] = {"shape": tuple(y.shape), "aux": float(empty.aux_loss)}
    return res


def checks(rank: int, group) -> dict:
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
    return res


if __name__ == "__main__":
    main()
