"""Heuristic Dropout: properties from docs/methods/heuristic_dropout.md (deterministic top-p, Laplacian fill)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

import dropkit
from dropkit.methods.heuristic_dropout import LAPLACE_KERNEL, HeuristicDropout, heuristic_dropout, heuristic_scores
from helpers.props import assert_compiles_fullgraph, assert_eval_identity, assert_keeps_dtype_and_format, seeded


def _relu_input(shape, seed=0):
    return torch.relu(torch.randn(shape, generator=seeded(seed)))


def _laplace_all(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    kernel = torch.tensor(LAPLACE_KERNEL, dtype=x.dtype).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    return F.conv2d(x, kernel, padding=1, groups=c)


def _official_scores(x: torch.Tensor, k: float = 2.0, bins: int = 10) -> torch.Tensor:
    """The official code's scoring (sdc17/HeuristicDropout), valid for non-negative inputs."""
    b, c = x.shape[:2]
    quantize = torch.round(torch.tanh(x) * bins).view(b, c, -1)
    hist = torch.count_nonzero(quantize.unsqueeze(-1) == torch.arange(0, bins + 1), dim=2)
    entropy = torch.distributions.Categorical(hist.float()).entropy()
    return entropy + k / (torch.var(x, dim=(2, 3)) + 1e-7)


def _changed(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (y != x).flatten(2).any(2)


class TestScores:
    def test_match_the_official_code_on_post_relu_input(self):
        x = _relu_input((3, 6, 7, 9), seed=1) * 2
        assert torch.allclose(heuristic_scores(x), _official_scores(x), rtol=1e-5)
        assert torch.allclose(heuristic_scores(x, k=3.0), _official_scores(x, k=3.0), rtol=1e-5)

    def test_entropy_of_one_level_is_zero_and_of_eleven_levels_is_log_11(self):
        levels = torch.atanh(torch.arange(0, 10) / 10.0).tolist() + [6.0]  # tanh·10 rounds to 0 … 10
        x = torch.zeros(1, 2, 11, 1)
        x[0, 0, :, 0] = torch.tensor(levels)
        x[0, 1] = 0.03  # one level (0)
        entropy = heuristic_scores(x, k=0.0)
        assert entropy[0, 0].item() == pytest.approx(math.log(11), abs=1e-5)
        assert entropy[0, 1].item() == 0.0

    def test_negative_levels_are_counted(self):
        x = torch.tensor([-3.0, -0.5, 0.5, 3.0]).view(1, 1, 2, 2)  # levels −10, −5, 5, 10
        assert heuristic_scores(x, k=0.0)[0, 0].item() == pytest.approx(math.log(4), abs=1e-6)

    def test_constant_channel_selected_first(self):
        x = _relu_input((2, 8, 6, 6), seed=2) + 0.5
        x[:, 5] = 0.7
        y = heuristic_dropout(x, 0.125)  # round(0.125·8) = 1 channel
        changed = _changed(y, x)
        assert changed[:, 5].all() and (changed.sum(1) == 1).all()

    def test_higher_entropy_ranks_higher_at_equal_variance(self):
        # channel 0: values on 2 levels; channel 1: a rearrangement spread over 4 levels with the same variance
        a = torch.tensor([0.0, 0.0, 1.0, 1.0]) * 2
        s = math.sqrt(2.0)
        b = torch.tensor([1 - s, 1.0, 1.0, 1 + s])
        assert torch.var(a).item() == pytest.approx(torch.var(b).item(), rel=1e-5)
        x = torch.stack([a, b]).view(1, 2, 2, 2)
        scores = heuristic_scores(x, k=2.0)
        assert scores[0, 1] > scores[0, 0]


    def test_int64_index_path_agrees(self, monkeypatch):
        module = importlib.import_module("dropkit.methods.heuristic_dropout")
        x = torch.randn(3, 5, 4, 6, generator=seeded(12))
        expected = heuristic_scores(x)
        monkeypatch.setattr(module, "_FLOAT_EXACT_LIMIT", 0)
        assert torch.equal(heuristic_scores(x), expected)

    def test_nan_and_inf_activations_do_not_raise(self):
        x = _relu_input((2, 10, 4, 4), seed=13)
        x[0, 3, 1, 1] = float("nan")
        x[1, 2, 0, 0] = float("inf")
        y = heuristic_dropout(x)
        assert y.shape == x.shape


class TestTransform:
    def test_exactly_round_p_c_channels_replaced_by_laplacian(self):
        x = _relu_input((4, 20, 6, 9), seed=3)
        y = heuristic_dropout(x, 0.1)
        changed = _changed(y, x)
        assert (changed.sum(1) == 2).all()
        expected = _laplace_all(x)
        assert torch.allclose(y[changed], expected[changed], atol=1e-6)
        assert torch.equal(y[~changed], x[~changed])

    def test_selection_is_the_top_scores(self):
        x = _relu_input((3, 10, 5, 5), seed=4)
        y = heuristic_dropout(x, 0.3)
        top = heuristic_scores(x).topk(3, dim=1).indices
        chosen = torch.zeros(3, 10, dtype=torch.bool).scatter(1, top, True)
        assert torch.equal(_changed(y, x), chosen)

    def test_zero_fill(self):
        x = _relu_input((3, 10, 5, 5), seed=5) + 0.1
        y = heuristic_dropout(x, 0.2, fill="zero")
        zero = (y.flatten(2) == 0).all(2)
        assert (zero.sum(1) == 2).all()
        assert torch.equal(y[~zero], x[~zero])

    def test_deterministic_and_no_rescaling(self):
        x = _relu_input((2, 16, 5, 5), seed=6)
        assert torch.equal(heuristic_dropout(x), heuristic_dropout(x))
        m = HeuristicDropout()
        assert torch.equal(m(x), m(x))

    def test_rate_rounding_follows_python_round(self):
        x = _relu_input((2, 5, 4, 4), seed=7)
        assert heuristic_dropout(x, 0.09) is x  # round(0.45) = 0: nothing to do
        assert (_changed(heuristic_dropout(x, 0.5), x).sum(1) == 2).all()  # round(2.5) = 2

    def test_gradient_through_laplacian_and_identity(self):
        x = _relu_input((2, 10, 5, 6), seed=8).requires_grad_()
        y = heuristic_dropout(x, 0.3)
        weight = torch.randn(y.shape, generator=seeded(8))
        (y * weight).sum().backward()
        changed = _changed(y.detach(), x.detach())
        x2 = x.detach().clone().requires_grad_()
        reference = torch.where(changed[:, :, None, None], _laplace_all(x2), x2)
        (reference * weight).sum().backward()
        assert torch.allclose(x.grad, x2.grad, atol=1e-6)


class TestDegenerate:
    @pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 10, 1, 1), (1, 1, 5, 3), (3, 10, 2, 7)])
    def test_shapes(self, shape):
        x = _relu_input(shape, seed=9)
        y = heuristic_dropout(x, 0.5)
        assert y.shape == x.shape and torch.isfinite(y).all()

    def test_all_zero_input(self):
        x = torch.zeros(2, 10, 4, 4)
        y = heuristic_dropout(x)
        assert torch.equal(y, x)

    def test_negative_input_no_nan(self):
        x = -torch.rand(2, 10, 4, 4, generator=seeded(10))
        assert torch.isfinite(heuristic_scores(x)).all()
        assert torch.isfinite(heuristic_dropout(x)).all()


