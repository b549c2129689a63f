"""Tests of the related methods: biased/crossmap dropout, guided dropout, spectral dropout, Standout,
stochastic pooling, Maxout, Cutout. Properties from their pages in docs/methods/."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import dropkit
from dropkit.methods.biased_dropout import BiasedDropout, biased_dropout, biased_group_rates, crossmap_dropout
from dropkit.methods.cutout import Cutout, cutout
from dropkit.methods.guided_dropout import GuidedDropout, guided_dropout
from dropkit.methods.maxout import Maxout, maxout
from dropkit.methods.spectral_dropout import SpectralDropout, dct_matrix, spectral_dropout
from dropkit.methods.standout import Standout, standout
from dropkit.methods.stochastic_pooling import StochasticPool2d, stochastic_pooling
from props import assert_compiles_fullgraph, assert_eval_identity, assert_keeps_dtype_and_format, binomial_tolerance

ACTIVATION = ["biased_dropout", "crossmap_dropout", "spectral_dropout", "cutout"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# Registry and the properties every activation method shares
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind", [
    ("biased_dropout", "activation"), ("crossmap_dropout", "activation"), ("guided_dropout", "stateful"),
    ("spectral_dropout", "activation"), ("standout", "block"), ("stochastic_pooling", "block"),
    ("maxout", "block"), ("cutout", "activation"),
])
def test_cards(name, kind):
    card = dropkit.get_card(name)
    assert card.family == "related" and card.kind == kind
    assert card.paper and card.summary
    assert set(card.taxonomy) == set(dropkit.registry.TAXONOMY_AXES)


def test_cutout_is_input_space_and_guided_has_warmup_schedule():
    assert dropkit.get_card("cutout").taxonomy["space"] == "input"
    sched = dropkit.get_card("guided_dropout").schedule
    assert sched["type"] == "warmup" and 0 < sched["fraction"] < 1
    # The lab turns the card into a WarmUp schedule that keeps the layer off for that share of the steps.
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    dropkit.attach(model, "guided_dropout", at=["0"])
    warm = dropkit.schedule.from_card(dropkit.get_card("guided_dropout"), model, total_steps=100)
    assert isinstance(warm, dropkit.schedule.WarmUp) and warm.n_steps == 20


@pytest.mark.parametrize("name", ACTIVATION)
@pytest.mark.parametrize("shape", [(4, 16, 8, 8), (2, 128, 4, 4)])
def test_defaults_accept_4d_and_keep_shape(name, shape):
    m = dropkit.create(name)
    x = torch.rand(shape)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ACTIVATION)
def test_eval_identity(name):
    assert_eval_identity(dropkit.create(name), torch.randn(2, 16, 8, 8))


@pytest.mark.parametrize("name", ACTIVATION)
def test_p_zero_is_identity_and_disabled_is_identity(name):
    x = torch.randn(2, 16, 8, 8)
    m = dropkit.create(name, p=0.0)
    assert torch.equal(m(x), x)
    m = dropkit.create(name)
    m.enabled = False
    assert torch.equal(m(x), x)


@pytest.mark.parametrize("name", ACTIVATION)
def test_determinism_with_generator(name):
    x = torch.randn(4, 16, 8, 8)
    kw = {"spectral_dropout": {"p": 0.5}, "cutout": {"size": 3}}.get(name, {})  # 16×16 cutout covers 8×8 maps
    a = dropkit.create(name, generator=gen(3), **kw)(x)
    b = dropkit.create(name, generator=gen(3), **kw)(x)
    assert torch.equal(a, b)
    if name != "spectral_dropout":  # deterministic at its default p = 1
        c = dropkit.create(name, generator=gen(4), **kw)(x)
        assert not torch.equal(a, c)


@pytest.mark.parametrize("name", ACTIVATION)
def test_no_nan_on_zero_input(name):
    y = dropkit.create(name)(torch.zeros(2, 16, 8, 8))
    assert torch.equal(y, torch.zeros_like(y))


@pytest.mark.parametrize("name", ACTIVATION)
def test_dtype_and_memory_format(name):
    assert_keeps_dtype_and_format(dropkit.create(name), torch.randn(2, 16, 8, 8))


@pytest.mark.parametrize("name", ACTIVATION)
def test_compiles_fullgraph(name):
    assert_compiles_fullgraph(dropkit.create(name), torch.randn(2, 16, 8, 8))


@pytest.mark.parametrize("name", ACTIVATION)
def test_gradient_flows(name):
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    kw = {"cutout": {"size": 3}}.get(name, {})  # a 16×16 cutout can cover a whole 8×8 map
    y = dropkit.create(name, generator=gen(1), **kw)(x)
    y.backward(torch.ones_like(y))
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    if name != "spectral_dropout":  # multiplicative masks: the gradient is the mask times its scale
        torch.testing.assert_close(x.grad * x.detach(), y.detach())


@pytest.mark.parametrize("name", ACTIVATION)
def test_bad_arguments(name):
    with pytest.raises(ValueError, match="p"):
        dropkit.create(name, p=1.5)
    with pytest.raises(TypeError, match="p"):
        dropkit.create(name, p="0.1")
    m = dropkit.create(name)
    with pytest.raises(TypeError, match="floating-point"):
        m(torch.ones(2, 16, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="input must be"):
        m(torch.randn(16))


# ---------------------------------------------------------------------------------------------------------------
# Biased dropout and crossmap dropout
# ---------------------------------------------------------------------------------------------------------------

def test_group_rates_keep_the_mean():
    assert biased_group_rates(0.5, 0.4) == pytest.approx((0.3, 0.7))
    strong, weak = biased_group_rates(0.8, 0.5)  # weak capped at 1
    assert weak == 1.0 and strong == pytest.approx(0.6) and (strong + weak) / 2 == pytest.approx(0.8)


@pytest.mark.parametrize("unit, shape", [("channel", (3, 7, 4, 4)), ("channel", (5, 9)), ("element", (3, 5, 3, 3))])
def test_biased_groups_are_equal_halves_ranked_by_response(unit, shape):
    # bias = 1 with p = 0.5: strong group never dropped, weak group always dropped → the kept set is the group.
    x = torch.rand(shape) + 0.1
    y = biased_dropout(x, 0.5, bias=1.0, unit=unit, generator=gen())
    n = x.shape[0]
    if unit == "channel" and x.ndim == 4:
        score = x.mean(dim=(2, 3))
        kept = (y != 0).flatten(2).all(dim=2)
        assert torch.equal((y != 0).flatten(2).any(dim=2), kept)  # whole maps
    else:
        score = x.reshape(n, -1)
        kept = (y != 0).reshape(n, -1)
    units = score.shape[1]
    assert (kept.sum(dim=1) == units // 2).all()  # strong group: ⌊U/2⌋, weak: ⌈U/2⌉
    for i in range(n):
        assert score[i][kept[i]].min() >= score[i][~kept[i]].max()
    torch.testing.assert_close(y[y != 0], x[y != 0])  # strong group's rate is 0: scale 1


def test_biased_drop_rates_and_expectation():
    torch.manual_seed(0)
    row = torch.rand(1, 8, dtype=torch.float64) + 0.5
    x = row.expand(40000, 8).contiguous()
    y = biased_dropout(x, 0.5, bias=0.4, generator=gen(2))
    strong = torch.zeros(8, dtype=torch.bool)
    strong[row[0].topk(4).indices] = True
    dropped = (y == 0).double().mean(dim=0)
    n = x.shape[0]
    assert (dropped[strong] - 0.3).abs().max() < binomial_tolerance(n, 0.3)
    assert (dropped[~strong] - 0.7).abs().max() < binomial_tolerance(n, 0.7)
    sigma = row[0] * torch.tensor([math.sqrt(0.3 / 0.7) if s else math.sqrt(0.7 / 0.3) for s in strong])
    assert ((y.mean(dim=0) - row[0]).abs() <= 5 * sigma / math.sqrt(n)).all()


def test_biased_abs_criterion_ranks_by_magnitude():
    x = torch.tensor([[-5.0, 0.1, 4.0, -0.2]])
    by_value = biased_dropout(x, 0.5, bias=1.0, generator=gen())
    by_abs = biased_dropout(x, 0.5, bias=1.0, criterion="abs", generator=gen())
    assert torch.equal(by_value != 0, torch.tensor([[False, True, True, False]]))
    assert torch.equal(by_abs != 0, torch.tensor([[True, False, True, False]]))


def test_biased_bad_options():
    with pytest.raises(ValueError, match="bias"):
        BiasedDropout(bias=1.5)
    with pytest.raises(ValueError, match="unit"):
        BiasedDropout(unit="block")
    with pytest.raises(ValueError, match="criterion"):
        biased_dropout(torch.randn(2, 4), criterion="energy")


def test_crossmap_mask_is_shared_across_maps():
    x = torch.rand(4, 6, 8, 8) + 0.1
    y = crossmap_dropout(x, 0.5, generator=gen())
    ratio = y / x
    assert torch.equal(ratio, ratio[:, :1].expand_as(ratio))  # constant along C
    assert set(ratio.unique().tolist()) <= {0.0, 2.0}


def test_crossmap_fraction_and_expectation():
    x = torch.ones(64, 3, 32, 32, dtype=torch.float64)
    y = crossmap_dropout(x, 0.3, generator=gen(5))
    positions = 64 * 32 * 32
    assert abs((y[:, 0] == 0).double().mean().item() - 0.3) < binomial_tolerance(positions, 0.3)
    assert abs(y.mean().item() - 1.0) < 5 * math.sqrt(0.3 / 0.7 / positions)


def test_crossmap_needs_spatial_dims():
    with pytest.raises(ValueError, match="input must be"):
        crossmap_dropout(torch.randn(4, 8))


# ---------------------------------------------------------------------------------------------------------------
# Guided dropout
# ---------------------------------------------------------------------------------------------------------------

def test_guided_top_k_drops_the_strongest_units_for_the_whole_batch():
    m = GuidedDropout(10, p=0.3)
    x = torch.randn(5, 10)
    y = m(x)
    strongest = m.strength.detach().abs().topk(3).indices
    dropped = (y == 0).all(dim=0)
    assert dropped.sum() == 3 and dropped[strongest].all()
    kept = ~dropped
    torch.testing.assert_close(y[:, kept], x[:, kept] * m.strength.detach()[kept])


def test_guided_bottom_k_and_conv_layout():
    m = GuidedDropout(8, p=0.25, selection="bottom_k")
    x = torch.rand(3, 8, 4, 4) + 0.1
    y = m(x)
    weakest = m.strength.detach().abs().topk(2, largest=False).indices
    dropped = (y == 0).flatten(2).all(dim=2).all(dim=0)
    assert dropped.sum() == 2 and dropped[weakest].all()


def test_guided_warmup_switch_eval_and_strength_gradient():
    m = GuidedDropout(6, p=0.5)
    x = torch.rand(4, 6) + 0.1
    scaled = x * m.strength.detach()
    m.enabled = False  # warm-up: strengths scale, nothing dropped
    torch.testing.assert_close(m(x), scaled)
    m.enabled = True
    assert (m(x) == 0).all(dim=0).sum() == 3
    m.eval()
    torch.testing.assert_close(m(x), scaled)  # eval: identity apart from the strength scaling
    m.train()
    m(x).sum().backward()
    assert m.strength.grad is not None and (m.strength.grad != 0).sum() == 3  # kept units learn


def test_guided_active_random_keeps_the_inactive_region():
    strength = torch.tensor([0.5] * 12 + [0.9, 1.0, 0.2, 0.7])  # mode bin: the twelve 0.5s
    x = torch.ones(20000, 16)
    y = guided_dropout(x, strength, 0.4, selection="active_random", generator=gen(1))
    assert (y[:, :12] != 0).all()
    rate = (y[:, 12:] == 0).double().mean(dim=0)
    assert (rate - 0.4).abs().max() < binomial_tolerance(20000, 0.4)


def test_guided_lazy_strength_state_dict_and_compile():
    m = dropkit.create("guided_dropout")
    x = torch.randn(2, 12, 4, 4)
    m(x)
    assert m.strength.shape == (12,)
    clone = GuidedDropout(12)
    clone.load_state_dict(m.state_dict())
    assert torch.equal(clone.strength, m.strength)
    assert_compiles_fullgraph(m, x)
    assert_keeps_dtype_and_format(m, x)


def test_guided_bad_arguments():
    with pytest.raises(ValueError, match="selection"):
        GuidedDropout(4, selection="middle")
    with pytest.raises(ValueError, match="dim"):
        GuidedDropout(4, dim=0)
    with pytest.raises(ValueError, match="num_features"):
        GuidedDropout(0)
    with pytest.raises(ValueError, match="strength"):
        GuidedDropout(4)(torch.randn(2, 5))


# ---------------------------------------------------------------------------------------------------------------
# Spectral dropout
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 8, 16])
def test_dct_is_orthonormal(n):
    d = dct_matrix(n, dtype=torch.float64)
    torch.testing.assert_close(d @ d.t(), torch.eye(n, dtype=torch.float64))
    torch.testing.assert_close(d[1:].sum(dim=1), torch.zeros(n - 1, dtype=torch.float64), atol=1e-12, rtol=0)


def _dense_operator(variant: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The transform as one (numel/N × numel/N) matrix on a sample flattened in C-order."""
    c, spatial = shape[1], shape[2:]
    eye_s = torch.eye(math.prod(spatial), dtype=torch.float64)
    if variant == "channel":
        return torch.kron(dct_matrix(c, dtype=torch.float64), eye_s)
    if variant == "hypercolumn":
        a = max(d for d in range(1, math.isqrt(c) + 1) if c % d == 0)
        k = torch.kron(dct_matrix(a, dtype=torch.float64), dct_matrix(c // a, dtype=torch.float64))
        return torch.kron(k, eye_s)
    h, w = spatial
    k = torch.kron(dct_matrix(h, dtype=torch.float64), dct_matrix(w, dtype=torch.float64))
    return torch.kron(torch.eye(c, dtype=torch.float64), k)


@pytest.mark.parametrize("variant, shape", [("hypercolumn", (3, 12, 3, 2)), ("hypercolumn", (3, 7, 2, 2)),
                                            ("channel", (3, 6, 2, 3)), ("spatial", (2, 3, 4, 5)),
                                            ("hypercolumn", (4, 10))])
def test_spectral_matches_dense_dct_threshold(variant, shape):
    x = torch.randn(shape, dtype=torch.float64)
    op = _dense_operator(variant, shape)
    coef = x.reshape(shape[0], -1) @ op.t()
    expected = ((coef * (coef.abs() > 0.5)) @ op).view(shape)
    y = spectral_dropout(x, 1.0, tau=0.5, variant=variant)
    torch.testing.assert_close(y, expected)
    # Removed energy = energy of the coefficients at or below tau (orthonormal transform).
    removed = ((x - y) ** 2).sum()
    torch.testing.assert_close(removed, (coef ** 2 * (coef.abs() <= 0.5)).sum())


@pytest.mark.parametrize("variant", ["hypercolumn", "channel", "spatial"])
def test_spectral_tiny_tau_is_identity_round_trip(variant):
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(spectral_dropout(x, tau=1e-300, variant=variant), x)
    assert torch.equal(spectral_dropout(x, tau=0.0, variant=variant), x)


def test_spectral_stochastic_removes_at_most_the_weak_energy():
    x = torch.randn(8, 16, 4, 4, dtype=torch.float64)
    op = _dense_operator("hypercolumn", x.shape)
    coef = x.reshape(8, -1) @ op.t()
    weak = coef.abs() <= 0.5
    y = spectral_dropout(x, 0.5, tau=0.5, generator=gen(7))
    kept_coef = y.reshape(8, -1) @ op.t()
    removed = (kept_coef.abs() < 1e-9) & (coef.abs() > 1e-9)
    assert not (removed & ~weak).any()  # strong coefficients always kept
    frac = removed.sum().item() / weak.sum().item()
    assert abs(frac - 0.5) < binomial_tolerance(int(weak.sum()), 0.5)
    assert ((x - y) ** 2).sum() <= (coef ** 2 * weak).sum() + 1e-9


def test_spectral_huge_tau_gives_zero_and_bad_options():
    assert torch.equal(spectral_dropout(torch.randn(2, 4, 3, 3), tau=1e9), torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match="variant"):
        SpectralDropout(variant="wavelet")
    with pytest.raises(ValueError, match="tau"):
        SpectralDropout(tau=-1.0)
    with pytest.raises(ValueError, match="spatial"):
        spectral_dropout(torch.randn(2, 4, 5), variant="spatial")


# ---------------------------------------------------------------------------------------------------------------
# Standout
# ---------------------------------------------------------------------------------------------------------------

def test_standout_eval_is_expectation_and_mc_mean_approaches_it():
    torch.manual_seed(0)
    layer = Standout(5, 4, alpha=1.0, beta=0.0).double()
    x = torch.randn(1, 5, dtype=torch.float64)
    layer.eval()
    ev = layer(x)
    z = layer.linear(x)
    torch.testing.assert_close(ev, torch.sigmoid(z) * torch.relu(z))
    layer.train()
    layer.generator = gen(3)
    samples = layer(x.expand(100000, 5))
    pi = torch.sigmoid(z)
    sd = torch.relu(z) * torch.sqrt(pi * (1 - pi))
    assert ((samples.mean(dim=0, keepdim=True) - ev).abs() <= 4 * sd / math.sqrt(1e5) + 1e-12).all()


def test_standout_keep_probability_depends_on_input_and_no_gradient_through_the_sample():
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[4.0, 0.5], [0.5, 4.0]]).repeat(5000, 1)
    y = standout(x, w, alpha=2.0, beta=-4.0, generator=gen())
    kept = (y != 0).double().view(5000, 2, 2).mean(dim=0)
    pi = torch.sigmoid(2 * torch.tensor([[4.0, 0.5], [0.5, 4.0]]) - 4).double()
    assert (kept - pi).abs().max() < 0.03
    xs = torch.randn(3, 2, requires_grad=True)
    ws = w.clone().requires_grad_()
    out = standout(xs, ws, generator=gen(1))
    mask = (out != 0).float()
    out.sum().backward()
    ref_x = xs.detach().clone().requires_grad_()
    ref_w = w.clone().requires_grad_()
    (torch.relu(F.linear(ref_x, ref_w)) * mask).sum().backward()
    torch.testing.assert_close(ws.grad, ref_w.grad)
    torch.testing.assert_close(xs.grad, ref_x.grad)


