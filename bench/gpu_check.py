"""CUDA check of every activation method: correctness, then speed at the shapes people train (one prepared run).

Sections, each time-boxed so that the whole run fits its budget (default 450 s: inside 8 minutes of device time
with the machine's start-up); an entry that does not fit is printed as "skipped (time box)", never silently
dropped. Methods run in priority order (the cheap, widely used ones first), so a cut loses the least.

1. ``correctness``: per method, float32 and bfloat16, contiguous and channels_last: finite output and gradients,
   dtype and memory format kept, eval identity, the same generator seed gives the same output; DropBlock's and
   dropout's drop fractions; ``recompute=True`` gives the stored-mask gradient bit for bit; the MoE and soft-tree
   blocks.
2. ``eager``: forward + backward at ResNet-50 stage shapes, batch 128, bfloat16, channels_last —
   (128, 256, 56, 56), (128, 512, 28, 28), (128, 1024, 14, 14), (128, 2048, 7, 7) — and a 3-D U-Net volume
   (2, 32, 128, 128, 128). Yardsticks in the same run: a same-size ``x * y`` forward + backward (the bandwidth
   floor: no masking method can beat it), ``nn.Dropout`` and the textbook DropBlock.
3. ``compile``: the same under ``torch.compile(fullgraph=True)`` (inductor).
4. ``graphs``: ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) at the small shapes, where launches dominate.

Targets printed per row: every activation method ≤ 2× the ``x * y`` floor; DropBlock ≥ 3× faster than the
textbook algorithm. Exits 1 if a correctness check failed (missed speed targets are reported, not fatal).

    PYTHONPATH=src python3 bench/gpu_check.py              # on a GPU machine
    PYTHONPATH=src python3 bench/gpu_check.py --smoke      # CPU, tiny shapes, seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import dropkit  # noqa: E402
from dropkit.bench import TextbookDropBlock  # noqa: E402

RESNET_SHAPES = ((128, 256, 56, 56), (128, 512, 28, 28), (128, 1024, 14, 14), (128, 2048, 7, 7))
UNET_SHAPE = (2, 32, 128, 128, 128)
SMALL_SHAPES = ((128, 1024, 14, 14), (128, 2048, 7, 7))  # CUDA graphs only here: launch-bound sizes
SMOKE_SHAPES = ((2, 8, 8, 8), (1, 4, 6, 6, 6))
# Cheap, widely used methods first: a time-box cut then loses the least.
PRIORITY = ("dropout", "dropblock", "spatial_dropout", "drop_path", "gaussian_dropout")
SMOKE_METHODS = ("dropout", "dropblock", "gaussian_dropout")
FLOOR_LIMIT = 2.0  # every activation method ≤ 2× the x * y floor
DROPBLOCK_SPEEDUP = 3.0  # DropBlock ≥ 3× faster than the textbook algorithm
# Share of the budget per section (what is left over from one section rolls into the next).
SECTION_SHARE = {"correctness": 0.12, "eager": 0.30, "compile": 0.40, "graphs": 0.18}

failures: list[str] = []


class Clock:
    """Section deadlines out of one overall budget."""

    def __init__(self, budget_s: float) -> None:
        self.start, self.budget = time.monotonic(), budget_s
        self.deadline = self.start

    def open_section(self, name: str, sections: list[str]) -> None:
        remaining = self.budget - (time.monotonic() - self.start)
        later = sum(SECTION_SHARE[s] for s in sections[sections.index(name):])
        self.deadline = time.monotonic() + remaining * SECTION_SHARE[name] / later
        print(f"\n== {name} (time box {self.deadline - time.monotonic():.0f} s) ==", flush=True)

    def expired(self) -> bool:
        return time.monotonic() > self.deadline


def check(name: str, fn: Callable[[], str], clock: Clock) -> None:
    if clock.expired():
        print(f"skip  {name}: skipped (time box)", flush=True)
        return
    try:
        note = fn()
        print(f"ok    {name}{'  ' + note if note else ''}", flush=True)
    except Exception as err:  # report every failure, keep going
        failures.append(name)
        print(f"FAIL  {name}: {type(err).__name__}: {err}", flush=True)
        traceback.print_exc(limit=2)


def _generator(device: str, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def method_correct(name: str, dtype: torch.dtype, channels_last: bool, device: str) -> Callable[[], str]:
    def run() -> str:
        x = torch.rand(8, 32, 16, 16, device=device, dtype=dtype) + 0.05
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        for _ in range(2):
            layer = dropkit.create(name, generator=_generator(device, 3)).to(device).train()
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


def drop_fraction(name: str, device: str, **kw) -> Callable[[], str]:
    def run() -> str:
        x = torch.ones(32, 16, 56, 56, device=device)
        g = _generator(device, 0)
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


def recompute_identical(name: str, device: str) -> Callable[[], str]:
    def run() -> str:
        x = torch.randn(16, 32, 28, 28, device=device, dtype=torch.bfloat16)
        results = []
        for recompute in (False, True):
            torch.manual_seed(5)
            xi = x.clone().requires_grad_()
            y = dropkit.create(name, recompute=recompute).to(device).train()(xi)
            y.float().sum().backward()
            results.append((y.detach(), xi.grad))
        assert torch.equal(results[0][0], results[1][0]), "output differs"
        assert torch.equal(results[0][1], results[1][1]), "gradient differs"
        return "bit-identical output and gradient"
    return run


def blocks(device: str) -> str:
    moe = dropkit.create("gating_dropout", d_model=64, d_ff=128, num_experts=4, k=2, p=0.3).to(device).train()
    x = torch.randn(4, 32, 64, device=device, requires_grad=True)
    y = moe(x)
    (y.sum() + moe.aux_loss).backward()
    assert y.shape == x.shape and torch.isfinite(x.grad).all()
    tree = dropkit.create("hme_dropout", in_features=16, depth=4, p=0.2).to(device).train()
    z = tree(torch.randn(32, 16, device=device))
    assert torch.isfinite(z).all()
    return f"moe aux_loss {float(moe.aux_loss.detach()):.3f}"


# ------------------------------------------------------------------------------------------------------------
# Speed at real shapes
# ------------------------------------------------------------------------------------------------------------

class TimesY(nn.Module):
    """``x * y`` with a same-size constant ``y``: reads two tensors and writes one forward, the same backward — the
    bandwidth floor of applying any full-size mask."""

    def __init__(self, y: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("y", y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.y


def _median_ms(fn: Callable[[], None], device: str, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def _fwd_bwd(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor,
             graphs: bool = False) -> Callable[[], None]:
    def run() -> None:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        x.grad = None
        module(x).backward(grad)
    return run


def _input(shape: tuple[int, ...], device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
    return x, grad


def _label(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def speed_section(mode: str, shapes, methods: list[str], device: str, dtype: torch.dtype, clock: Clock,
                  reps: int, warmup: int, smoke: bool) -> list[dict]:
    """Time yardsticks and methods under ``mode`` (eager, compile, graphs); method-major so a time-box cut loses
    whole low-priority methods rather than a shape of every method."""
    rows: list[dict] = []
    yard: dict[str, float] = {}

    def wrap(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        if mode == "eager":
            return module
        # Each row compiles afresh: instances of one class share a code object, and earlier compilations (other
        # shapes, other callers in the process) would otherwise count towards dynamo's recompilation limit.
        torch._dynamo.reset()
        if smoke:  # no C++/CUDA toolchain needed: trace with dynamo, run eagerly
            return torch.compile(module, fullgraph=True, backend="eager")
        return torch.compile(module, fullgraph=True, mode="reduce-overhead" if mode == "graphs" else None)

    def time_one(label: str, make: Callable[[torch.Tensor], nn.Module], shape) -> float | None:
        if clock.expired():
            print(f"skip  {mode:<8}{label:<28}{_label(shape):>22}  skipped (time box)", flush=True)
            return None
        try:
            x, grad = _input(shape, device, dtype)
            module = make(x).to(device).train()
            ms = _median_ms(_fwd_bwd(wrap(module), x, grad, graphs=mode == "graphs" and not smoke), device,
                            reps, warmup)
        except Exception as err:  # noqa: BLE001 — one method's failure must not hide the rest
            print(f"n/a   {mode:<8}{label:<28}{_label(shape):>22}  {type(err).__name__}: {str(err)[:120]}", flush=True)
            return None
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
        return ms

    yardsticks = {
        "x*y floor": lambda x: TimesY(torch.randn_like(x)),
        "nn.Dropout": lambda x: nn.Dropout(dropkit.get_card("dropout").defaults["p"]),
        "textbook_dropblock": lambda x: TextbookDropBlock(dropkit.get_card("dropblock").defaults["p"],
                                                          dropkit.get_card("dropblock").defaults["block_size"]),
    }
    for shape in shapes:
        for label, make in yardsticks.items():
            ms = time_one(label, make, shape)
            if ms is not None:
                yard[(label, shape)] = ms
                print(f"time  {mode:<8}{label:<28}{_label(shape):>22}  {ms:9.3f} ms", flush=True)
    for name in methods:
        for shape in shapes:
            ms = time_one(name, lambda x, n=name: dropkit.create(n), shape)
            if ms is None:
                continue
            floor = yard.get(("x*y floor", shape))
            ratio = ms / floor if floor else math.nan
            verdict = f"{ratio:5.2f}x floor (<= {FLOOR_LIMIT:g}: {'met' if ratio <= FLOOR_LIMIT else 'missed'})"
            if name == "dropblock" and ("textbook_dropblock", shape) in yard:
                gain = yard[("textbook_dropblock", shape)] / ms
                verdict += f"; {gain:.1f}x faster than textbook (>= {DROPBLOCK_SPEEDUP:g}: " \
                           f"{'met' if gain >= DROPBLOCK_SPEEDUP else 'missed'})"
            print(f"time  {mode:<8}{name:<28}{_label(shape):>22}  {ms:9.3f} ms  {verdict}", flush=True)
            rows.append({"mode": mode, "name": name, "shape": shape, "ms": ms, "vs_floor": ratio})
    return rows


def _select(names: list[str], patterns: str | None) -> list[str]:
    if not patterns:
        return names
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    return [n for n in names if any(fnmatch.fnmatch(n, p) for p in wanted)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, three methods: checks the script")
    parser.add_argument("--budget-s", type=float, default=None, help="overall time box (default 450; smoke 300)")
    parser.add_argument("--sections", default="correctness,eager,compile,graphs",
                        help="comma list of correctness, eager, compile, graphs")
    parser.add_argument("--methods", default=None, help="comma list of shell-style name filters")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per row (default 10; smoke 2)")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for s in sections:
        if s not in SECTION_SHARE:
            raise ValueError(f"--sections: unknown section {s!r}; allowed: {', '.join(SECTION_SHARE)}")
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --smoke for the CPU dry run")
    device = "cpu" if args.smoke else "cuda"
    budget = args.budget_s if args.budget_s is not None else (300.0 if args.smoke else 450.0)
    reps = args.reps if args.reps is not None else (1 if args.smoke else 10)
    warmup = 1 if args.smoke else 3
    dtype = torch.float32 if args.smoke else torch.bfloat16
    print(torch.__version__, torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)", flush=True)

    names = [c.name for c in dropkit.methods(kind="activation")]
    names = sorted(names, key=lambda n: (PRIORITY.index(n) if n in PRIORITY else len(PRIORITY), names.index(n)))
    names = _select(names, args.methods if args.methods or not args.smoke else ",".join(SMOKE_METHODS))
    all_shapes = SMOKE_SHAPES if args.smoke else (*RESNET_SHAPES, UNET_SHAPE)
    small = SMOKE_SHAPES[:1] if args.smoke else SMALL_SHAPES
    clock = Clock(budget)
    if "correctness" in sections:
        clock.open_section("correctness", sections)
        # (The smoke run checks two of the four dtype/layout combinations: it tests the script, not the methods.)
        combos = ((torch.float32, False), (torch.bfloat16, True)) if args.smoke else \
            tuple((dt, cl) for dt in (torch.float32, torch.bfloat16) for cl in (False, True))
        for name in names:
            for dt, cl in combos:
                check(f"{name} {str(dt)[6:]} {'channels_last' if cl else 'contiguous'}",
                      method_correct(name, dt, cl, device), clock)
        if not args.smoke:
            for alg in ("sparse", "dense"):
                check(f"dropblock drop fraction ({alg})", drop_fraction("dropblock", device, algorithm=alg), clock)
            check("dropout drop fraction", drop_fraction("dropout", device), clock)
            check("gating_dropout and hme_dropout blocks", lambda: blocks(device), clock)
        for name in ("dropout", "gaussian_dropout", "dropblock"):
            if name in names:
                check(f"{name} recompute=True", recompute_identical(name, device), clock)
    for mode in ("eager", "compile", "graphs"):
        if mode in sections:
            clock.open_section(mode, sections)
            if mode == "graphs" and args.smoke:
                print("(smoke: CUDA graphs need CUDA; the compiled path is traced with backend='eager' instead)")
            speed_section(mode, small if mode == "graphs" else all_shapes, names, device, dtype, clock, reps,
                          warmup, args.smoke)
    print(f"\n{time.monotonic() - clock.start:.0f} s of {budget:.0f}; {len(failures)} correctness failures: "
          f"{', '.join(failures) if failures else 'none'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