class TestModule:
    def test_card(self):
        card = dropkit.get_card("heuristic_dropout")
        assert card.family == "guided" and card.kind == "activation"
        assert card.defaults["p"] == 0.1 and card.defaults["k"] == 2.0 and card.defaults["bins"] == 10
        assert card.taxonomy["sampling"] == "deterministic"

    def test_eval_identity(self):
        assert_eval_identity(HeuristicDropout(), _relu_input((2, 10, 4, 4)))

    @pytest.mark.parametrize("fill", ["laplacian", "zero"])
    def test_compile_dtype_format(self, fill):
        x = _relu_input((2, 10, 6, 6))
        assert_compiles_fullgraph(HeuristicDropout(fill=fill), x)
        assert_keeps_dtype_and_format(HeuristicDropout(fill=fill), x)

    def test_bf16_selection_matches_float32(self):
        x = _relu_input((2, 10, 6, 6), seed=11).to(torch.bfloat16).float()
        y16 = heuristic_dropout(x.to(torch.bfloat16))
        assert torch.equal(_changed(y16.float(), x), _changed(heuristic_dropout(x), x))

    @pytest.mark.parametrize("kwargs, err", [
        ({"p": 1.1}, ValueError), ({"k": -1.0}, ValueError), ({"k": "2"}, TypeError),
        ({"bins": 0}, ValueError), ({"bins": 2.0}, TypeError), ({"fill": "noise"}, ValueError),
    ])
    def test_bad_arguments(self, kwargs, err):
        with pytest.raises(err, match="heuristic_dropout"):
            HeuristicDropout(**kwargs)

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="4-D"):
            heuristic_dropout(torch.rand(3, 4, 5))
        with pytest.raises(TypeError, match="floating"):
            heuristic_dropout(torch.ones(1, 10, 3, 3, dtype=torch.int32))


def _reference_scores(x: torch.Tensor, k: float = 2.0, bins: int = 10) -> torch.Tensor:
    """Straightforward Alg. 1–2: torch.var, round(tanh·b), a one-hot histogram over all 2b + 1 levels."""
    n, c = x.shape[:2]
    x = x.double()
    levels = torch.round(torch.tanh(x) * bins).view(n, c, -1, 1)
    hist = (levels == torch.arange(-bins, bins + 1, dtype=torch.float64)).sum(2).double()
    prob = hist / hist.sum(-1, keepdim=True)
    entropy = -torch.special.xlogy(prob, prob).sum(-1)
    var = torch.var(x, dim=(2, 3)) if x.shape[2] * x.shape[3] > 1 else torch.zeros(n, c, dtype=torch.float64)
    return (entropy + k / (var + 1e-7)).float()