def test_standout_module_and_bad_arguments():
    layer = dropkit.create("standout", in_features=6, out_features=3, generator=gen())
    assert layer(torch.randn(4, 2, 6)).shape == (4, 2, 3)
    assert_compiles_fullgraph_block(Standout(6, 3), torch.randn(4, 6))
    with pytest.raises(ValueError, match="missing"):
        dropkit.create("standout")
    with pytest.raises(ValueError, match="activation"):
        Standout(2, 2, activation="gelu2")
    with pytest.raises(ValueError, match="in_features"):
        Standout(2, 2)(torch.randn(3, 5))


def assert_compiles_fullgraph_block(module: torch.nn.Module, x: torch.Tensor) -> None:
    torch._dynamo.reset()
    y = torch.compile(module, fullgraph=True, backend="eager")(x)
    assert torch.isfinite(y).all()


# ---------------------------------------------------------------------------------------------------------------
# Stochastic pooling
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2)])
def test_stochastic_pooling_output_is_an_element_of_its_region(kernel, stride):
    x = torch.relu(torch.randn(3, 4, 9, 9))
    y = stochastic_pooling(x, kernel, stride, generator=gen())
    s = kernel if stride is None else stride
    windows = x.unfold(2, kernel, s).unfold(3, kernel, s).flatten(-2)
    assert y.shape == windows.shape[:4]
    assert (windows == y.unsqueeze(-1)).any(dim=-1).all()
    positive = windows.amax(dim=-1) > 0
    assert (y[positive] > 0).all()  # a zero entry is never sampled when a positive one exists


