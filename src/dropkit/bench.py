"""``dropkit bench``: forward + backward time of every registered activation method, side by side.

Every row is measured in the same process and the same run as its yardsticks — ``nn.Dropout2d``, a 3×3
convolution C→C of the same shape, ``nn.Dropout`` and the textbook DropBlock (Bernoulli seeds over the whole
map, then ``max_pool2d``) — with the timings interleaved round by round, so slow drift of the machine hits all
rows alike. Each timing is the median over rounds. Run it with nothing else on the machine: on 2 cores a second
heavy process makes every number meaningless.

Targets (each method's ceiling, ``TARGETS`` below) are checked and printed; a missed target is reported, not hidden.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_SHAPES = ((64, 64, 16, 16), (32, 128, 8, 8))

# name → (yardstick, max ratio). Methods without an entry are held to the activation default (10 % of conv).
TARGETS: dict[str, tuple[str, float]] = {
    "dropout": ("nn.Dropout", 1.0),
    # One Gaussian draw per element, like dropout's one Bernoulli draw: held to nn.Dropout, not to 10 % of a conv.
    "gaussian_dropout": ("nn.Dropout", 1.0),
    "spatial_dropout": ("conv3x3", 0.10),
    "drop_path": ("conv3x3", 0.10),
    "dropblock": ("conv3x3", 0.15),
    "corrdrop_spatial": ("conv3x3", 0.15),
}
DEFAULT_TARGET = ("conv3x3", 0.10)
# DropBlock must also be this many times faster than the textbook algorithm at the same drop statistics.
DROPBLOCK_SPEEDUP = 5.0
# "≤ 1.0× nn.Dropout" compares two calls of the same fused kernel; allow the run-to-run spread of the timer.
SAME_KERNEL_NOISE = 0.05


class TextbookDropBlock(nn.Module):
    """The textbook DropBlock: Bernoulli(γ) over every position of the map (restricted to the valid region as in
    the official TF code), then a b×b ``max_pool2d`` to grow blocks; the reference dropkit's is measured against."""

    def __init__(self, p: float = 0.1, block_size: int = 7) -> None:
        super().__init__()
        self.p, self.block_size = p, block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        b = min(self.block_size, h, w)
        gamma = self.p * h * w / (b * b * (h - b + 1) * (w - b + 1))
        with torch.no_grad():
            valid = torch.zeros(h, w, device=x.device, dtype=x.dtype)
            valid[b // 2: h - (b - 1) // 2, b // 2: w - (b - 1) // 2] = 1
            seeds = torch.bernoulli(torch.full_like(x, gamma)) * valid
            pooled = F.max_pool2d(seeds, b, stride=1, padding=b // 2)[..., :h, :w]
            keep = 1.0 - pooled
            scale = keep.numel() / keep.sum(dtype=torch.float32).clamp_min(1.0)
        return x * keep * scale.to(x.dtype)


def _fwd_bwd(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        x.grad = None
        module(x).backward(grad)
    return run


def _time_interleaved(calls: dict[str, Callable[[], None]], rounds: int, warmup: int, device: torch.device) -> dict[str, float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in samples.items()}


def _activation_methods(pattern: str | None) -> list[str]:
    import dropkit

    return [c.name for c in dropkit.methods(pattern, kind="activation")]


def run_benchmark(
    shapes=DEFAULT_SHAPES, devices=("cpu",), pattern: str | None = None, rounds: int = 30, warmup: int = 3,
    out=sys.stdout,
) -> list[dict]:
    """Time every activation method (matching ``pattern``) and the yardsticks; return one dict per row."""
    import dropkit

    names = _activation_methods(pattern)
    rows: list[dict] = []
    for device_name in devices:
        device = torch.device(device_name)
        for shape in shapes:
            torch.manual_seed(0)
            x = torch.randn(*shape, device=device, requires_grad=True)
            grad = torch.randn(*shape, device=device)
            c = shape[1]
            yardsticks: dict[str, nn.Module] = {
                "nn.Dropout2d": nn.Dropout2d(0.1),
                "nn.Dropout": nn.Dropout(dropkit.get_card("dropout").defaults["p"]),
                "conv3x3": nn.Conv2d(c, c, 3, padding=1),
                "textbook_dropblock": TextbookDropBlock(dropkit.get_card("dropblock").defaults["p"],
                                                       dropkit.get_card("dropblock").defaults["block_size"]),
            }
            modules: dict[str, nn.Module] = dict(yardsticks)
            failed: dict[str, str] = {}
            for name in names:
                try:
                    module = dropkit.create(name).to(device).train()
                    module(x.detach())  # a method that cannot take this shape is reported, not fatal
                    modules[name] = module
                except Exception as err:  # noqa: BLE001 — one broken method must not hide the others' numbers
                    failed[name] = f"{type(err).__name__}: {err}"
            for module in modules.values():
                module.to(device).train()
            calls = {name: _fwd_bwd(module, x, grad) for name, module in modules.items()}
            times = _time_interleaved(calls, rounds, warmup, device)
            ref = {k: times[k] for k in yardsticks}
            for name, ms in times.items():
                target_ref, limit = TARGETS.get(name, DEFAULT_TARGET) if name not in yardsticks else (None, None)
                row = {
                    "device": device_name, "shape": "x".join(map(str, shape)), "name": name, "median_ms": ms,
                    "vs_dropout2d": ms / ref["nn.Dropout2d"], "vs_conv3x3": ms / ref["conv3x3"],
                    "target": "" if target_ref is None else f"<= {limit:g}x {target_ref}", "met": "",
                }
                if target_ref is not None:
                    ratio = ms / ref[target_ref]
                    slack = SAME_KERNEL_NOISE if target_ref == "nn.Dropout" else 0.0
                    ok = ratio <= limit + slack
                    if name == "dropblock":
                        speedup = ref["textbook_dropblock"] / ms
                        row["target"] += f" and >= {DROPBLOCK_SPEEDUP:g}x faster than textbook ({speedup:.1f}x)"
                        ok = ok and speedup >= DROPBLOCK_SPEEDUP
                    row["met"] = "yes" if ok else "NO"
                rows.append(row)
            for name, why in failed.items():
                rows.append({"device": device_name, "shape": "x".join(map(str, shape)), "name": name,
                             "median_ms": math.nan, "vs_dropout2d": math.nan, "vs_conv3x3": math.nan,
                             "target": "", "met": f"FAILED ({why})"})
            _print_table([r for r in rows if r["device"] == device_name and r["shape"] == "x".join(map(str, shape))],
                         f"{device_name}  input {tuple(shape)}  float32  forward+backward  median of {rounds} rounds",
                         out)
    return rows


def _print_table(rows: list[dict], title: str, out) -> None:
    print(f"\n{title}", file=out)
    header = f"{'method':<26}{'median ms':>10}{'/Dropout2d':>12}{'/conv3x3':>10}  target"
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        target = f"{r['target']}: {r['met']}" if r["target"] else r["met"]
        print(f"{r['name']:<26}{r['median_ms']:>10.3f}{r['vs_dropout2d']:>12.2f}{r['vs_conv3x3']:>10.3f}  {target}",
              file=out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", default=None, help="shell-style filter on method names, e.g. '*drop*'")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per row (median reported)")
    parser.add_argument("--csv", default="bench/results.csv", help="where to write the rows as CSV")
    parser.add_argument("--device", action="append", default=None,
                        help="cpu and/or cuda (default: cpu, plus cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--steps", action="store_true",
                        help="also time whole training steps with the stateful methods (ns_dropout, clustering, ...)")


def main(args: argparse.Namespace) -> int:
    if args.rounds < 3:
        raise ValueError(f"--rounds must be at least 3, got {args.rounds}")
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for d in devices:
        if d not in ("cpu", "cuda"):
            raise ValueError(f"--device must be 'cpu' or 'cuda', got {d!r}")
        if d == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = run_benchmark(devices=devices, pattern=args.methods, rounds=args.rounds)
    path = Path(args.csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if args.steps:
        from dropkit.bench_steps import run_step_benchmark

        run_step_benchmark(rounds=max(3, args.rounds // 3))
    missed = [f"{r['name']} {r['shape']}" for r in rows if r["met"] not in ("", "yes")]
    print(f"\nwrote {path}; targets missed or failed: {', '.join(missed) if missed else 'none'}")
    return 0
