"""``dropkit bench``: forward + backward time of every registered activation method, side by side.

Every row is measured in the same process and the same run as its yardsticks — ``nn.Dropout2d``, a 3×3
convolution C→C of the same shape, ``nn.Dropout`` and the textbook DropBlock (Bernoulli seeds over the whole
map, then ``max_pool2d``) — with the timings interleaved round by round, so slow drift of the machine hits all
rows alike. Each timing is the median over rounds. Run it with nothing else on the machine: on 2 cores a second
heavy process makes every number meaningless.

Two more yardsticks sit beside the convolution, because its speed moves between CPUs while memory traffic does
not: the *mask-apply floor* of each granularity — ``x * m`` forward + backward with a precomputed mask of the
method's shape (full size for element/block methods, (N, 1, H, W) for region methods, (N, C, 1, 1) per channel,
(N, 1, 1, 1) per sample) — the cost no method of that granularity can avoid; and, where a method must do
more than apply a mask, the floor of that extra work, timed bare: the quantised level and the histogram of every
activation for Heuristic Dropout, the per-sample C×C Gram matrix for CorrDrop's channel score, the smoothed-peak
search of every map for Channel DropBlock, the DCT and inverse DCT for spectral dropout. Their sum with the
mask-apply floor is the least such a method can cost; it is printed beside the target as the measured reason a
target is out of reach. Heuristic Dropout does not multiply by a mask: it outputs a copy with the selected channels
replaced by their Laplacian, so its apply floor is that fill with fixed channels (``floor:laplacian_fill``).

Each method's gain over its reference (the textbook DropBlock, the official Heuristic Dropout scoring) is a row
of its own that is marked missed when it falls below the gain it must keep. The column "saved B/B" is the memory
autograd keeps for backward per byte of activation (exact: saved-tensor hooks), and the step-memory group gives
the saved memory of a whole training forward of the lab's ResNet with each method, relative to the plain network.

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
# Gains over a reference implementation that must not regress: method → (reference yardstick, minimum speed-up).
# Set below the gains measured when they were made (DropBlock 11.8×/4.9×, Heuristic Dropout 12×/4.3× on 2 cores).
REFERENCE_GAINS: dict[str, tuple[str, float]] = {
    "dropblock": ("textbook_dropblock", DROPBLOCK_SPEEDUP),
    "heuristic_dropout": ("official_heuristic_scoring", 2.0),
}
# Mask-apply floor per granularity (the card's taxonomy unit).
FLOOR_OF_UNIT = {"element": "floor:element", "block": "floor:element", "region": "floor:spatial",
                 "channel": "floor:channel", "path": "floor:sample", "sample": "floor:sample"}
# Methods whose output is not ``x`` times a mask: the floor of producing their kind of output instead.
APPLY_FLOORS: dict[str, str] = {"heuristic_dropout": "floor:laplacian_fill"}
# What a method must do besides applying a mask, timed bare: the measured reason it cannot reach the floor.
WORK_FLOORS: dict[str, tuple[str, ...]] = {
    "heuristic_dropout": ("floor:levels", "floor:histogram"),
    "spectral_dropout": ("floor:dct_pair",),
    "corrdrop_channel": ("floor:gram",),
    "channel_dropblock": ("floor:peak_search",),
}
# Saved-for-backward memory of a ResNet training forward with the method after every stage, relative to none.
STEP_MEMORY_TARGETS: dict[str, float] = {"dropblock": 1.07, "gaussian_dropout": 1.07,
                                         "dropblock+recompute": 1.01, "gaussian_dropout+recompute": 1.01}


class TextbookDropBlock(nn.Module):
    """The textbook DropBlock: Bernoulli(γ) over every position of the map (restricted to the valid region as in
    the official TF code), then a b×b (b×b×b on 5-D input) ``max_pool`` to grow blocks; the reference dropkit's is
    measured against."""

    def __init__(self, p: float = 0.1, block_size: int = 7) -> None:
        super().__init__()
        self.p, self.block_size = p, block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        b = min(self.block_size, *spatial)
        gamma = self.p * math.prod(spatial) / (b ** len(spatial) * math.prod([s - b + 1 for s in spatial]))
        pool = F.max_pool2d if len(spatial) == 2 else F.max_pool3d
        with torch.no_grad():
            valid = torch.zeros(spatial, device=x.device, dtype=x.dtype)
            valid[tuple([slice(b // 2, s - (b - 1) // 2) for s in spatial])] = 1
            seeds = torch.bernoulli(torch.full_like(x, gamma)) * valid
            pooled = pool(seeds, b, stride=1, padding=b // 2)[(..., *[slice(0, s) for s in spatial])]
            keep = 1.0 - pooled
            scale = keep.numel() / keep.sum(dtype=torch.float32).clamp_min(1.0)
        return x * keep * scale.to(x.dtype)


class MaskApply(nn.Module):
    """``x * m`` with a precomputed, pre-scaled float mask ``m`` of ``mask_shape``: the memory-bound floor of
    applying a mask of that granularity, forward and backward."""

    def __init__(self, mask_shape: tuple[int, ...], keep_prob: float = 0.9) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("mask", (torch.rand(mask_shape, generator=gen) < keep_prob).float() / keep_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


class BareHistogram(nn.Module):
    """One ``bincount`` over a precomputed bin index per activation (N·C histograms of 2·10 + 1 levels): the work
    Heuristic Dropout cannot skip, since its score is the entropy of every channel's quantised histogram. The
    output is a view of the input (so it times as forward + backward like the others; the backward is free)."""

    def __init__(self, shape: tuple[int, ...], bins: int = 10) -> None:
        super().__init__()
        n, c = shape[0], shape[1]
        levels = 2 * bins + 1
        gen = torch.Generator().manual_seed(0)
        # The levels of N(0, 1) activations like the bench's input (how often a bin repeats moves bincount's speed).
        level = torch.randn(shape, generator=gen).mul_(2.0).sigmoid_().mul_(2 * bins).round_().long()
        rows = torch.arange(n * c).view(n, c, *([1] * (len(shape) - 2)))
        # int32, as Heuristic Dropout counts: bincount reads an int64 index several times slower on the CPU.
        self.register_buffer("index", (rows * levels + level).view(-1).to(torch.int32))
        self.total = n * c * levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.bincount(self.index, minlength=self.total)
        return x.view_as(x)  # a free op with a backward


class QuantisedLevels(nn.Module):
    """The quantised level ``round(tanh(x)·b)`` of every activation, computed as Heuristic Dropout does (as
    ``round(2b·σ(2x))``, σ being the cheapest exact route on the CPU), without the histogram: the one
    transcendental per activation its entropy needs. The output is a view of the input (a free backward)."""

    def __init__(self, bins: int = 10) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            torch.mul(x, 2.0).sigmoid_().mul_(2 * self.bins).round_()
        return x.view_as(x)


class ChannelGram(nn.Module):
    """The per-sample C×C Gram matrix of the flattened channel maps (one batched matrix product): CorrDrop's channel
    score (eqs. 1–3) needs the cosine of every pair of channels, so no implementation skips it. The output is a view
    of the input (a free backward)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            a = x.detach().flatten(2).float()
            torch.bmm(a, a.transpose(1, 2))
        return x.view_as(x)


