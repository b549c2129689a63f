"""The router of dropkit.moe: top-1 / top-2 combine weights, capacity, load-balancing loss, float32 routing."""

from __future__ import annotations

import pytest
import torch

from dropkit.moe import compute_capacity, dense_combine_weights, top1_gating, top2_gating
from helpers.moe import make


class TestGating:
    def test_top1_combine_sums_to_gate_prob_or_zero(self):
        torch.manual_seed(0)
        logits = torch.randn(40, 4) * 2
        r = top1_gating(logits, capacity=6, use_rts=True)
        total = dense_combine_weights(r, 4).sum((1, 2))
        gates = torch.softmax(logits, 1)
        expect = torch.where(r.kept[:, 0], gates.max(1).values, torch.zeros(40))
        torch.testing.assert_close(total, expect)
        assert (~r.kept).any(), "40 tokens into 4×6 slots must drop some"

    def test_top2_combine_sums_to_one_for_kept_tokens(self):
        torch.manual_seed(1)
        logits = torch.randn(40, 4) * 2
        r = top2_gating(logits, capacity=12, sample_second=True)
        total = dense_combine_weights(r, 4).sum((1, 2))
        any_kept = r.kept.any(1)
        torch.testing.assert_close(total[any_kept], torch.ones(int(any_kept.sum())))
        assert (total[~any_kept] == 0).all()
        assert (r.expert[:, 0] != r.expert[:, 1]).all(), "the two choices are different experts"

    @pytest.mark.parametrize("k,use_rts", [(1, True), (1, False), (2, False)])
    def test_no_expert_over_capacity_and_one_token_per_slot(self, k, use_rts):
        torch.manual_seed(2)
        logits = torch.randn(64, 4) * 3
        C = compute_capacity(64, 4, k, 1.0, 4)
        r = top1_gating(logits, C, use_rts=use_rts) if k == 1 else top2_gating(logits, C)
        dispatch = dense_combine_weights(r, 4) > 0
        assert dispatch.sum((0, 2)).max() <= C
        assert dispatch.sum(0).max() <= 1, "a slot holds at most one token"
        assert int(dispatch.sum()) == int(r.kept.sum())

    @pytest.mark.parametrize("gating", [top1_gating, top2_gating])
    def test_aux_loss_is_one_under_uniform_routing(self, gating):
        E = 4
        logits = torch.eye(E).repeat(3, 1) * 2.0  # every expert chosen by 3 tokens, mean gate prob 1/E each
        r = gating(logits, capacity=12)
        torch.testing.assert_close(r.l_aux, torch.tensor(1.0))
        collapsed = gating(torch.zeros(12, E).index_fill_(1, torch.tensor([0]), 20.0), capacity=12)
        assert collapsed.l_aux > 3.9  # → E when all tokens and all probability go to one expert

    def test_capacity_formula(self):
        assert compute_capacity(12, 4, 1, 1.0, 4) == 4
        assert compute_capacity(12, 4, 1, 2.0, 4) == 6
        assert compute_capacity(12, 4, 2, 1.0, 4) == 6
        assert compute_capacity(100, 4, 1, 1.0, 4) == 25
        assert compute_capacity(3, 4, 1, 1.0, 8) == 3, "never more slots than tokens"

    def test_router_runs_in_float32_and_eval_capacity_used(self):
        layer = make().to(torch.bfloat16)
        x = torch.randn(24, 8, dtype=torch.bfloat16)
        r = layer.moe.route(x)
        assert r.weight.dtype == torch.float32 and r.l_aux.dtype == torch.float32
        assert r.capacity == compute_capacity(24, 4, 1, 1.0, 4)
        layer.eval()
        assert layer.moe.route(x).capacity == compute_capacity(24, 4, 1, 2.0, 4)

    def test_gate_gradient_flows_through_combine_weights_and_aux(self):
        layer = make(noisy_gate=None, use_rts=False)
        x = torch.randn(2, 6, 8)
        layer(x).sum().backward()
        g_combine = layer.moe.gate.weight.grad.clone()
        assert g_combine.abs().sum() > 0
        layer.zero_grad()
        layer(x)
        layer.aux_loss.backward()
        assert layer.moe.gate.weight.grad.abs().sum() > 0
        assert layer.moe.experts.w1.grad is None, "the aux loss does not reach the experts"
