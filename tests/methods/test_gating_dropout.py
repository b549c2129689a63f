"""Gating Dropout (docs/methods/gating_dropout.md) in its expert-parallel MoE layer; the router is tested in
tests/test_moe.py.

The distributed checks run two gloo processes on 127.0.0.1 (tests/helpers/dist_moe_worker.py) once per module, with a
timeout, and compare what each rank saw against a one-process reference recomputed here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dropkit
from dropkit.methods.gating_dropout import (
    GatingDropoutMoE, begin_gating_dropout_step, moe_aux_loss, moe_comm_stats, reset_moe_comm_stats,
)
from dropkit.moe import compute_capacity, dense_combine_weights
from helpers.moe import CFG, make, run_two_ranks
from helpers.props import assert_compiles_fullgraph, binomial_tolerance


def ffn(layer: GatingDropoutMoE, e: int, x: torch.Tensor) -> torch.Tensor:
    ex = layer.moe.experts
    return F.relu(x @ ex.w1[e] + ex.b1[e]) @ ex.w2[e] + ex.b2[e]


def dense_reference(layer: GatingDropoutMoE, x: torch.Tensor, gen_seed: int) -> torch.Tensor:
    """GShard's dense algorithm: einsum dispatch, a loop over experts, einsum combine (same routing draws)."""
    flat = x.reshape(-1, layer.d_model)
    routing = layer.moe.route(flat, torch.Generator().manual_seed(gen_seed))
    combine = dense_combine_weights(routing, layer.num_experts)
    dispatched = torch.einsum("sec,sm->ecm", (combine > 0).to(flat.dtype), flat)
    out = torch.stack([ffn(layer, e, dispatched[e]) for e in range(layer.num_experts)])
    return torch.einsum("sec,ecm->sm", combine, out).reshape(x.shape)


# ----------------------------------------------------------------------------------------------- registry


class TestCard:
    def test_registered_as_expert_block(self):
        card = dropkit.get_card("gating_dropout")
        assert (card.family, card.kind) == ("experts", "block")
        assert card.taxonomy["unit"] == "expert" and card.taxonomy["space"] == "routing"
        assert card.defaults["capacity_factor"] == 1.0 and card.defaults["eval_capacity_factor"] == 2.0
        assert set(card.required) == {"d_model", "d_ff"}

    def test_is_dropkit_module_with_p(self):
        layer = make(p=0.2)
        assert isinstance(layer, dropkit.DropkitModule) and layer.p == 0.2
        with pytest.raises(ValueError, match="p"):
            layer.p = 1.5


# ------------------------------------------------------------------------------------------ one-rank layer