class PeakSearch(nn.Module):
    """Channel DropBlock's peak search alone: the position of the maximum of every map's 3×3 box sums (dropkit's
    separable sums and first-maximum search; ``max_pool`` with indices and ``argmax`` were measured no faster),
    without the seed draw, the ranking and the mask. The output is a view of the input (a free backward)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from dropkit.methods.channel_dropblock import peak_positions

        peak_positions(x)
        return x.view_as(x)


class DctPair(nn.Module):
    """The orthonormal DCT and its inverse over the C-vector at every position (spectral dropout's default
    hypercolumn transform), forward + backward, without the threshold: spectral dropout's floor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from dropkit.methods.spectral_dropout import hypercolumn_dct_roundtrip

        return hypercolumn_dct_roundtrip(x)


class _FillSelected(torch.autograd.Function):
    """Heuristic Dropout's fill with the channels fixed: linear and self-adjoint, so backward is the same map."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: torch.Tensor, top: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        from dropkit.methods.heuristic_dropout import replace_with_laplacian

        ctx.save_for_backward(rows, top)
        return replace_with_laplacian(x, rows, top)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        from dropkit.methods.heuristic_dropout import replace_with_laplacian

        rows, top = ctx.saved_tensors
        return replace_with_laplacian(grad, rows, top), None, None


class LaplacianFill(nn.Module):
    """Heuristic Dropout's output without its scoring: a copy of the activation with round(p·C) fixed channels of
    every sample replaced by their 3×3 Laplacian response (gathered, one depthwise convolution, written back),
    forward and backward. The method's output is such a copy, not ``x`` times a mask, so this — not a channel
    mask's ``x * m`` — is the floor of applying what it selected."""

    def __init__(self, shape: tuple[int, ...], p: float = 0.1) -> None:
        super().__init__()
        n, c = shape[0], shape[1]
        n_drop = max(1, round(p * c))
        gen = torch.Generator().manual_seed(0)
        top = torch.stack([torch.randperm(c, generator=gen)[:n_drop] for _ in range(n)])
        self.register_buffer("top", top)
        self.register_buffer("rows", torch.arange(n).view(-1, 1).expand_as(top).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FillSelected.apply(x, self.rows, self.top)


class OfficialHeuristicScoring(nn.Module):
    """Heuristic Dropout as the official code (sdc17/HeuristicDropout) computes it: quantise tanh(x) to 11 levels,
    count each level with a full-size comparison, entropy + k/variance, then (as dropkit) the top p·C channels
    per sample replaced by their 3×3 Laplacian response. The reference dropkit's implementation must beat."""

    def __init__(self, p: float = 0.1, k: float = 2.0, bins: int = 10) -> None:
        super().__init__()
        self.p, self.k, self.bins = p, k, bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        with torch.no_grad():
            quantize = torch.round(torch.tanh(x) * self.bins).view(b, c, -1)
            hist = torch.count_nonzero(quantize.unsqueeze(-1) == torch.arange(0, self.bins + 1, device=x.device), dim=2)
            entropy = torch.distributions.Categorical(hist.float()).entropy()
            scores = entropy + self.k / (torch.var(x, dim=(2, 3)) + 1e-7)
            top = scores.topk(max(1, round(self.p * c)), dim=1).indices
            chosen = torch.zeros(b, c, dtype=torch.bool, device=x.device).scatter_(1, top, True).view(b, c, 1, 1)
        kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=x.dtype, device=x.device)
        laplace = F.conv2d(x, kernel.view(1, 1, 3, 3).expand(c, 1, 3, 3), padding=1, groups=c)
        return torch.where(chosen, laplace, x)


