"""Tests of hme_dropout: soft decision tree with asymmetric left-subtree dropout (spec §6e)."""

from __future__ import annotations

import pytest
import torch

import dropkit
from dropkit.masks import sample_keep_mask
from dropkit.methods.hme_dropout import HMEDropout, hme_dropout, leaf_probabilities
from props import assert_compiles_fullgraph


def make(depth: int = 3, p: float = 0.3, seed: int = 0, **kw) -> HMEDropout:
    torch.manual_seed(seed)
    params = dict(in_features=3, out_features=2, depth=depth, p=p)
    params.update(kw)
    return dropkit.create("hme_dropout", **params)


def recursive_response(left: torch.Tensor, leaves: torch.Tensor, node: int = 0) -> torch.Tensor:
    """y_m = h_m·y_left + (1 − h_m)·y_right, recursing down the heap-ordered tree."""
    n_internal = left.shape[1]
    if node >= n_internal:
        return leaves[node - n_internal].expand(left.shape[0], -1)
    h = left[:, node:node + 1]
    return h * recursive_response(left, leaves, 2 * node + 1) + (1 - h) * recursive_response(left, leaves, 2 * node + 2)


def leaves_under(node: int, n_internal: int) -> list[int]:
    if node >= n_internal:
        return [node - n_internal]
    return leaves_under(2 * node + 1, n_internal) + leaves_under(2 * node + 2, n_internal)


class TestCard:
    def test_registered_as_expert_block(self):
        card = dropkit.get_card("hme_dropout")
        assert (card.family, card.kind, card.taxonomy["unit"]) == ("experts", "block", "subtree")
        assert card.required == ("in_features",) and card.defaults["eval_mode"] == "expectation"
        assert isinstance(make(), dropkit.DropkitModule)


class TestLeafProbabilities:
    @pytest.mark.parametrize("depth", [1, 2, 5])
    def test_sum_to_one_and_nonnegative_for_any_delta(self, depth):
        torch.manual_seed(depth)
        g = torch.rand(64, 2**depth - 1)
        keep = sample_keep_mask(g, 0.5, g.shape)
        pi = leaf_probabilities(g * keep, depth)
        assert pi.shape == (64, 2**depth) and (pi >= 0).all()
        torch.testing.assert_close(pi.sum(1), torch.ones(64))

    @pytest.mark.parametrize("depth", [1, 3, 4])
    def test_vectorised_equals_recursive(self, depth):
        torch.manual_seed(0)
        g = torch.rand(7, 2**depth - 1, dtype=torch.float64)
        leaves = torch.randn(2**depth, 3, dtype=torch.float64)
        keep = sample_keep_mask(g, 0.6, g.shape)
        y = hme_dropout(g * keep, leaves, 0.0)  # p = 0: mixes the given left probabilities as they are
        torch.testing.assert_close(y, recursive_response(g * keep, leaves))