class TestLayer:
    @pytest.mark.parametrize("k", [1, 2])
    @pytest.mark.parametrize("train", [True, False])
    def test_equals_dense_reference(self, k, train):
        layer = make(k=k, p=0.0, gen_seed=7)
        layer.train(train)
        x = torch.randn(3, 5, 8)
        torch.testing.assert_close(layer(x), dense_reference(layer, x, 7), atol=1e-5, rtol=1e-5)

    def test_shapes(self):
        layer = make()
        for shape in [(2, 6, 8), (12, 8), (1, 1, 8)]:
            assert layer(torch.randn(shape)).shape == shape
        assert layer.aux_loss.shape == () and layer.routed

    def test_p0_bit_identical_to_base_layer(self):
        layer = make(p=0.0, gen_seed=3)
        x = torch.randn(2, 6, 8)
        y = layer(x)
        base, _ = layer.moe.forward_routed(x.reshape(-1, 8), generator=torch.Generator().manual_seed(3))
        assert torch.equal(y, base.reshape(x.shape))

    def test_gated_local_one_rank_equals_normal_path(self):
        x = torch.randn(2, 6, 8)
        assert torch.equal(make(p=1.0, gen_seed=5)(x), make(p=0.0, gen_seed=5)(x))

    def test_bypass_gate_round_robin_and_no_gate_gradient(self):
        layer = make(p=1.0, mode="bypass_gate")
        x = torch.randn(10, 8)
        y = layer(x)
        expect = torch.stack([ffn(layer, s % 4, x[s]) for s in range(10)])
        torch.testing.assert_close(y, expect)
        y.sum().backward()
        assert layer.moe.gate.weight.grad is None
        assert not layer.routed and layer.aux_loss == 0

    def test_expert_drop_outputs_zero_and_no_expert_gradient(self):
        layer = make(p=1.0, expert_drop=True)
        x = torch.randn(2, 6, 8, requires_grad=True)
        y = layer(x)
        assert torch.equal(y, torch.zeros_like(y))
        (x.sum() + y.sum()).backward()
        assert all(p.grad is None for p in layer.parameters())
        assert layer.last_dropped and not layer.routed

    @pytest.mark.parametrize("decision", ["broadcast", "shared_generator"])
    def test_drop_frequency(self, decision):
        layer = make(p=0.3, mode="bypass_gate", decision=decision)
        n = 10_000
        drops = sum(layer.draw_drop() for _ in range(n))
        assert abs(drops / n - 0.3) < binomial_tolerance(n, 0.3)
        assert layer.decisions == n and layer.drops == drops

    def test_eval_ignores_p_and_uses_eval_capacity(self):
        x = torch.randn(2, 6, 8)
        on = make(p=1.0, mode="bypass_gate", expert_drop=True).eval()
        off = make(p=0.0).eval()
        assert torch.equal(on(x), off(x))
        assert on.routed and not on.last_dropped and on.decisions == 0

    def test_aux_accounting_excludes_unrouted_layers(self):
        routed, bypassed = make(p=0.0), make(p=1.0, mode="bypass_gate")
        model = torch.nn.Sequential(routed, bypassed)
        model(torch.randn(2, 6, 8))
        torch.testing.assert_close(moe_aux_loss(model), routed.aux_loss_coef * routed.aux_loss)
        both = torch.nn.Sequential(make(p=0.0), make(p=1.0))  # gated_local keeps its aux loss
        both(torch.randn(2, 6, 8))
        expect = (both[0].aux_loss + both[1].aux_loss) * 1e-2 / 2
        torch.testing.assert_close(moe_aux_loss(both), expect)

    def test_step_granularity(self):
        model = torch.nn.Sequential(make(p=0.5, mode="bypass_gate", granularity="step"),
                                    make(p=0.5, mode="bypass_gate", granularity="step"))
        x = torch.randn(2, 6, 8)
        with pytest.raises(RuntimeError, match="begin_gating_dropout_step"):
            model(x)
        seen = []
        for _ in range(40):
            drop = begin_gating_dropout_step(model)
            model(x)
            assert model[0].last_dropped == model[1].last_dropped == drop
            seen.append(drop)
        assert 0 < sum(seen) < 40

    def test_generator_determinism(self):
        x = torch.randn(4, 6, 8) * 3
        a, b, c = make(gen_seed=11, p=0.0), make(gen_seed=11, p=0.0), make(gen_seed=12, p=0.0)
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), c(x)), "jitter and token selection follow the generator"

    def test_no_one_rank_comm(self):
        layer = make()
        layer(torch.randn(2, 6, 8)).sum().backward()
        assert moe_comm_stats(layer) == {"calls": 0, "bytes_sent": 0, "buffer_bytes": 0}
        reset_moe_comm_stats(layer)

    def test_compiles_fullgraph(self):
        layer = make(p=0.3, gen_seed=None)
        assert_compiles_fullgraph(layer, torch.randn(2, 6, 8))
        assert_compiles_fullgraph(make(p=0.0, gen_seed=None, k=2).eval(), torch.randn(2, 6, 8))

    def test_bf16_and_zero_input(self):
        layer = make().to(torch.bfloat16)
        y = layer(torch.randn(2, 6, 8, dtype=torch.bfloat16))
        assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
        y = make()(torch.randn(2, 6, 8).bfloat16())  # float32 layer, bf16 input: output keeps bf16
        assert y.dtype == torch.bfloat16
        y = make(k=2)(torch.zeros(2, 6, 8))
        assert torch.isfinite(y).all() and torch.isfinite(make(k=2).aux_loss)

    def test_gradcheck_fixed_routing(self):
        layer = make(noisy_gate=None, use_rts=False, gen_seed=None, k=2).double().eval()
        x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5, fast_mode=True)

    def test_state_dict_round_trip(self):
        a = make(p=0.2, mode="bypass_gate", decision="shared_generator", decision_seed=5)
        for _ in range(3):
            a.draw_drop()
        b = make(p=0.0)
        b.load_state_dict(a.state_dict())
        assert (b.p, b.mode, b.decision) == (0.2, "bypass_gate", "shared_generator")
        assert [a.draw_drop() for _ in range(20)] == [b.draw_drop() for _ in range(20)]
        torch.testing.assert_close(b.moe.experts.w1, a.moe.experts.w1)


