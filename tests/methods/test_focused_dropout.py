"""FocusedDropout: properties from docs/methods/focused_dropout.md; the participation schedule itself is tested with dropkit.schedule."""

from __future__ import annotations

import pytest
import torch

import dropkit
from dropkit.methods.focused_dropout import FocusedDropout, ParticipationWeightDecay, focused_dropout
from helpers.props import (
    assert_compiles_fullgraph,
    assert_eval_identity,
    binomial_tolerance,
    assert_keeps_dtype_and_format,
    positive_input,
    seeded,
)


def _positive_01(shape, seed=0):
    return positive_input(shape, seed, offset=0.01)


def _reference_mask(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """Brute force, sample by sample: the paper's eqs. 1–5 with a fixed γ."""
    masks = []
    for sample in x:
        k = max(range(sample.shape[0]), key=lambda c: sample[c].mean().item())
        ref = sample[k]
        masks.append((ref > gamma * ref.max()).float())
    return torch.stack(masks).unsqueeze(1)


class TestMask:
    def test_mask_shared_by_all_channels(self):
        x = _positive_01((6, 10, 7, 9))
        y = focused_dropout(x, generator=seeded(1))
        zero = y == 0
        assert (zero == zero[:, :1]).all()

    @pytest.mark.parametrize("gamma", [0.0, 0.3, 0.45, 0.9])
    def test_matches_brute_force_with_fixed_gamma(self, gamma):
        x = _positive_01((5, 6, 6, 8), seed=2)
        y = focused_dropout(x, gamma_range=(gamma, gamma))
        assert torch.equal(y, x * _reference_mask(x, gamma))

    def test_no_rescaling_kept_values_exact(self):
        x = _positive_01((4, 5, 6, 6), seed=3)
        y = focused_dropout(x, generator=seeded(3))
        kept = y != 0
        assert torch.equal(y[kept], x[kept])
        assert 0 < kept.float().mean() < 1

    def test_reference_peak_always_kept(self):
        x = _positive_01((8, 4, 5, 5), seed=4)
        y = focused_dropout(x, gamma_range=(0.9, 0.9))
        ref = x.mean(dim=(2, 3)).argmax(1)
        for n in range(x.shape[0]):
            pos = x[n, ref[n]].argmax()
            assert y[n, :].flatten(1)[:, pos].ne(0).all()

    def test_gamma_zero_keeps_every_positive_position_of_reference(self):
        x = torch.relu(torch.randn(4, 3, 6, 6, generator=seeded(5)))
        x[:, 0] += 1.0  # channel 0 is the reference and is positive everywhere
        y = focused_dropout(x, gamma_range=(0.0, 0.0))
        assert torch.equal(y, x)

    def test_algorithm_one_range_keeps_less_than_text_range(self):
        x = _positive_01((64, 4, 8, 8), seed=6)
        text = (focused_dropout(x, gamma_range=(0.3, 0.6), generator=seeded(6)) != 0).float().mean()
        alg1 = (focused_dropout(x, gamma_range=(0.6, 0.9), generator=seeded(6)) != 0).float().mean()
        assert alg1 < text

    def test_gamma_per_position_still_shared_across_channels(self):
        x = _positive_01((4, 5, 6, 7), seed=7)
        y = focused_dropout(x, gamma_per="position", generator=seeded(7))
        zero = y == 0
        assert (zero == zero[:, :1]).all()
        assert not torch.equal(y, focused_dropout(x, gamma_per="sample", generator=seeded(7)))

    def test_p_is_per_sample_probability(self):
        x = _positive_01((2000, 2, 4, 4), seed=8)
        y = focused_dropout(x, 0.3, gamma_range=(0.9, 0.9), generator=seeded(8))
        focused = (y != x).flatten(1).any(1).float().mean().item()
        assert abs(focused - 0.3) < 0.05
        assert focused_dropout(x, 0.0) is x


class TestDegenerate:
    def test_all_zero_input(self):
        x = torch.zeros(2, 3, 4, 4)
        y = focused_dropout(x, generator=seeded(9))
        assert torch.equal(y, x)

    def test_negative_reference_keeps_its_peak(self):
        x = -_positive_01((3, 4, 5, 5), seed=10)
        y = focused_dropout(x, generator=seeded(10))
        assert torch.isfinite(y).all()
        assert (y != 0).flatten(1).any(1).all()

    def test_constant_channels_keep_everything(self):
        x = torch.full((2, 3, 4, 5), 2.0)
        assert torch.equal(focused_dropout(x, generator=seeded(11)), x)

    @pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 6, 3), (3, 5, 1, 1), (1, 4, 2, 9)])
    def test_shapes(self, shape):
        x = _positive_01(shape)
        y = focused_dropout(x, generator=seeded(12))
        assert y.shape == x.shape and torch.isfinite(y).all()


