"""Training-step overhead of the stateful methods (``dropkit bench --steps``).

A stateful method's cost is not its forward alone: Neuron-Specific Dropout runs a validation batch through the
model every step, clustering dropout re-clusters every T steps, Structural Dropout changes the width. So this
times whole training steps — validation feed, supervised forward, backward, optimizer step, statistics update,
exactly what ``dropkit.protocol``'s example loop does — of a plain MLP (784–512–512–10, batch 64) with each
method attached after both hidden layers, side by side with the same MLP without a method and with
``nn.Dropout``, interleaved round by round. Re-clustering is amortised by timing whole multiples of T.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

import dropkit
from dropkit import protocol

HIDDEN = ("relu1", "relu2")
# Per method: parameters for the bench (clustering: T = 10 steps, so a round of 10 steps holds one re-clustering).
STEP_METHODS: dict[str, dict] = {
    "ns_dropout": {"num_classes": 10},
    "clustering_dropout": {"update_every": 10},
    "structural_dropout": {"lower_bound": 32},
    "guided_dropout": {},
}
STEPS_PER_ROUND = 10


def _mlp() -> nn.Module:
    """Flatten → Linear(784, 512) → ReLU → Linear(512, 512) → ReLU → Linear(512, 10), seeded (methods go after
    each ReLU). Its own, so the core's benchmark does not depend on the lab."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(784, 512)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(512, 512)), ("relu2", nn.ReLU()), ("head", nn.Linear(512, 10)),
    ]))


def _step_fn(method: str | None, data) -> Callable[[], None]:
    model = _mlp()
    if method == "nn.Dropout":
        for name in HIDDEN:
            model.get_submodule(name).register_forward_hook(lambda m, a, out, d=nn.Dropout(0.5): d(out))
    elif method is not None:
        dropkit.attach(model, method, at=list(HIDDEN), **STEP_METHODS[method])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y, xv, yv = data
    model.train()

    def steps() -> None:
        for _ in range(STEPS_PER_ROUND):
            if protocol.wants_validation(model):
                protocol.feed_validation(model, xv, yv)
            with protocol.supervise(model, y):
                loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            protocol.step_statistics(model)

    steps()  # warm-up (and the first statistics) outside the timing
    return steps


def run_step_benchmark(rounds: int = 10, out=sys.stdout) -> list[dict]:
    """Median time of one training step per arm and its ratio to the plain MLP's step."""
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g),
            torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))
    arms: dict[str, Callable[[], None]] = {"none": _step_fn(None, data), "nn.Dropout": _step_fn("nn.Dropout", data)}
    arms.update({m: _step_fn(m, data) for m in STEP_METHODS})
    samples: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(rounds):
        for name, fn in arms.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) / STEPS_PER_ROUND)
    median = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    rows = [{"name": k, "step_ms": v, "vs_plain": v / median["none"]} for k, v in median.items()]
    print(f"\ntraining step, MLP 784-512-512-10, batch 64, methods after both hidden layers, "
          f"median of {rounds} rounds of {STEPS_PER_ROUND} steps", file=out)
    print(f"{'method':<22}{'step ms':>9}{'/plain step':>13}", file=out)
    print("-" * 44, file=out)
    for r in rows:
        print(f"{r['name']:<22}{r['step_ms']:>9.3f}{r['vs_plain']:>13.2f}", file=out)
    return rows