def test_stochastic_pooling_mc_mean_equals_eval_and_zero_regions():
    region = torch.tensor([[[[1.0, 3.0], [0.0, 4.0]]]], dtype=torch.float64)
    x = torch.cat([region, torch.zeros_like(region)], dim=3).expand(50000, 1, 2, 4).contiguous()
    train = stochastic_pooling(x, 2, generator=gen(2))
    ev = stochastic_pooling(x, 2, training=False)
    expected = (1 + 9 + 16) / 8
    torch.testing.assert_close(ev[0, 0, 0], torch.tensor([expected, 0.0], dtype=torch.float64))
    freq = torch.stack([(train[:, 0, 0, 0] == v).double().mean() for v in (1.0, 3.0, 4.0)])
    assert (freq - torch.tensor([1 / 8, 3 / 8, 4 / 8], dtype=torch.float64)).abs().max() < 0.01
    assert abs(train[:, 0, 0, 0].mean().item() - expected) < 4 * 1.1 / math.sqrt(50000)
    assert (train[:, 0, 0, 1] == 0).all() and torch.isfinite(ev).all()


def test_stochastic_pooling_gradient_reaches_only_the_sample():
    x = (torch.rand(2, 3, 4, 4) + 0.1).requires_grad_()
    pool = StochasticPool2d(2, generator=gen())
    pool(x).sum().backward()
    per_region = x.grad.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
    assert ((per_region != 0).sum(dim=-1) == 1).all() and (per_region.sum(dim=-1) == 1).all()