class TestModule:
    def test_card(self):
        card = dropkit.get_card("focused_dropout")
        assert card.family == "guided" and card.kind == "activation" and card.taxonomy["unit"] == "region"
        assert card.defaults["gamma_range"] == (0.3, 0.6) and card.defaults["participation"] == 0.1
        assert card.schedule["type"] == "participation" and card.schedule["rate"] == 0.1
        assert card.schedule["weight_decay"] == 1e-3

    def test_participation_is_stored_and_validated(self):
        m = FocusedDropout(participation=0.2)
        assert m.participation == 0.2
        with pytest.raises(ValueError, match="participation"):
            m.participation = 1.5
        assert "participation=0.2" in repr(m)

    def test_regularizes_only_when_enabled(self):
        x = _positive_01((2, 3, 5, 5))
        m = FocusedDropout(participation=1.0, generator=seeded(13))
        assert not torch.equal(m(x), x)
        m.enabled = False
        assert m(x) is x

    def test_eval_identity(self):
        assert_eval_identity(FocusedDropout(), _positive_01((2, 3, 5, 5)))

    def test_determinism(self):
        x = _positive_01((4, 6, 5, 5))
        assert torch.equal(FocusedDropout(generator=seeded(14))(x), FocusedDropout(generator=seeded(14))(x))

    def test_gradient_is_the_mask(self):
        x = _positive_01((3, 4, 5, 6)).requires_grad_()
        y = FocusedDropout(generator=seeded(15))(x)
        y.sum().backward()
        assert torch.equal(x.grad, (y != 0).float())

    def test_compile_dtype_format(self):
        x = _positive_01((2, 4, 6, 6))
        assert_compiles_fullgraph(FocusedDropout(), x)
        assert_keeps_dtype_and_format(FocusedDropout(), x)


class _Source:
    def __init__(self):
        self.participating = False


class TestParticipationWeightDecay:
    def _optimizer(self):
        w, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(1))
        return torch.optim.SGD([{"params": [w], "weight_decay": 5e-4}, {"params": [b], "weight_decay": 0.0}], lr=0.1)

    def test_boosts_on_participating_batches_and_restores(self):
        opt, source = self._optimizer(), _Source()
        wd = ParticipationWeightDecay(opt, source)
        source.participating = True
        assert wd.step() is True
        assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0]
        source.participating = False
        assert wd.step() is False
        assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]

    def test_factor_and_callable_source(self):
        opt = self._optimizer()
        flag = {"on": True}
        wd = ParticipationWeightDecay(opt, lambda: flag["on"], factor=4.0)
        wd.step()
        assert opt.param_groups[0]["weight_decay"] == pytest.approx(2e-3)
        flag["on"] = False
        wd.step()
        assert opt.param_groups[0]["weight_decay"] == 5e-4

    def test_state_dict_round_trip(self):
        opt, source = self._optimizer(), _Source()
        wd = ParticipationWeightDecay(opt, source, 2e-3)
        wd.step(True)
        state = wd.state_dict()
        opt2 = self._optimizer()
        wd2 = ParticipationWeightDecay(opt2, _Source())
        wd2.load_state_dict(state)
        assert opt2.param_groups[0]["weight_decay"] == 2e-3 and wd2.participating

    @pytest.mark.parametrize("args, kwargs, err", [
        ((), {"weight_decay": 1e-3, "factor": 2.0}, ValueError),
        ((), {"factor": 0.5}, ValueError),
        ((), {"weight_decay": -1.0}, ValueError),
    ])
    def test_bad_arguments(self, args, kwargs, err):
        with pytest.raises(err, match="ParticipationWeightDecay"):
            ParticipationWeightDecay(self._optimizer(), _Source(), *args, **kwargs)

    def test_bad_sources(self):
        with pytest.raises(TypeError, match="participating"):
            ParticipationWeightDecay(self._optimizer(), 3)
        with pytest.raises(TypeError, match="optimizer"):
            ParticipationWeightDecay("sgd", _Source())
        wd = ParticipationWeightDecay(self._optimizer(), lambda: 1)
        with pytest.raises(TypeError, match="bool"):
            wd.step()


