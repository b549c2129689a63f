"""Routing distribution, no-drop capacity, edge inputs and the collective's device of the MoE layer (one process).

The two-rank checks (token counts, p agreement, long runs) live in tests/test_moe_reliability.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import dropkit
from dropkit import moe as moe_module
from dropkit.methods.gating_dropout import GatingDropoutMoE, begin_gating_dropout_step
from dropkit.moe import top1_gating, top2_gating
from helpers.props import seeded

S, E = 1024, 8


def expert_logits(seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(S, E, generator=seeded(seed)) * scale


def assert_counts_match(counts: torch.Tensor, probs: torch.Tensor, sigmas: float = 5.0) -> None:
    """Each expert's count of S independent categorical draws lies within ``sigmas`` standard deviations of
    Σ_s probs[s, e] (the exact expectation for these logits)."""
    expected = probs.sum(0)
    std = (probs * (1 - probs)).sum(0).sqrt()
    assert ((counts.float() - expected).abs() <= sigmas * std + 1).all(), (counts.tolist(), expected.tolist())


def make_layer(seed: int = 0, **kw) -> GatingDropoutMoE:
    torch.manual_seed(seed)
    params = dict(d_model=16, d_ff=16, num_experts=E, generator=seeded(1000 + seed))
    params.update(kw)
    return dropkit.create("gating_dropout", **params)


# ------------------------------------------------------------------------------------------- Gumbel noise


class TestGumbelNoise:
    def test_standard_gumbel_moments(self):
        g = moe_module._gumbel(torch.Size([200_000]), torch.zeros(1), seeded(0))
        assert torch.isfinite(g).all()
        # Standard Gumbel: mean = Euler–Mascheroni γ, variance π²/6 (standard errors ≈ 0.003 and 0.01).
        assert abs(g.mean().item() - 0.5772) < 0.02
        assert abs(g.var().item() - math.pi ** 2 / 6) < 0.06

    def test_finite_in_float64(self):
        g = moe_module._gumbel(torch.Size([10_000]), torch.zeros(1, dtype=torch.float64), seeded(1))
        assert g.dtype == torch.float64 and torch.isfinite(g).all()


class TestRoutingDistribution:
    def test_top2_second_choice_follows_the_masked_softmax(self):
        logits = expert_logits(0)
        r = top2_gating(logits, capacity=S, generator=seeded(1))
        first = F.one_hot(r.expert[:, 0], E).bool()
        probs = torch.softmax(logits.masked_fill(first, float("-inf")), 1)
        counts = torch.bincount(r.expert[:, 1], minlength=E)
        assert counts[:2].sum() < S // 2, f"second choices pile onto experts 0/1: {counts.tolist()}"
        assert_counts_match(counts, probs)

    def test_rsample_top1_follows_the_softmax(self):
        logits = expert_logits(2)
        r = top1_gating(logits, capacity=S, rsample=True, generator=seeded(3))
        counts = torch.bincount(r.expert[:, 0], minlength=E)
        assert counts.max() < S // 2, f"rsample sends the tokens to one expert: {counts.tolist()}"
        assert_counts_match(counts, torch.softmax(logits, 1))

    def test_layer_top2_training_spreads_second_choices(self):
        layer = make_layer(k=2, noisy_gate=None)
        x = torch.randn(S, 16, generator=seeded(4))
        r = layer.moe.route(x, seeded(5))
        logits = F.linear(x, layer.moe.gate.weight)
        first = F.one_hot(r.expert[:, 0], E).bool()
        assert_counts_match(torch.bincount(r.expert[:, 1], minlength=E),
                            torch.softmax(logits.masked_fill(first, float("-inf")), 1))

    def test_layer_rsample_does_not_send_every_token_to_expert_0(self):
        layer = make_layer(k=1, noisy_gate="rsample")
        x = torch.randn(S, 16, generator=seeded(6))
        counts = torch.bincount(layer.moe.route(x, seeded(7)).expert[:, 0], minlength=E)
        assert_counts_match(counts, torch.softmax(F.linear(x, layer.moe.gate.weight), 1))


# ---------------------------------------------------------------------------------------- drop_tokens=False


class TestNoDrop:
    @pytest.mark.parametrize("k,noisy_gate", [(1, "rsample"), (1, "jitter"), (2, "jitter"), (2, None)])
    def test_training_keeps_every_choice(self, k, noisy_gate):
        layer = make_layer(k=k, noisy_gate=noisy_gate, drop_tokens=False, p=0.0)
        x = torch.randn(S, 16, generator=seeded(8)) * 3
        r = layer.moe.route(x, seeded(9))
        assert r.kept.all(), f"{int((~r.kept).sum())} of {r.kept.numel()} choices dropped"
        load = torch.bincount(r.expert.reshape(-1), minlength=E)
        assert r.capacity == int(load.max()), "capacity is the largest actual load, no more"

    @pytest.mark.parametrize("k", [1, 2])
    def test_gating_functions_size_capacity_from_their_choices(self, k):
        logits = expert_logits(10, scale=3.0)
        gen = seeded(11)
        r = top1_gating(logits, None, rsample=True, generator=gen) if k == 1 else top2_gating(logits, None, generator=gen)
        assert r.kept.all()
        assert r.capacity == int(torch.bincount(r.expert.reshape(-1), minlength=E).max())
        dispatch = moe_module.dense_combine_weights(r, E) > 0
        assert dispatch.sum(0).max() <= 1, "a slot holds at most one token"

    def test_layer_output_matches_unlimited_capacity(self):
        layer = make_layer(k=2, drop_tokens=False, p=0.0)
        x = torch.randn(64, 16, generator=seeded(12)) * 3
        y = layer(x)
        wide = make_layer(k=2, capacity_factor=float(E), min_capacity=64, p=0.0)  # same weights, C = S
        torch.testing.assert_close(y, wide(x))


# ----------------------------------------------------------------------------------------------- edge inputs


class TestEmptyBatch:
    @pytest.mark.parametrize("kw", [dict(k=1), dict(k=2), dict(k=2, drop_tokens=False),
                                    dict(p=1.0, mode="bypass_gate"), dict(p=1.0, expert_drop=True)])
    @pytest.mark.parametrize("shape", [(0, 16), (0, 5, 16), (3, 0, 16)])
    def test_returns_empty_output_and_zero_aux(self, kw, shape):
        layer = make_layer(**kw)
        x = torch.randn(shape, requires_grad=True)
        y = layer(x)
        assert y.shape == shape and y.dtype == x.dtype
        assert layer.aux_loss.shape == () and float(layer.aux_loss) == 0.0
        (y.sum() + layer.aux_loss + 0.0 * x.sum()).backward()  # a training loop's backward still runs
        assert x.grad is not None and x.grad.shape == shape

    def test_eval_empty(self):
        layer = make_layer(k=2).eval()
        assert layer(torch.randn(0, 4, 16)).shape == (0, 4, 16)


class TestCompileBatchSizes:
    @pytest.mark.parametrize("k", [1, 2])
    def test_compiled_layer_takes_changing_batch_sizes(self, k):
        layer = make_layer(k=k, p=0.3, generator=None)
        torch._dynamo.reset()
        compiled = torch.compile(layer, fullgraph=True, backend="eager")
        for n in (8, 5, 3):
            y = compiled(torch.randn(n, 6, 16))
            assert y.shape == (n, 6, 16) and torch.isfinite(y).all()


# --------------------------------------------------------------------------------------- step granularity


class TestStepGranularity:
    def model(self, **kw) -> torch.nn.Sequential:
        params = dict(p=0.5, mode="bypass_gate", granularity="step")
        params.update(kw)
        return torch.nn.Sequential(make_layer(0, **params), make_layer(1, **params))

    def test_second_forward_without_a_new_step_raises(self):
        model = self.model()
        x = torch.randn(4, 16)
        begin_gating_dropout_step(model)
        model(x)
        with pytest.raises(RuntimeError, match="begin_gating_dropout_step"):
            model(x)

    def test_one_rank_gated_local_needs_the_step_too(self):
        model = self.model(mode="gated_local")  # the decision cannot change the output, but the loop is wrong
        x = torch.randn(4, 16)
        begin_gating_dropout_step(model)
        model(x)
        with pytest.raises(RuntimeError, match="begin_gating_dropout_step"):
            model(x)

    def test_each_step_is_used_once_by_each_layer(self):
        model = self.model()
        x = torch.randn(4, 16)
        seen = []
        for _ in range(30):
            drop = begin_gating_dropout_step(model)
            model(x)
            assert model[0].last_dropped == model[1].last_dropped == drop
            seen.append(drop)
        assert 0 < sum(seen) < 30

    def test_eval_forwards_need_no_step(self):
        model = self.model().eval()
        x = torch.randn(4, 16)
        model(x)
        model(x)


# ------------------------------------------------------------------------- the collective's device (NCCL)


class _Collective(Exception):
    pass


class TestCollectiveDevice:
    @pytest.mark.parametrize("backend,expect", [
        ("gloo", "cpu"), ("nccl", "cuda"), ("cpu:gloo,cuda:nccl", "cpu"), ("mpi", "cpu"),
    ])
    def test_group_device(self, monkeypatch, backend, expect):
        monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
        device = moe_module.group_device(object())
        assert device.type == expect
        if expect == "cuda":
            assert device == torch.device("cuda", 1), "NCCL takes tensors on the rank's current GPU"
        assert moe_module.group_device(None) == torch.device("cpu")

    @pytest.mark.parametrize("decision", ["broadcast", "shared_generator"])
    @pytest.mark.parametrize("granularity", ["layer", "step"])
    def test_decision_collective_uses_the_group_device(self, monkeypatch, decision, granularity):
        """NCCL only takes CUDA tensors: the decision's collective must be on the group's device, not the CPU.

        No GPU is needed: the group is faked with world size 2 and the group's device with ``meta``; the spy
        records the device handed to the collective and stops the call there.
        """
        model = torch.nn.Sequential(make_layer(p=0.5, mode="bypass_gate", decision=decision, granularity=granularity))
        layer = model[0]
        fake_group = object()
        layer.moe.process_group, layer.moe.world_size = fake_group, 2
        seen = []

        def spy(tensor, *args, **kwargs):
            seen.append(tensor.device)
            raise _Collective

        monkeypatch.setattr(moe_module, "group_device", lambda group: torch.device("meta"), raising=False)
        monkeypatch.setattr(dist, "broadcast", spy)
        monkeypatch.setattr(dist, "all_reduce", spy)
        monkeypatch.setattr(dist, "get_global_rank", lambda group, rank: rank)
        with pytest.raises(_Collective):
            if granularity == "step":
                begin_gating_dropout_step(model)
            model(torch.randn(4, 16))
        assert seen == [torch.device("meta")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_nccl_decision_on_one_gpu(tmp_path):
    """A real NCCL group of one rank: the step decision and the forward run with a CUDA model."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1)
    try:
        torch.cuda.set_device(0)
        group = dist.group.WORLD
        assert moe_module.group_device(group).type == "cuda"
        layer = make_layer(p=0.5, mode="bypass_gate", granularity="step", process_group=group, generator=None).cuda()
        begin_gating_dropout_step(layer)
        assert layer(torch.randn(4, 16, device="cuda")).is_cuda
    finally:
        dist.destroy_process_group()