def test_stochastic_pooling_module_card_compile_and_bad_arguments():
    pool = dropkit.create("stochastic_pooling")
    x = torch.relu(torch.randn(2, 3, 6, 6))
    assert pool(x).shape == (2, 3, 3, 3)
    pool.eval()
    assert torch.isfinite(pool(torch.zeros(1, 1, 4, 4))).all()
    assert_compiles_fullgraph_block(StochasticPool2d(2).train(), x)
    with pytest.raises(ValueError, match="input must be"):
        pool(torch.randn(3, 6, 6))
    with pytest.raises(ValueError, match="kernel_size"):
        stochastic_pooling(x, 7)
    with pytest.raises(ValueError, match="kernel_size"):
        StochasticPool2d(0)


# ---------------------------------------------------------------------------------------------------------------
# Maxout
# ---------------------------------------------------------------------------------------------------------------

def test_maxout_shapes_linear_and_conv():
    assert Maxout(6, 4, pieces=3)(torch.randn(5, 6)).shape == (5, 4)
    assert Maxout(6, 4)(torch.randn(5, 2, 6)).shape == (5, 2, 4)
    conv = dropkit.create("maxout", in_features=3, out_features=5, pieces=2, kernel_size=3, padding=1)
    assert conv(torch.randn(2, 3, 8, 8)).shape == (2, 5, 8, 8)