class TestFastPaths:
    """The vectorised scores (two-pass variance, σ-based levels, one bincount) and the hand-written Laplacian
    autograd node against straightforward references written here."""

    @pytest.mark.parametrize("shape", [(3, 7, 6, 5), (2, 4, 16, 16), (4, 3, 1, 9), (2, 5, 1, 1)])
    @pytest.mark.parametrize("bins", [10, 7])
    def test_scores_match_reference_on_signed_input(self, shape, bins):
        x = torch.randn(shape, generator=seeded(30)) * 1.5
        x[0, 0] = 4.25  # a constant channel: variance exactly 0
        torch.testing.assert_close(heuristic_scores(x, bins=bins), _reference_scores(x, bins=bins), rtol=1e-5, atol=1e-4)

    def test_scores_of_channels_last_and_bf16_input(self):
        x = torch.randn(2, 6, 5, 7, generator=seeded(31))
        expected = heuristic_scores(x)
        assert torch.equal(heuristic_scores(x.contiguous(memory_format=torch.channels_last)), expected)
        xb = x.to(torch.bfloat16)
        torch.testing.assert_close(heuristic_scores(xb), _reference_scores(xb.float()), rtol=1e-5, atol=1e-4)

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last", "bf16"])
    def test_forward_and_gradient_match_autograd_reference(self, layout):
        x = torch.randn(3, 10, 6, 7, generator=seeded(32))
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        elif layout == "bf16":
            x = x.to(torch.bfloat16)
        x = x.requires_grad_()
        y = heuristic_dropout(x, 0.3)
        weight = torch.randn(y.shape, generator=seeded(33)).to(x.dtype)
        (y * weight).sum().backward()
        # Reference: index_put of the Laplacian of the selected channels, differentiated by autograd.
        top = heuristic_scores(x.detach()).topk(3, dim=1).indices
        rows = torch.arange(3).view(3, 1).expand(3, 3)
        x2 = x.detach().clone().requires_grad_()
        kernel = torch.tensor(LAPLACE_KERNEL, dtype=x.dtype).view(1, 1, 3, 3)
        laplace = F.conv2d(x2[rows, top].reshape(9, 1, 6, 7), kernel, padding=1).view(3, 3, 6, 7)
        reference = x2.index_put((rows, top), laplace)
        (reference * weight).sum().backward()
        # bf16: the two convolutions round their sums of 9 terms differently (gradients reach |g| ≈ 16, ulp 0.125)
        tol = {"rtol": 1.6e-2, "atol": 0.25} if layout == "bf16" else {"rtol": 1e-5, "atol": 1e-5}
        torch.testing.assert_close(y, reference, **tol)
        torch.testing.assert_close(x.grad, x2.grad, **tol)
        if layout == "channels_last":
            assert y.is_contiguous(memory_format=torch.channels_last)

    def test_compiled_forward_and_backward_match_eager(self):
        x = torch.randn(2, 10, 6, 6, generator=seeded(34))
        torch._dynamo.reset()
        compiled = torch.compile(HeuristicDropout(p=0.3), fullgraph=True, backend="eager")
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = compiled(xa), HeuristicDropout(p=0.3)(xb)
        assert torch.equal(ya, yb)
        ya.sum().backward()
        yb.sum().backward()
        assert torch.equal(xa.grad, xb.grad)


def test_laplacian_of_a_single_impulse_is_eight_at_the_centre_minus_one_around():
    # Independent of LAPLACE_KERNEL: a sign flip or a wrong kernel must show here (official kernel: 8 at the
    # centre, −1 at the 8 neighbours).
    impulse = torch.zeros(5, 5)
    impulse[2, 2] = 1.0
    busy = torch.arange(25.0).view(5, 5) % 2 * 5.0  # high variance: a low k/var score, not selected
    x = torch.stack([impulse, busy]).unsqueeze(0)  # (1, 2, 5, 5)
    y = heuristic_dropout(x, 0.5)
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = -1.0
    expected[2, 2] = 8.0
    assert torch.equal(y[0, 0], expected)
    assert torch.equal(y[0, 1], busy)


@pytest.mark.parametrize("fill", ["laplacian", "zero"])
def test_empty_batch_returns_the_empty_tensor(fill):
    x = torch.rand(0, 8, 5, 5, requires_grad=True)
    y = heuristic_dropout(x, 0.5, fill=fill)
    assert y.shape == x.shape
    y.sum().backward()
    assert HeuristicDropout(0.5, fill=fill).train()(torch.rand(0, 8, 5, 5)).shape == (0, 8, 5, 5)