class TestBadArguments:
    @pytest.mark.parametrize("kw,err,match", [
        (dict(k=3), ValueError, "k"),
        (dict(k=True), TypeError, "k"),
        (dict(k=4, num_experts=2), ValueError, "k"),
        (dict(d_model=0), ValueError, "d_model"),
        (dict(num_experts=1.5), TypeError, "num_experts"),
        (dict(mode="local"), ValueError, "mode"),
        (dict(p=-0.1), ValueError, "p"),
        (dict(p="0.3"), TypeError, "p"),
        (dict(granularity="epoch"), ValueError, "granularity"),
        (dict(decision="vote"), ValueError, "decision"),
        (dict(capacity_factor=0.0), ValueError, "capacity_factor"),
        (dict(noisy_gate="gauss"), ValueError, "noisy_gate"),
        (dict(noisy_gate="rsample", k=2), ValueError, "rsample"),
        (dict(expert_drop=1), TypeError, "expert_drop"),
        (dict(activation="tanh"), ValueError, "activation"),
        (dict(process_group="world"), ValueError, "process_group"),
    ])
    def test_constructor(self, kw, err, match):
        with pytest.raises(err, match=match):
            make(**kw)

    def test_unknown_parameter(self):
        with pytest.raises(ValueError, match="unknown parameter"):
            dropkit.create("gating_dropout", d_model=8, d_ff=8, experts=4)

    @pytest.mark.parametrize("x,err", [
        (torch.randn(2, 6, 7), ValueError),
        (torch.randn(2, 2, 6, 8), ValueError),
        (torch.ones(2, 6, 8, dtype=torch.long), TypeError),
    ])
    def test_inputs(self, x, err):
        with pytest.raises(err):
            make()(x)


# -------------------------------------------------------------------------------------- two gloo processes


WORLD = 2
SHAPE = (2, 6, 8)
TIGHT = dict(capacity_factor=0.5, min_capacity=1)  # as in the worker's routed scenarios


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("moe_dist")
    return run_two_ranks(out, timeout=120, world=WORLD)


def _inputs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


def _reference_step(layer: GatingDropoutMoE, rank: int) -> dict:
    x, gout = _inputs(rank)
    x.requires_grad_(True)
    y = layer(x)
    ((y * gout).sum() + layer.aux_loss).backward()
    return {"y": y.detach(), "x_grad": x.grad, "aux": layer.aux_loss.detach(),
            "grads": {n: p.grad for n, p in layer.named_parameters()}}


EXPERT_PARAMS = ("moe.experts.w1", "moe.experts.b1", "moe.experts.w2", "moe.experts.b2")