def test_maxout_with_a_zero_piece_is_relu():
    layer = Maxout(4, 4, pieces=2)
    with torch.no_grad():
        w = torch.zeros(8, 4)
        w[0::2] = torch.randn(4, 4)  # piece 0 of unit i: z_i; piece 1: constant 0
        layer.layer.weight.copy_(w)
        layer.layer.bias.zero_()
    x = torch.randn(10, 4)
    torch.testing.assert_close(layer(x), torch.relu(F.linear(x, w[0::2])))


def test_maxout_gradient_only_to_the_winning_piece():
    z = torch.randn(4, 6, 3, 3, requires_grad=True)
    maxout(z, 3, dim=1).sum().backward()
    grad = z.grad.view(4, 2, 3, 3, 3)
    winners = z.detach().view(4, 2, 3, 3, 3).argmax(dim=2, keepdim=True)
    assert torch.equal(grad, torch.zeros_like(grad).scatter(2, winners, 1.0))
    tied = torch.zeros(1, 4, requires_grad=True)  # ties: still exactly one piece gets the gradient
    maxout(tied, 2).sum().backward()
    assert torch.equal(tied.grad.view(2, 2).sum(dim=1), torch.ones(2)) and (tied.grad != 0).sum() == 2


def test_maxout_bad_arguments_and_compile():
    with pytest.raises(ValueError, match="multiple"):
        maxout(torch.randn(2, 5), 2)
    with pytest.raises(ValueError, match="pieces"):
        Maxout(3, 3, pieces=0)
    with pytest.raises(ValueError, match="conv form"):
        Maxout(3, 2, kernel_size=3)(torch.randn(2, 3))
    assert_compiles_fullgraph_block(Maxout(3, 2, kernel_size=3), torch.randn(2, 3, 6, 6))


