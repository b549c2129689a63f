"""A small Gating-Dropout MoE layer shared by the MoE tests."""

from __future__ import annotations

import torch

import dropkit
from dropkit.methods.gating_dropout import GatingDropoutMoE

CFG = dict(d_model=8, d_ff=16, num_experts=4)


def make(seed: int = 0, gen_seed: int | None = 1000, **kw) -> GatingDropoutMoE:
    """A ``gating_dropout`` layer of the ``CFG`` size, weights from ``torch.manual_seed(seed)``, its own generator
    seeded with ``gen_seed`` (None: no generator); ``kw`` overrides any parameter."""
    torch.manual_seed(seed)
    params = dict(CFG)
    if gen_seed is not None:
        params["generator"] = torch.Generator().manual_seed(gen_seed)
    params.update(kw)
    return dropkit.create("gating_dropout", **params)


def run_two_ranks(out, *suite: str, timeout: float, world: int = 2) -> list[dict]:
    """Run ``helpers/dist_moe_worker.py`` on ``world`` gloo ranks (``suite`` picks its scenarios) and return each
    rank's saved results; a rank that fails or a run past ``timeout`` seconds (a deadlock) fails the test."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = Path(__file__).resolve().parent / "dist_moe_worker.py"
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), str(world), str(port), str(out), *suite],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
            proc.wait()
        pytest.fail("distributed MoE worker timed out (deadlock?)")
    for r, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {r} failed:\n{logs[r]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]