class TestTree:
    def test_p0_train_is_plain_tree_and_equals_eval_at_p0(self):
        layer = make(p=0.0)
        x = torch.randn(9, 3)
        plain = recursive_response(layer.gates(x), layer.leaf_value)
        torch.testing.assert_close(layer(x), plain)
        torch.testing.assert_close(layer.eval()(x), plain)

    @pytest.mark.parametrize("leaf", ["constant", "linear"])
    def test_p1_train_gives_rightmost_leaf(self, leaf):
        layer = make(p=1.0, leaf=leaf)
        x = torch.randn(9, 3) * 5
        rightmost = layer.leaf_responses(x)
        rightmost = rightmost[-1].expand(9, -1) if leaf == "constant" else rightmost[:, -1]
        torch.testing.assert_close(layer(x), rightmost)

    def test_eval_expectation_equals_monte_carlo_mean(self):
        layer = make(depth=3, p=0.4, leaf="linear").double()
        x = torch.randn(4, 3, dtype=torch.float64)
        n = 100_000
        with torch.no_grad():
            draws = layer(x.repeat(n, 1)).reshape(n, 4, 2)  # per-sample δ: every repeat is an independent draw
            expect = layer.eval()(x)
        mean, std = draws.mean(0), draws.std(0)
        assert (mean - expect).abs().le(4 * std / n**0.5 + 1e-12).all()

    def test_mc_eval_mode_approaches_expectation(self):
        layer = make(p=0.4, eval_mode="mc", mc_samples=20_000).eval()
        x = torch.randn(5, 3)
        mc = layer(x)
        layer.eval_mode = "expectation"
        torch.testing.assert_close(mc, layer(x), atol=0.02, rtol=0)

    def test_dropped_left_subtrees_get_zero_weight_and_gradient(self):
        layer = make(depth=4, p=0.5, per_sample=False, generator=torch.Generator().manual_seed(3))
        x = torch.randn(6, 3)
        layer(x).sum().backward()
        g = layer.gates(x)
        keep = sample_keep_mask(g, 0.5, (1, g.shape[1]), torch.Generator().manual_seed(3))[0]
        dropped = (keep == 0).nonzero().flatten().tolist()
        assert dropped, "seed 3 should drop some node"
        pi = leaf_probabilities(g * keep, 4)
        for m in dropped:
            under = leaves_under(2 * m + 1, 15)
            assert (pi[:, under] == 0).all()
            assert (layer.leaf_value.grad[under] == 0).all()
            assert (layer.gate.weight.grad[m] == 0).all() and layer.gate.bias.grad[m] == 0
        assert layer.leaf_value.grad[-1].abs().sum() > 0, "the rightmost leaf always learns"

    def test_per_sample_vs_per_batch(self):
        x = torch.randn(1, 3).repeat(50, 1)
        per_sample = make(p=0.5)(x)
        assert not torch.allclose(per_sample, per_sample[:1].expand_as(per_sample)), "rows draw independent δ"
        per_batch = make(p=0.5, per_sample=False)(x)
        torch.testing.assert_close(per_batch, per_batch[:1].expand_as(per_batch), atol=1e-6, rtol=0)  # rows share δ

    def test_eval_deterministic_and_leaves_rng_alone(self):
        layer = make(p=0.5).eval()
        x = torch.randn(8, 3)
        state = torch.get_rng_state()
        assert torch.equal(layer(x), layer(x))
        assert torch.equal(torch.get_rng_state(), state)

    def test_generator_determinism(self):
        x = torch.randn(8, 3)
        a = make(generator=torch.Generator().manual_seed(1))(x)
        b = make(generator=torch.Generator().manual_seed(1))(x)
        c = make(generator=torch.Generator().manual_seed(2))(x)
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_disabled_layer_trains_the_plain_tree(self):
        layer = make(p=0.9)
        layer.enabled = False
        x = torch.randn(5, 3)
        torch.testing.assert_close(layer(x), recursive_response(layer.gates(x), layer.leaf_value))

    def test_shapes_gradient_and_zero_input(self):
        layer = make(leaf="linear")
        x = torch.randn(2, 7, 3, requires_grad=True)
        y = layer(x)
        assert y.shape == (2, 7, 2)
        y.sum().backward()
        assert x.grad.abs().sum() > 0 and layer.gate.weight.grad.abs().sum() > 0
        assert torch.isfinite(make()(torch.zeros(4, 3))).all()

    def test_gradcheck_expectation(self):
        layer = make(depth=2, leaf="linear").double().eval()
        x = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(layer, (x,))

    def test_bf16_and_compile(self):
        layer = make().to(torch.bfloat16)
        y = layer(torch.randn(4, 3, dtype=torch.bfloat16))
        assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
        assert make()(torch.randn(4, 3).bfloat16()).dtype == torch.bfloat16
        layer = make(depth=4, out_features=3, in_features=3)
        torch._dynamo.reset()
        y = torch.compile(layer, fullgraph=True, backend="eager")(torch.randn(5, 3))
        assert y.shape == (5, 3) and torch.isfinite(y).all()

    def test_state_dict_round_trip(self):
        a, b = make(seed=1), make(seed=2)
        b.load_state_dict(a.state_dict())
        x = torch.randn(4, 3)
        assert torch.equal(a.eval()(x), b.eval()(x))


class TestBadArguments:
    @pytest.mark.parametrize("kw,err,match", [
        (dict(depth=0), ValueError, "depth"),
        (dict(depth=17), ValueError, "depth"),
        (dict(depth=2.0), TypeError, "depth"),
        (dict(p=1.2), ValueError, "p"),
        (dict(leaf="mlp"), ValueError, "leaf"),
        (dict(eval_mode="sample"), ValueError, "eval_mode"),
        (dict(per_sample="yes"), TypeError, "per_sample"),
        (dict(out_features=0), ValueError, "out_features"),
        (dict(mc_samples=0), ValueError, "mc_samples"),
    ])
    def test_constructor(self, kw, err, match):
        with pytest.raises(err, match=match):
            make(**kw)

    def test_missing_in_features(self):
        with pytest.raises(ValueError, match="in_features"):
            dropkit.create("hme_dropout")

    def test_inputs(self):
        with pytest.raises(ValueError, match="in_features"):
            make()(torch.randn(4, 5))
        with pytest.raises(TypeError):
            make()(torch.ones(4, 3, dtype=torch.long))
        with pytest.raises(ValueError, match="2\\^D - 1"):
            hme_dropout(torch.rand(4, 6), torch.randn(8, 1))
        with pytest.raises(ValueError, match="leaves"):
            hme_dropout(torch.rand(4, 7), torch.randn(7, 1))


def test_compile_helper_shape_preserving_case():
    # out_features == in_features: the shared shape-preserving compile check applies as is.
    assert_compiles_fullgraph(make(in_features=3, out_features=3), torch.randn(6, 3))


class TestSoftTreeLab:
    def test_regression_sweep_runs_and_learns(self):
        from dropkit.lab.experiments.soft_tree import format_table, regression_sweep

        rows = regression_sweep([2], [0.0, 0.2], [0], n_train=32, steps=150, lr=0.05)
        assert [(r["depth"], r["p"]) for r in rows] == [(2, 0.0), (2, 0.2)]
        baseline = torch.var(torch.sin(2 * torch.pi * torch.linspace(-1, 1, 512)) + 0.3 * torch.linspace(-1, 1, 512))
        assert rows[0]["test_mse"] < baseline, "a trained tree beats the constant predictor"
        assert "depth 2" in format_table(rows, "test_mse")

    def test_fit_tree_classification(self):
        from dropkit.lab.experiments.soft_tree import fit_tree

        g = torch.Generator().manual_seed(0)
        x = torch.randn(200, 5, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
        tree = fit_tree(x, y, depth=3, p=0.1, task="classification", out_features=3, steps=150, lr=0.05, batch=64)
        assert not tree.training
        assert (tree(x).argmax(1) == y).float().mean() > 0.7
