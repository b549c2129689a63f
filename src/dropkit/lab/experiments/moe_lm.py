"""A tiny character-level Transformer LM with Mixture-of-Experts FFNs, trained with and without Gating Dropout.

Runs on one process, or expert-parallel over W gloo/NCCL ranks launched with ``torchrun``; each rank reads its
own batches (data parallel), the experts are spread over the ranks (``dropkit.moe``), shared gradients are
averaged with :func:`dropkit.moe.sync_gradients`. For every p in ``--p`` the same model (same seed) is trained
for the same steps on the same batches (the models step in lockstep, so their step times see the same machine
load) and the script reports validation loss, train loss, step time (mean over the timed steps, slowest rank),
and all-to-all bytes sent and calls per step (forward + backward, all MoE layers, per rank).

    python -m dropkit.lab.experiments.moe_lm --steps 200
    torchrun --standalone --nproc_per_node 2 -m dropkit.lab.experiments.moe_lm --steps 60 --p 0 0.3

Under torchrun the ranks use NCCL with one GPU each (``LOCAL_RANK``) when CUDA is available, else gloo on the CPU;
the model and the batches live on the group's device (:func:`dropkit.moe.group_device`).

The default corpus is the fortune databases of the Debian package ``fortunes-min`` (``fortunes`` has more), in
/usr/share/games/fortunes; ``--corpus`` takes any text file or folder of text files.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dropkit.methods.gating_dropout import GatingDropoutMoE, moe_aux_loss, moe_comm_stats, reset_moe_comm_stats
from dropkit.moe import broadcast_shared_parameters, group_device, sync_gradients
from dropkit.validation import check_output_file

__all__ = ["LMConfig", "TinyMoELM", "load_corpus", "encode_corpus", "train_models", "run_comparison", "add_arguments",
           "launch_backend", "main"]

FORTUNES_DIR = Path("/usr/share/games/fortunes")


# ------------------------------------------------------------------------------------------------- data


def load_corpus(path: str | os.PathLike | None = None) -> str:
    """Text of a file, or of every text file in a folder (fortune ``.dat`` indexes and links skipped).

    Fortune separators (lines holding only ``%``) become blank lines. Defaults to the fortune databases.
    """
    root = Path(path) if path is not None else FORTUNES_DIR
    if not root.exists():
        hint = " (install the Debian package fortunes-min or fortunes, or pass --corpus)" if path is None else ""
        raise FileNotFoundError(f"moe-lm: corpus {str(root)!r} not found{hint}")
    files = [root] if root.is_file() else sorted(
        f for f in root.iterdir() if f.is_file() and not f.is_symlink() and f.suffix not in (".dat", ".u8"))
    text = "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
    text = "\n".join("" if line.strip() == "%" else line for line in text.splitlines())
    if len(text) < 1000:
        raise ValueError(f"moe-lm: corpus {str(root)!r} has {len(text)} characters; need at least 1000")
    return text


def encode_corpus(text: str, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Character vocabulary; (train ids, validation ids = the last ``val_fraction`` of the text, vocabulary)."""
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    split = int(len(ids) * (1.0 - val_fraction))
    return ids[:split], ids[split:], vocab


def sample_windows(ids: torch.Tensor, batch: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    start = torch.randint(0, len(ids) - seq_len - 1, (batch,), generator=generator)
    offsets = torch.arange(seq_len + 1)
    window = ids[start[:, None] + offsets]
    return window[:, :-1], window[:, 1:]


# ------------------------------------------------------------------------------------------------ model


@dataclass
class LMConfig:
    """Sizes and training settings (per rank: ``batch`` sequences of ``seq_len`` characters)."""

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    num_experts: int = 4
    k: int = 1
    moe_every: int = 1  # an MoE FFN in every moe_every-th block (the others dense)
    mode: str = "gated_local"
    expert_drop: bool = False
    decision: str = "broadcast"  # how ranks agree on a drop: "broadcast" (fairseq) or "shared_generator"
    seq_len: int = 64
    batch: int = 16
    steps: int = 150
    lr: float = 3e-3
    warmup_steps: int = 5  # steps left out of the timing
    eval_batches: int = 8
    seed: int = 0
    p_values: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.3])


