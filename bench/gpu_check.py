"""CUDA correctness check of every activation method and of the blocks (run on a machine with a GPU).

For each registered activation method, on CUDA, float32 and bfloat16, contiguous and channels_last: the output
is finite and keeps dtype and memory format, eval is the identity, the same CUDA generator seed gives the same
output, and the backward pass gives finite gradients. Then DropBlock's drop fraction (sparse and dense samplers)
and dropout's on CUDA, a fullgraph inductor compile of the cheap methods, and the MoE / soft-tree blocks.
Prints one line per check and a final count; exits 1 if anything failed.

    PYTHONPATH=src python3 bench/gpu_check.py
"""

from __future__ import annotations

import sys
import time
import traceback

import torch

import dropkit

failures: list[str] = []


def check(name: str, fn) -> None:
    try:
        note = fn()
        print(f"ok    {name}{'  ' + note if note else ''}", flush=True)
    except Exception as err:  # report every failure, keep going
        failures.append(name)
        print(f"FAIL  {name}: {type(err).__name__}: {err}", flush=True)
        traceback.print_exc(limit=2)


def method_on_cuda(name: str, dtype: torch.dtype, channels_last: bool):
    def run() -> str:
        x = torch.rand(8, 32, 16, 16, device="cuda", dtype=dtype) + 0.05
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        for _ in range(2):
            layer = dropkit.create(name, generator=torch.Generator(device="cuda").manual_seed(3)).cuda().train()
            xi = x.clone().requires_grad_()
            y = layer(xi)
            y.float().sum().backward()
            outs.append(y.detach())
            assert y.dtype == dtype, f"dtype {y.dtype}"
            assert torch.isfinite(y.float()).all() and torch.isfinite(xi.grad.float()).all(), "non-finite"
            if channels_last:
                assert y.is_contiguous(memory_format=torch.channels_last), "channels_last lost"
        assert torch.equal(outs[0], outs[1]), "same generator seed, different output"
        layer.eval()
        assert torch.equal(layer(x), x), "eval is not the identity"
        return ""
    return run


def drop_fraction(name: str, **kw):
    def run() -> str:
        x = torch.ones(32, 16, 56, 56, device="cuda")
        g = torch.Generator(device="cuda").manual_seed(0)
        if name == "dropblock":
            y = dropkit.dropblock(x, 0.1, 7, scale_by_keep=False, generator=g, **kw)
            frac = (y == 0).float().mean().item()
            assert 0.07 < frac <= 0.1, frac
        else:
            y = dropkit.dropout(x, 0.3, generator=g)
            frac = (y == 0).float().mean().item()
            assert abs(frac - 0.3) < 0.005, frac
        return f"drop fraction {frac:.4f}"
    return run


def compiled(name: str):
    def run() -> str:
        layer = dropkit.create(name).cuda().train()
        x = torch.randn(64, 64, 16, 16, device="cuda", requires_grad=True)
        fast = torch.compile(layer, fullgraph=True)
        for f in (layer, fast):
            for _ in range(3):
                f(x).sum().backward()
        times = {}
        for label, f in (("eager", layer), ("inductor", fast)):
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(50):
                f(x).sum().backward()
            torch.cuda.synchronize()
            times[label] = (time.perf_counter() - start) / 50 * 1e3
        return f"eager {times['eager']:.3f} ms, inductor {times['inductor']:.3f} ms (fwd+bwd, 64x64x16x16)"
    return run


def blocks() -> str:
    moe = dropkit.create("gating_dropout", d_model=64, d_ff=128, num_experts=4, k=2, p=0.3).cuda().train()
    x = torch.randn(4, 32, 64, device="cuda", requires_grad=True)
    y = moe(x)
    (y.sum() + moe.aux_loss).backward()
    assert y.shape == x.shape and torch.isfinite(x.grad).all()
    tree = dropkit.create("hme_dropout", in_features=16, depth=4, p=0.2).cuda().train()
    z = tree(torch.randn(32, 16, device="cuda"))
    assert torch.isfinite(z).all()
    return f"moe aux_loss {float(moe.aux_loss.detach()):.3f}"


def main() -> int:
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    names = [c.name for c in dropkit.methods(kind="activation")]
    for name in names:
        for dtype in (torch.float32, torch.bfloat16):
            for cl in (False, True):
                check(f"{name} {str(dtype)[6:]} {'channels_last' if cl else 'contiguous'}", method_on_cuda(name, dtype, cl))
    for alg in ("sparse", "dense"):
        check(f"dropblock drop fraction ({alg})", drop_fraction("dropblock", algorithm=alg))
    check("dropout drop fraction", drop_fraction("dropout"))
    for name in ("dropout", "spatial_dropout", "dropblock", "drop_path"):
        check(f"inductor compile {name}", compiled(name))
    check("gating_dropout and hme_dropout blocks", blocks)
    print(f"\n{len(failures)} failed: {', '.join(failures) if failures else 'none'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