def _work_floor_reason(
    work: tuple[str, ...], floor: str, ms: float, ref: dict[str, float], target_ref: str, limit: float
) -> str:
    """The measured reason printed beside a target: each work floor in conv units, their sum with the mask-apply
    floor (the least the method can cost), and how far the method is above that."""
    conv = ref["conv3x3"]
    parts = " + ".join(f"{w} {ref[w] / conv:.3f}x" for w in work)
    least = sum(ref[w] for w in work) + ref[floor]
    below = "; the target is below that" if least > limit * ref[target_ref] else ""
    return (f" (its own floors: {parts} conv; with {floor} the least it can cost is {least / conv:.3f}x conv"
            f"{below}; method = {ms / least:.1f}x that)")


def _floor_for(name: str) -> str:
    import dropkit

    if name in APPLY_FLOORS:
        return APPLY_FLOORS[name]
    return FLOOR_OF_UNIT.get(dropkit.get_card(name).taxonomy.get("unit", "element"), "floor:element")


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
            n, c = shape[0], shape[1]
            yardsticks: dict[str, nn.Module] = {
                "nn.Dropout2d": nn.Dropout2d(0.1),
                "nn.Dropout": nn.Dropout(dropkit.get_card("dropout").defaults["p"]),
                "conv3x3": nn.Conv2d(c, c, 3, padding=1),
                "textbook_dropblock": TextbookDropBlock(dropkit.get_card("dropblock").defaults["p"],
                                                       dropkit.get_card("dropblock").defaults["block_size"]),
                "official_heuristic_scoring": OfficialHeuristicScoring(),
                "floor:element": MaskApply(tuple(shape)),
                "floor:spatial": MaskApply((n, 1, *shape[2:])),
                "floor:channel": MaskApply((n, c, *([1] * (len(shape) - 2)))),
                "floor:sample": MaskApply((n, *([1] * (len(shape) - 1)))),
                "floor:histogram": BareHistogram(tuple(shape)),
                "floor:levels": QuantisedLevels(),
                "floor:gram": ChannelGram(),
                "floor:peak_search": PeakSearch(),
                "floor:dct_pair": DctPair(),
                "floor:laplacian_fill": LaplacianFill(tuple(shape), dropkit.get_card("heuristic_dropout").defaults["p"]),
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
            shape_label = "x".join(map(str, shape))
            for name, ms in times.items():
                is_yardstick = name in yardsticks
                target_ref, limit = TARGETS.get(name, DEFAULT_TARGET) if not is_yardstick else (None, None)
                floor = _floor_for(name) if not is_yardstick else None
                row = {
                    "device": device_name, "shape": shape_label, "name": name, "median_ms": ms,
                    "vs_dropout2d": ms / ref["nn.Dropout2d"], "vs_conv3x3": ms / ref["conv3x3"],
                    "floor": floor or "", "vs_floor": ms / ref[floor] if floor else math.nan,
                    "saved_per_byte": math.nan if is_yardstick else _saved_per_byte(modules[name], x),
                    "target": "" if target_ref is None else f"<= {limit:g}x {target_ref}", "met": "",
                }
                if target_ref is not None:
                    ratio = ms / ref[target_ref]
                    slack = SAME_KERNEL_NOISE if target_ref == "nn.Dropout" else 0.0
                    ok = ratio <= limit + slack
                    row["met"] = "yes" if ok else "NO"
                    if name in WORK_FLOORS:
                        row["target"] += _work_floor_reason(WORK_FLOORS[name], floor, ms, ref, target_ref, limit)
                rows.append(row)
            for name, (reference, minimum) in REFERENCE_GAINS.items():
                if name in times:
                    gain = ref[reference] / times[name]
                    rows.append({"device": device_name, "shape": shape_label, "name": f"gain:{name}",
                                 "median_ms": math.nan, "vs_dropout2d": math.nan, "vs_conv3x3": math.nan,
                                 "floor": "", "vs_floor": math.nan, "saved_per_byte": math.nan,
                                 "target": f"{reference} / {name} = {gain:.1f}x, must stay >= {minimum:g}x",
                                 "met": "yes" if gain >= minimum else "NO"})
            for name, why in failed.items():
                rows.append({"device": device_name, "shape": shape_label, "name": name,
                             "median_ms": math.nan, "vs_dropout2d": math.nan, "vs_conv3x3": math.nan,
                             "floor": "", "vs_floor": math.nan, "saved_per_byte": math.nan,
                             "target": "", "met": f"FAILED ({why})"})
            _print_table([r for r in rows if r["device"] == device_name and r["shape"] == shape_label],
                         f"{device_name}  input {tuple(shape)}  float32  forward+backward  median of {rounds} rounds",
                         out)
    return rows


def _saved_per_byte(module: nn.Module, x: torch.Tensor) -> float:
    from dropkit.saved_memory import saved_bytes_per_input_byte

    return saved_bytes_per_input_byte(module, x.detach())


def run_step_memory(build_resnet: Callable[[], nn.Module], out=sys.stdout, batch: int = 8,
                    pattern: str | None = None) -> list[dict]:
    """Saved-for-backward bytes of one training forward of the lab's ResNet-8 (CIFAR-style, width 16, 3×32×32
    input, batch ``batch``) with each activation method in every stage, relative to the plain network.

    The method sits on each stage's residual branch after its last BatchNorm (the lab's "branch" points), where
    nothing downstream keeps the method's output (the residual add keeps nothing and the ReLU after it keeps its
    own output), so the difference to the plain network is the method's own memory. After a stage's ReLU instead,
    every out-of-place method, even one that keeps nothing, costs one more activation-sized tensor: the ReLU keeps
    its output and the next convolution keeps the method's.

    ``build_resnet`` returns a fresh ResNet-8 in train mode; the command line passes the lab's (the core does not
    import the lab). Exact (saved-tensor hooks), so independent of the machine's load. ``dropout``, ``gaussian_dropout`` and
    ``dropblock`` are also measured with the other setting of ``recompute``. ``pattern`` filters the methods.
    """
    import dropkit
    from dropkit.saved_memory import training_step_saved_bytes

    stages = ["layer1.0.bn2", "layer2.0.bn2", "layer3.0.bn2"]
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    arms: list[tuple[str, str | None, dict]] = [("none", None, {})]
    for card in dropkit.methods(pattern, kind="activation"):
        arms.append((card.name, card.name, {}))
        if "recompute" in card.defaults:
            other = not card.defaults["recompute"]
            arms.append((f"{card.name}+{'recompute' if other else 'stored'}", card.name, {"recompute": other}))
    rows, plain = [], None
    for label, name, params in arms:
        torch.manual_seed(0)
        model = build_resnet().train()
        if name is not None:
            dropkit.attach(model, name, at=stages, **params)
        total = training_step_saved_bytes(model, x)
        plain = total if plain is None else plain
        limit = STEP_MEMORY_TARGETS.get(label)
        ratio = total / plain
        rows.append({"name": label, "saved_mib": total / 2**20, "vs_plain": ratio,
                     "target": "" if limit is None else f"<= {limit:g}x plain",
                     "met": "" if limit is None else ("yes" if ratio <= limit else "NO")})
    print(f"\nsaved for backward, one training forward of ResNet-8 (width 16, batch {batch}, 3x32x32), "
          f"method after each of {', '.join(stages)} (residual branches; exact bytes, parameters excluded)", file=out)
    print(f"{'method':<34}{'MiB':>8}{'/plain':>9}  target", file=out)
    print("-" * 62, file=out)
    for r in rows:
        target = f"{r['target']}: {r['met']}" if r["target"] else ""
        print(f"{r['name']:<34}{r['saved_mib']:>8.2f}{r['vs_plain']:>9.3f}  {target}", file=out)
    return rows


def _print_table(rows: list[dict], title: str, out) -> None:
    print(f"\n{title}", file=out)
    header = (f"{'method':<28}{'median ms':>10}{'/Dropout2d':>11}{'/conv3x3':>9}{'/floor':>8}{'saved B/B':>10}"
              f"  target")
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        target = f"{r['target']}: {r['met']}" if r["target"] else r["met"]
        if r["name"].startswith("gain:"):
            print(f"{r['name']:<28}{'':>48}  {target}", file=out)
            continue
        floor = f"{r['vs_floor']:>8.2f}" if r["floor"] else f"{'':>8}"
        saved = f"{r['saved_per_byte']:>10.3f}" if not math.isnan(r["saved_per_byte"]) else f"{'':>10}"
        print(f"{r['name']:<28}{r['median_ms']:>10.3f}{r['vs_dropout2d']:>11.2f}{r['vs_conv3x3']:>9.3f}{floor}{saved}"
              f"  {target}", file=out)
    print("/floor: time over the mask-apply floor of the method's granularity (floor:element, floor:spatial, "
          "floor:channel, floor:sample); saved B/B: bytes kept for backward per activation byte", file=out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", default=None, help="shell-style filter on method names, e.g. '*drop*'")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per row (median reported)")
    parser.add_argument("--csv", default="bench/results.csv", help="where to write the rows as CSV")
    parser.add_argument("--device", action="append", default=None,
                        help="cpu and/or cuda (default: cpu, plus cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--steps", action="store_true",
                        help="also time whole training steps with the stateful methods (ns_dropout, clustering, ...)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the saved-memory group (ResNet training forward per method; needs the lab extra)")


def main(args: argparse.Namespace, build_resnet: Callable[[], nn.Module] | None = None) -> int:
    """``dropkit bench``; ``build_resnet`` (a fresh ResNet-8, 3×32×32 inputs) enables the saved-memory group."""
    if args.rounds < 3:
        raise ValueError(f"--rounds must be at least 3, got {args.rounds}")
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for d in devices:
        if d not in ("cpu", "cuda"):
            raise ValueError(f"--device must be 'cpu' or 'cuda', got {d!r}")
        if d == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
    if args.threads is not None and (isinstance(args.threads, bool) or args.threads < 1):
        raise ValueError(f"--threads must be an integer ≥ 1, got {args.threads}")
    from dropkit.validation import check_writable_folder

    check_writable_folder(Path(args.csv).parent, "--csv", file=args.csv)
    if args.methods is not None and not _activation_methods(args.methods):
        import dropkit

        names = ", ".join(c.name for c in dropkit.methods(kind="activation"))
        raise ValueError(f"--methods {args.methods!r} matches no activation method; it is a shell-style pattern "
                         f"such as '*drop*' or 'dropblock', over: {names}")
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
    memory_rows = (run_step_memory(build_resnet, pattern=args.methods)
                   if build_resnet is not None and not args.no_memory else [])
    if args.steps:
        from dropkit.bench_steps import run_step_benchmark

        run_step_benchmark(rounds=max(3, args.rounds // 3))
    missed = [f"{r['name']} {r['shape']}" for r in rows if r["met"] not in ("", "yes")]
    missed += [f"{r['name']} (step memory)" for r in memory_rows if r["met"] not in ("", "yes")]
    print(f"\nwrote {path}; targets missed or failed: {', '.join(missed) if missed else 'none'}")
    return 0