class TestBadArguments:
    @pytest.mark.parametrize("kwargs, err", [
        ({"p": 2.0}, ValueError), ({"gamma_range": (0.6, 0.3)}, ValueError), ({"gamma_range": (0.3, 1.0)}, ValueError),
        ({"gamma_range": 0.5}, TypeError), ({"gamma_per": "channel"}, ValueError), ({"participation": -0.1}, ValueError),
    ])
    def test_constructor(self, kwargs, err):
        with pytest.raises(err, match="focused_dropout"):
            FocusedDropout(**kwargs)

    def test_inputs(self):
        with pytest.raises(ValueError, match="4-D"):
            focused_dropout(torch.ones(2, 3, 4))
        with pytest.raises(TypeError, match="floating"):
            focused_dropout(torch.ones(2, 3, 4, 4, dtype=torch.int32))


class TestSelfParticipation:
    """A FocusedDropout created alone regularizes only a ``participation`` fraction of the training batches."""

    @staticmethod
    def _participated(m, x, batches):
        changed = []
        for _ in range(batches):
            y = m(x)
            changed.append(not torch.equal(y, x))
            assert m.participating == changed[-1]
        return torch.tensor(changed, dtype=torch.float32)

    @pytest.mark.parametrize("rate", [0.1, 0.3])
    def test_standalone_module_participates_at_its_rate(self, rate):
        x = _positive_01((2, 3, 6, 6))
        m = FocusedDropout(participation=rate, generator=seeded(50))
        fraction = self._participated(m, x, 2000).mean().item()
        assert abs(fraction - rate) < binomial_tolerance(2000, rate)

    def test_default_is_the_papers_ten_percent(self):
        x = _positive_01((2, 3, 6, 6))
        fraction = self._participated(dropkit.create("focused_dropout", generator=seeded(51)), x, 2000).mean().item()
        assert abs(fraction - 0.1) < binomial_tolerance(2000, 0.1)

    def test_participation_one_and_zero(self):
        x = _positive_01((2, 3, 6, 6))
        assert self._participated(FocusedDropout(participation=1.0, generator=seeded(52)), x, 20).all()
        assert not self._participated(FocusedDropout(participation=0.0, generator=seeded(53)), x, 20).any()

    def test_schedule_attached_from_outside_wins(self):
        x = _positive_01((2, 3, 6, 6))
        model = torch.nn.Sequential(FocusedDropout(participation=0.1, generator=seeded(54)))
        schedule = dropkit.schedule.Participation(model, 0.5)
        assert model[0].external_participation
        for _ in range(40):
            schedule.step()
            y = model(x)
            assert (not torch.equal(y, x)) == schedule.participating == model[0].participating

    def test_from_card_reads_spread(self):
        model = torch.nn.Sequential(FocusedDropout())
        schedule = dropkit.schedule.from_card(dropkit.get_card("focused_dropout"), model, total_steps=100)
        assert schedule.mode == dropkit.get_card("focused_dropout").schedule["spread"] == "even"

        class _Card:
            name = "focused_dropout"
            schedule = {"type": "participation", "rate": 0.1, "spread": "random"}

        assert dropkit.schedule.from_card(_Card(), model, total_steps=100).mode == "random"

    def test_eval_forward_keeps_the_last_decision(self):
        x = _positive_01((2, 3, 6, 6))
        m = FocusedDropout(participation=1.0)
        m(x)
        m.eval()
        m(x)
        assert m.participating

    def test_weight_decay_follows_the_standalone_module(self):
        x = _positive_01((2, 3, 6, 6))
        m = FocusedDropout(participation=0.5, generator=seeded(55))
        w = torch.nn.Parameter(torch.ones(2))
        opt = torch.optim.SGD([w], lr=0.1, weight_decay=5e-4)
        wd = ParticipationWeightDecay(opt, m)
        seen = set()
        for _ in range(30):
            y = m(x)
            assert wd.step() == (not torch.equal(y, x))
            assert opt.param_groups[0]["weight_decay"] == (1e-3 if wd.participating else 5e-4)
            seen.add(wd.participating)
        assert seen == {True, False}

    def test_compiles_with_self_participation(self):
        x = _positive_01((8, 3, 6, 6))
        m = FocusedDropout(participation=0.5)
        compiled = torch.compile(m, fullgraph=True, backend="eager")
        torch._dynamo.reset()
        for n in (8, 5, 3):
            y = compiled(x[:n])
            assert y.shape == (n, 3, 6, 6)
            assert m.participating == (not torch.equal(y, x[:n]))