# ---------------------------------------------------------------------------------------------------------------
# Cutout
# ---------------------------------------------------------------------------------------------------------------

def _cut_boxes(y: torch.Tensor) -> list[tuple[int, int, int, int]]:
    boxes = []
    for cut in (y[:, 0] == 0):
        rows = cut.any(dim=1).nonzero().flatten()
        cols = cut.any(dim=0).nonzero().flatten()
        boxes.append((int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1))
        r0, r1, c0, c1 = boxes[-1]
        assert cut[r0:r1, c0:c1].all() and cut.sum() == (r1 - r0) * (c1 - c0)  # one filled rectangle
    return boxes


@pytest.mark.parametrize("size", [4, 5])
def test_cutout_one_square_of_the_given_size_in_every_channel(size):
    x = torch.ones(400, 3, 20, 20)
    y = cutout(x, size=size, generator=gen(1))
    assert torch.equal(y, y[:, :1].expand_as(y))  # all channels share the square
    boxes = _cut_boxes(y)
    heights = torch.tensor([b[1] - b[0] for b in boxes])
    widths = torch.tensor([b[3] - b[2] for b in boxes])
    assert (heights <= size).all() and (widths <= size).all()
    full = [b for b in boxes if 0 < b[0] and b[1] < 20 and 0 < b[2] and b[3] < 20]
    assert full and all(b[1] - b[0] == size and b[3] - b[2] == size for b in full)
    assert (heights < size).any()  # centres near the border: the square is clipped


def test_cutout_count_and_apply_probability():
    x = torch.ones(300, 1, 24, 24)
    one = (cutout(x, size=3, generator=gen(2)) == 0).flatten(1).sum(dim=1)
    two = (cutout(x, size=3, count=2, generator=gen(2)) == 0).flatten(1).sum(dim=1)
    assert one.max() <= 9 and two.max() <= 18 and (two > 9).any()
    y = cutout(x, 0.3, size=4, generator=gen(3))
    cut_fraction = ((y == 0).flatten(1).any(dim=1)).double().mean().item()
    assert abs(cut_fraction - 0.3) < binomial_tolerance(300, 0.3)


def test_cutout_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        Cutout(size=0)
    with pytest.raises(TypeError, match="count"):
        Cutout(count=1.5)
    with pytest.raises(ValueError, match="input must be"):
        cutout(torch.randn(3, 8, 8))
