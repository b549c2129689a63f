"""Property classes shared by several method test files. Each file subclasses one of them as a ``Test…`` class
under ``@pytest.mark.parametrize("name", [...])`` with the methods that file covers."""

from __future__ import annotations

import pytest
import torch

import dropkit
from helpers.props import assert_compiles_fullgraph, assert_eval_identity, assert_keeps_dtype_and_format, seeded

SHAPES = [(4, 3, 7, 7), (2, 5, 8, 6), (3, 2, 1, 1), (1, 1, 5, 9), (2, 4, 16, 16)]


class RandomFamilyProperties:
    """Properties every random-family activation method keeps; a test file subclasses this as ``TestCommon``
    under ``@pytest.mark.parametrize("name", [...])``."""

    def test_eval_identity_and_p0_identity(self, name):
        x = torch.randn(4, 3, 9, 9)
        assert_eval_identity(dropkit.create(name, p=0.3), x)
        y = dropkit.create(name, p=0.0).train()(x)
        assert torch.equal(y, x)

    @pytest.mark.parametrize("shape", SHAPES)
    def test_shape_kept(self, name, shape):
        x = torch.randn(*shape)
        assert dropkit.create(name, p=0.3)(x).shape == x.shape

    def test_dtype_and_channels_last(self, name):
        assert_keeps_dtype_and_format(dropkit.create(name, p=0.3), torch.randn(4, 6, 10, 10))

    def test_compiles_fullgraph(self, name):
        assert_compiles_fullgraph(dropkit.create(name, p=0.3), torch.randn(4, 6, 10, 10))

    def test_same_generator_seed_same_output(self, name):
        x = torch.randn(4, 6, 10, 10)
        outs = [dropkit.create(name, p=0.3, generator=torch.Generator().manual_seed(7))(x) for _ in range(2)]
        assert torch.equal(*outs)
        other = dropkit.create(name, p=0.3, generator=torch.Generator().manual_seed(8))(x)
        assert not torch.equal(outs[0], other)

    def test_gradient_is_mask_times_scale(self, name):
        # y is x times a mask that does not depend on x, so dy/dx = y/x elementwise (x has no zeros).
        x = (torch.rand(4, 6, 10, 10) + 0.5).requires_grad_()
        y = dropkit.create(name, p=0.3, generator=torch.Generator().manual_seed(3))(x)
        y.sum().backward()
        torch.testing.assert_close(x.grad, (y / x).detach())

    def test_nan_and_inf_pass_through(self, name):
        x = torch.randn(4, 6, 10, 10)
        x[0, 0, 0, 0] = float("nan")
        x[1, 1, 1, 1] = float("inf")
        y = dropkit.create(name, p=0.3)(x)
        assert torch.isnan(y[0, 0, 0, 0])
        finite = torch.isfinite(x)
        finite[1, 1, 1, 1] = False
        assert torch.isfinite(y[finite]).all()

    def test_bad_inputs(self, name):
        layer = dropkit.create(name, p=0.3)
        with pytest.raises(TypeError, match="floating-point"):
            layer(torch.ones(2, 3, 4, 4, dtype=torch.long))
        for bad in (-0.1, 1.5, float("nan")):
            with pytest.raises(ValueError, match="p must be in"):
                dropkit.create(name, p=bad)
            with pytest.raises(ValueError, match="p must be in"):
                layer.p = bad
        with pytest.raises(TypeError, match="p must be a real number"):
            dropkit.create(name, p="0.1")
        if torch.cuda.is_available():
            layer.generator = torch.Generator(device="cuda")
            with pytest.raises(ValueError, match="generator"):
                layer(torch.ones(2, 3, 4, 4))

    def test_expectation_preserved(self, name):
        # 64 samples × 200 draws: even drop_path (one draw per sample) has σ ≈ 0.006 on this ratio.
        x = torch.rand(64, 8, 8, 8) + 0.5
        layer = dropkit.create(name, p=0.3, generator=torch.Generator().manual_seed(0))
        total = sum(layer(x).mean().item() for _ in range(200)) / 200
        assert abs(total / x.mean().item() - 1) < 0.03


class ActivationDefaultsProperties:
    """Properties of an activation method built from its card's defaults (4-D inputs, eval, p = 0, disabled,
    generator, zeros, dtype, compile, gradient, bad arguments); a test file subclasses this as ``TestDefaults``
    under ``@pytest.mark.parametrize("name", [...])``."""

    @pytest.mark.parametrize("shape", [(4, 16, 8, 8), (2, 128, 4, 4)])
    def test_defaults_accept_4d_and_keep_shape(self, name, shape):
        m = dropkit.create(name)
        x = torch.rand(shape)
        y = m(x)
        assert y.shape == x.shape and torch.isfinite(y).all()

    def test_eval_identity(self, name):
        assert_eval_identity(dropkit.create(name), torch.randn(2, 16, 8, 8))

    def test_p_zero_is_identity_and_disabled_is_identity(self, name):
        x = torch.randn(2, 16, 8, 8)
        m = dropkit.create(name, p=0.0)
        assert torch.equal(m(x), x)
        m = dropkit.create(name)
        m.enabled = False
        assert torch.equal(m(x), x)

    def test_determinism_with_generator(self, name):
        x = torch.randn(4, 16, 8, 8)
        kw = {"spectral_dropout": {"p": 0.5}, "cutout": {"size": 3}}.get(name, {})  # 16×16 cutout covers 8×8 maps
        a = dropkit.create(name, generator=seeded(3), **kw)(x)
        b = dropkit.create(name, generator=seeded(3), **kw)(x)
        assert torch.equal(a, b)
        if name != "spectral_dropout":  # deterministic at its default p = 1
            c = dropkit.create(name, generator=seeded(4), **kw)(x)
            assert not torch.equal(a, c)

    def test_no_nan_on_zero_input(self, name):
        y = dropkit.create(name)(torch.zeros(2, 16, 8, 8))
        assert torch.equal(y, torch.zeros_like(y))

    def test_dtype_and_memory_format(self, name):
        assert_keeps_dtype_and_format(dropkit.create(name), torch.randn(2, 16, 8, 8))

    def test_compiles_fullgraph(self, name):
        assert_compiles_fullgraph(dropkit.create(name), torch.randn(2, 16, 8, 8))

    def test_gradient_flows(self, name):
        x = torch.randn(2, 16, 8, 8, requires_grad=True)
        kw = {"cutout": {"size": 3}}.get(name, {})  # a 16×16 cutout can cover a whole 8×8 map
        y = dropkit.create(name, generator=seeded(1), **kw)(x)
        y.backward(torch.ones_like(y))
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        if name != "spectral_dropout":  # multiplicative masks: the gradient is the mask times its scale
            torch.testing.assert_close(x.grad * x.detach(), y.detach())

    def test_bad_arguments(self, name):
        with pytest.raises(ValueError, match="p"):
            dropkit.create(name, p=1.5)
        with pytest.raises(TypeError, match="p"):
            dropkit.create(name, p="0.1")
        m = dropkit.create(name)
        with pytest.raises(TypeError, match="floating-point"):
            m(torch.ones(2, 16, 8, 8, dtype=torch.int64))
        with pytest.raises(ValueError, match="input must be"):
            m(torch.randn(16))