class TestTwoRanks:
    @pytest.mark.parametrize("k", [1, 2])
    def test_equals_one_process_reference(self, ranks, k):
        refs = [_reference_step(make(k=k, p=0.0, gen_seed=1000 + r, **TIGHT), r) for r in range(WORLD)]
        L = CFG["num_experts"] // WORLD
        for r in range(WORLD):
            got, ref = ranks[r][f"routed_k{k}"], refs[r]
            torch.testing.assert_close(got["y"], ref["y"], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got["x_grad"], ref["x_grad"], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got["aux"], ref["aux"])
            torch.testing.assert_close(got["grads"]["moe.gate.weight"], ref["grads"]["moe.gate.weight"],
                                       atol=1e-5, rtol=1e-5)
            for name in EXPERT_PARAMS:  # the rank's experts saw every rank's tokens
                expect = sum(refs[s]["grads"][name][r * L:(r + 1) * L] for s in range(WORLD))
                torch.testing.assert_close(got["grads"][name], expect, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(got["synced"][name], expect / WORLD, atol=1e-5, rtol=1e-5)
            mean_gate = sum(refs[s]["grads"]["moe.gate.weight"] for s in range(WORLD)) / WORLD
            torch.testing.assert_close(got["synced"]["moe.gate.weight"], mean_gate, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("k", [1, 2])
    def test_capacity_drops_happened_in_the_compared_step(self, k):
        for r in range(WORLD):
            layer = make(k=k, p=0.0, gen_seed=1000 + r, **TIGHT)
            routing = layer.moe.route(_inputs(r)[0].reshape(-1, 8), torch.Generator().manual_seed(1000 + r))
            assert (~routing.kept).any(), "the reference comparison should cover token dropping"

    @pytest.mark.parametrize("k", [1, 2])
    def test_all_to_all_bytes(self, ranks, k):
        C = compute_capacity(12, 4, k, 0.5, 1)
        buffer = CFG["num_experts"] * C * CFG["d_model"] * 4
        for r in range(WORLD):
            got = ranks[r][f"routed_k{k}"]
            assert got["comm_forward"] == {"calls": 2, "buffer_bytes": 2 * buffer, "bytes_sent": buffer}
            assert got["comm_step"] == {"calls": 4, "buffer_bytes": 4 * buffer, "bytes_sent": 2 * buffer}

    def test_p1_never_calls_all_to_all_and_uses_local_experts(self, ranks):
        L = CFG["num_experts"] // WORLD
        for r in range(WORLD):
            got = ranks[r]["local"]
            assert got["a2a_calls"] == 0 and got["comm_step"]["calls"] == 0 and got["dropped"]
            ref_layer = make(k=1, p=0.0, gen_seed=1000 + r)
            with torch.no_grad():  # expert e is served by this rank's local expert e mod L
                for name in ("w1", "b1", "w2", "b2"):
                    w = getattr(ref_layer.moe.experts, name)
                    w.copy_(w[[r * L + e % L for e in range(CFG["num_experts"])]].clone())
            ref = _reference_step(ref_layer, r)
            torch.testing.assert_close(got["y"], ref["y"], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got["x_grad"], ref["x_grad"], atol=1e-5, rtol=1e-5)
            for name in EXPERT_PARAMS:
                g = ref["grads"][name]
                torch.testing.assert_close(got["grads"][name], g[:L] + g[L:], atol=1e-5, rtol=1e-5)

    def test_bypass_gate_serves_tokens_with_the_local_expert(self, ranks):
        for r in range(WORLD):
            got = ranks[r]["bypass"]
            ref_layer = make(k=1, p=0.0, num_experts=2)
            x, _ = _inputs(r)
            torch.testing.assert_close(got["y"], ffn(ref_layer, r, x).detach(), atol=1e-5, rtol=1e-5)
            assert got["a2a_calls"] == 0 and got["grads"]["moe.gate.weight"] is None and got["aux"] == 0

    def test_expert_drop(self, ranks):
        for r in range(WORLD):
            got = ranks[r]["expert_drop"]
            assert torch.equal(got["y"], torch.zeros(SHAPE)) and got["a2a_calls"] == 0
            assert all(g is None for g in got["grads"].values())

    def test_eval_ignores_p(self, ranks):
        for r in range(WORLD):
            ref = make(k=1, p=0.0, gen_seed=1000 + r).eval()(_inputs(r)[0]).detach()
            for key in ("eval_p03", "eval_p1"):
                assert ranks[r][key]["a2a_calls"] == 2
                torch.testing.assert_close(ranks[r][key]["y"], ref, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("decision", ["broadcast", "shared_generator"])
    def test_same_decision_on_every_rank_for_100_steps(self, ranks, decision):
        seen = [ranks[r][f"agree_{decision}"] for r in range(WORLD)]
        assert len(seen[0]) == 100 and seen[0] == seen[1]
        assert abs(sum(seen[0]) / 100 - 0.5) < binomial_tolerance(100, 0.5)

    def test_step_granularity_shared_by_layers_and_ranks(self, ranks):
        steps = [ranks[r]["step_granularity"] for r in range(WORLD)]
        assert steps[0] == steps[1]
        assert all(a == b for a, b in steps[0])
        assert 0 < sum(a for a, _ in steps[0]) < 30


# --------------------------------------------------------------------------------------- lab: the MoE LM


class TestMoELMLab:
    def _corpus(self, tmp_path: Path) -> Path:
        words = ["the", "expert", "token", "route", "gate", "drop", "local", "model", "layer", "step"]
        g = torch.Generator().manual_seed(0)
        lines = [" ".join(words[i] for i in torch.randint(0, 10, (8,), generator=g).tolist()) for _ in range(300)]
        text = "\n%\n".join(lines)  # fortune-style separators
        path = tmp_path / "corpus"
        path.write_text(text)
        return path

    def test_load_and_encode_corpus(self, tmp_path):
        from dropkit.lab.experiments.moe_lm import encode_corpus, load_corpus

        text = load_corpus(self._corpus(tmp_path))
        assert "%" not in text
        train, val, vocab = encode_corpus(text)
        assert len(val) == pytest.approx(0.1 * len(text), abs=2) and len(train) + len(val) == len(text)
        assert "".join(vocab[i] for i in train[:20].tolist()) == text[:20]
        with pytest.raises(FileNotFoundError, match="corpus"):
            load_corpus(tmp_path / "missing")

    def test_train_models_one_process(self, tmp_path):
        from dropkit.lab.experiments.moe_lm import LMConfig, encode_corpus, format_results, load_corpus, train_models

        train, val, vocab = encode_corpus(load_corpus(self._corpus(tmp_path)))
        cfg = LMConfig(d_model=16, n_heads=2, n_layers=2, d_ff=16, num_experts=2, seq_len=16, batch=4, steps=4,
                       warmup_steps=1, eval_batches=2, p_values=[0.0, 0.3], mode="bypass_gate")
        results = train_models(cfg, train, val, len(vocab))
        assert [r["p"] for r in results] == [0.0, 0.3]
        for r in results:
            assert math.isfinite(r["val_loss"]) and r["val_loss"] < math.log(len(vocab)) + 1.0
            assert r["a2a_bytes_per_step"] == 0 and r["step_time_ms"] > 0
        assert results[0]["dropped_fraction"] == 0
        assert "val_loss" in format_results(results)

    def test_launch_backend_puts_nccl_ranks_on_their_gpu(self):
        from dropkit.lab.experiments.moe_lm import launch_backend

        assert launch_backend(True, 1) == ("nccl", torch.device("cuda", 1))
        assert launch_backend(False, 1) == ("gloo", torch.device("cpu"))

    def test_model_and_batches_live_on_the_run_device(self, tmp_path):
        """What NCCL needs (model and data on the GPU), checked on the CPU-only ``meta`` device."""
        from dropkit.lab.experiments.moe_lm import LMConfig, _Run, encode_corpus, load_corpus

        train, _, vocab = encode_corpus(load_corpus(self._corpus(tmp_path)))
        cfg = LMConfig(d_model=16, n_heads=2, n_layers=1, d_ff=16, num_experts=2, seq_len=8, batch=2)
        run = _Run(cfg, 0.3, len(vocab), None, device="meta")
        assert all(p.device.type == "meta" for p in run.model.parameters())
        assert all(t.device.type == "meta" and t.shape == (2, 8) for t in run.batch(train, cfg))

    def test_cli_registers_experts_commands(self):
        import argparse

        from dropkit.lab.cli.experiments import add_commands as register_commands

        parser = argparse.ArgumentParser()
        register_commands(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["experts", "moe-lm", "--steps", "3", "--p", "0", "0.3"])
        assert args.steps == 3 and args.p == [0.0, 0.3] and callable(args.func)
        args = parser.parse_args(["experts", "soft-tree", "regression", "--depths", "2", "3"])
        assert args.task == "regression" and args.depths == [2, 3] and callable(args.func)
        bad = parser.parse_args(["experts", "moe-lm", "--steps", "0"])
        with pytest.raises(ValueError, match="steps"):
            bad.func(bad)