class Block(nn.Module):
    def __init__(self, cfg: LMConfig, moe: bool, group: Any, p: float) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        if moe:
            self.ffn: nn.Module = GatingDropoutMoE(cfg.d_model, cfg.d_ff, cfg.num_experts, k=cfg.k, p=p, mode=cfg.mode,
                                                   expert_drop=cfg.expert_drop, decision=cfg.decision,
                                                   process_group=group)
        else:
            self.ffn = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.ReLU(), nn.Linear(cfg.d_ff, cfg.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, T, M = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(N, T, 3, self.n_heads, M // self.n_heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(N, T, M)
        x = x + self.proj(att)
        return x + self.ffn(self.ln2(x))


class TinyMoELM(nn.Module):
    """Pre-LayerNorm causal Transformer over characters; MoE FFNs with Gating Dropout rate ``p``."""

    def __init__(self, vocab_size: int, cfg: LMConfig, p: float = 0.0, group: Any = None) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(cfg.seq_len, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(
            Block(cfg, moe=(i % cfg.moe_every == cfg.moe_every - 1), group=group, p=p) for i in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


# --------------------------------------------------------------------------------------------- training


def _world(group: Any) -> tuple[int, int]:
    if group is None:
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def _all_reduce(value: float, group: Any, op: str = "mean") -> float:
    world, _ = _world(group)
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64).to(group_device(group))
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=group)
    return float(t.item() / (world if op == "mean" else 1))


@torch.no_grad()
def evaluate(model: TinyMoELM, val: torch.Tensor, cfg: LMConfig, group: Any) -> float:
    """Mean next-character cross-entropy over ``eval_batches`` fixed validation batches, split over the ranks."""
    world, rank = _world(group)
    model.eval()
    device = model.head.weight.device
    gen = torch.Generator().manual_seed(10_000 + cfg.seed * 97 + rank)
    losses = []
    for _ in range(cfg.eval_batches):
        x, y = (t.to(device) for t in sample_windows(val, cfg.batch, cfg.seq_len, gen))
        losses.append(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item())
    model.train()
    return _all_reduce(sum(losses) / len(losses), group)


class _Run:
    """One model being trained with Gating Dropout rate p, and its running counters."""

    def __init__(self, cfg: LMConfig, p: float, vocab_size: int, group: Any,
                 device: torch.device | str = "cpu") -> None:
        _, rank = _world(group)
        self.p = p
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)  # the same initial model on every rank and for every p
        self.model = TinyMoELM(vocab_size, cfg, p=p, group=group).to(self.device)
        broadcast_shared_parameters(self.model, group)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.data = torch.Generator().manual_seed(cfg.seed * 1_000 + rank)  # same batches for every p
        self.layers = [m for m in self.model.modules() if isinstance(m, GatingDropoutMoE)]
        self.step_times: list[float] = []
        self.bytes_sent = self.calls = self.drops = self.decisions = 0
        self.train_loss = float("nan")

    def batch(self, train: torch.Tensor, cfg: LMConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch (inputs, targets), on the model's device."""
        x, y = sample_windows(train, cfg.batch, cfg.seq_len, self.data)
        return x.to(self.device), y.to(self.device)

    def step(self, train: torch.Tensor, cfg: LMConfig, group: Any, timed: bool) -> None:
        x, y = self.batch(train, cfg)
        model = self.model
        reset_moe_comm_stats(model)
        t0 = time.perf_counter()
        ce = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss = ce + moe_aux_loss(model)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        sync_gradients(model, group)
        self.opt.step()
        elapsed = time.perf_counter() - t0
        if timed:
            comm = moe_comm_stats(model)
            self.step_times.append(elapsed)
            self.bytes_sent += comm["bytes_sent"]
            self.calls += comm["calls"]
            self.drops += sum(m.last_dropped for m in self.layers)
            self.decisions += len(self.layers)
        self.train_loss = ce.item()


def train_models(cfg: LMConfig, train: torch.Tensor, val: torch.Tensor, vocab_size: int, group: Any = None,
                 log: Any = None, device: torch.device | str | None = None) -> list[dict[str, Any]]:
    """Train one model per p in ``cfg.p_values``, in lockstep (step i of every model before step i + 1), so
    that their step times are measured under the same machine load; returns their metrics (same on every rank).
    The models run on ``device``, by default the group's (the GPU under NCCL, else the CPU).
    """
    world, rank = _world(group)
    device = group_device(group) if device is None else device
    runs = [_Run(cfg, p, vocab_size, group, device) for p in cfg.p_values]
    for step in range(cfg.steps):
        for run in runs:
            run.step(train, cfg, group, timed=step >= cfg.warmup_steps)
        if log is not None and (step + 1) % max(1, cfg.steps // 5) == 0:
            log(f"  step {step + 1}/{cfg.steps}: train loss " + ", ".join(f"p={r.p:g} {r.train_loss:.3f}" for r in runs))
    results = []
    for run in runs:
        timed = max(1, len(run.step_times))
        results.append({
            "p": run.p,
            "world_size": world,
            "val_loss": evaluate(run.model, val, cfg, group),
            "train_loss": _all_reduce(run.train_loss, group),
            "step_time_ms": 1e3 * _all_reduce(sum(run.step_times) / timed, group, op="max"),
            "a2a_bytes_per_step": run.bytes_sent / timed,
            "a2a_calls_per_step": run.calls / timed,
            "dropped_fraction": run.drops / max(1, run.decisions),
        })
    return results


def run_comparison(cfg: LMConfig, corpus: str | None = None, group: Any = None, log: Any = print) -> list[dict[str, Any]]:
    """Train one model per p in ``cfg.p_values`` on the corpus; returns their metrics."""
    train, val, vocab = encode_corpus(load_corpus(corpus))
    return train_models(cfg, train, val, len(vocab), group, log)


def format_results(results: list[dict[str, Any]]) -> str:
    base = next((r for r in results if r["p"] == 0.0), None)
    lines = ["p      val_loss  train_loss  step_ms  a2a_KiB/step  a2a_calls/step  dropped  bytes_vs_p0  time_vs_p0"]
    for r in results:
        rel_b = f"{r['a2a_bytes_per_step'] / base['a2a_bytes_per_step'] - 1:+.1%}" if base and base["a2a_bytes_per_step"] else "-"
        rel_t = f"{r['step_time_ms'] / base['step_time_ms'] - 1:+.1%}" if base else "-"
        lines.append(f"{r['p']:<6g} {r['val_loss']:<9.4f} {r['train_loss']:<11.4f} {r['step_time_ms']:<8.1f} "
                     f"{r['a2a_bytes_per_step'] / 1024:<13.1f} {r['a2a_calls_per_step']:<15.2f} "
                     f"{r['dropped_fraction']:<8.2f} {rel_b:<12} {rel_t}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = LMConfig()
    parser.add_argument("--corpus", default=None, help=f"text file or folder (default {FORTUNES_DIR})")
    parser.add_argument("--p", type=float, nargs="+", default=d.p_values, help="Gating Dropout rates to compare")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch", type=int, default=d.batch, help="sequences per rank per step")
    parser.add_argument("--seq-len", type=int, default=d.seq_len)
    parser.add_argument("--d-model", type=int, default=d.d_model)
    parser.add_argument("--d-ff", type=int, default=d.d_ff)
    parser.add_argument("--layers", type=int, default=d.n_layers)
    parser.add_argument("--experts", type=int, default=d.num_experts, help="global number of experts")
    parser.add_argument("--k", type=int, default=d.k, choices=(1, 2))
    parser.add_argument("--mode", default=d.mode, choices=("gated_local", "bypass_gate"))
    parser.add_argument("--expert-drop", action="store_true", help="Gate-Expert-Drop")
    parser.add_argument("--decision", default=d.decision, choices=("broadcast", "shared_generator"),
                        help="how the ranks agree on each drop: a broadcast from rank 0 (fairseq) or a shared seed")
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file (rank 0)")
    parser.add_argument("--db", default="runs.db", help="also record each p's result in this lab store (rank 0; "
                                                        "'' to skip)")


def launch_backend(cuda_available: bool, local_rank: int) -> tuple[str, torch.device]:
    """Backend and device of a torchrun rank: NCCL on GPU ``local_rank`` when CUDA is available, else gloo."""
    if cuda_available:
        return "nccl", torch.device("cuda", local_rank)
    return "gloo", torch.device("cpu")


def config_from_args(args: argparse.Namespace) -> LMConfig:
    if args.steps <= 0:
        raise ValueError(f"moe-lm: --steps must be > 0, got {args.steps}")
    for p in args.p:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"moe-lm: every --p must be in [0, 1], got {p}")
    return LMConfig(d_model=args.d_model, d_ff=args.d_ff, n_layers=args.layers, num_experts=args.experts, k=args.k,
                    mode=args.mode, expert_drop=args.expert_drop, decision=args.decision, seq_len=args.seq_len, batch=args.batch,
                    steps=args.steps, warmup_steps=min(5, args.steps - 1), lr=args.lr, seed=args.seed,
                    p_values=list(args.p))


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point of ``dropkit experts moe-lm``; joins the torchrun group when WORLD_SIZE > 1."""
    cfg = config_from_args(args)
    for flag in ("json", "db"):  # files written at the end: refused now, not after the training
        if getattr(args, flag):
            check_output_file(getattr(args, flag), f"moe-lm: --{flag}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    group = None
    if world > 1:
        if not dist.is_initialized():
            backend, device = launch_backend(torch.cuda.is_available(), int(os.environ.get("LOCAL_RANK", "0")))
            if device.type == "cuda":
                torch.cuda.set_device(device)  # NCCL and group_device use the current GPU
            dist.init_process_group(backend)
        group = dist.group.WORLD
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        if cfg.num_experts % world:
            raise ValueError(f"moe-lm: --experts ({cfg.num_experts}) must be divisible by the world size {world}")
    rank = dist.get_rank() if group is not None else 0
    log = print if rank == 0 else None
    if log:
        log(f"moe-lm: {world} rank(s), {cfg.num_experts} experts, k={cfg.k}, mode={cfg.mode}, "
            f"{cfg.steps} steps of {cfg.batch}x{cfg.seq_len} chars per rank")
    try:
        results = run_comparison(cfg, args.corpus, group, log)
        if rank == 0:
            print(format_results(results))
            if args.json:
                Path(args.json).write_text(json.dumps({"config": asdict(cfg), "results": results}, indent=2))
            if args.db:
                record_results(args.db, cfg, results, corpus=args.corpus, world=world)
                print(f"moe-lm: {len(results)} results recorded in {args.db}")
    finally:
        if group is not None:
            dist.destroy_process_group()
    return 0


def record_results(db: str, cfg: LMConfig, results: list[dict[str, Any]], *, corpus: str | None,
                   world: int) -> None:
    """Each p's result as one experiment result in the lab's store (kind ``experiment``)."""
    from dropkit.lab.env import environment
    from dropkit.lab.store import Store

    setting = {k: v for k, v in asdict(cfg).items() if k != "p_values"}
    env = environment()
    with Store(db) as store:
        for r in results:
            config = {"method": "gating_dropout", "data": str(corpus or FORTUNES_DIR), "world_size": world,
                      **setting, "p": r["p"]}
            store.record_experiment("moe_lm", config, r, environment=env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dropkit.lab.experiments.moe_lm", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
