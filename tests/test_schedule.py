"""Schedules: LinearRamp, Constant, Participation, WarmUp and from_card."""

import pytest
import torch
from torch import nn

import dropkit


class TestSchedules:
    def model(self):
        m = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1))
        dropkit.attach(m, "dropblock", at=["0"], p=0.2, block_size=3)
        dropkit.attach(m, "spatial_dropout", at=["1"], p=0.4)
        return m

    def test_linear_ramp_to_each_layers_own_p_and_resume(self):
        m = self.model()
        ramp = dropkit.schedule.LinearRamp(m, n_steps=10)
        layers = [l for _, l in dropkit.dropkit_layers(m)]
        assert [l.p for l in layers] == [0.0, 0.0]
        for _ in range(6):
            ramp.step()
        assert [l.p for l in layers] == pytest.approx([0.1, 0.2])
        state = ramp.state_dict()
        resumed = dropkit.schedule.LinearRamp(m, n_steps=10, stop=None)
        resumed.stops = ramp.stops
        resumed.load_state_dict(state)
        resumed.step()
        ramp.step()
        assert [l.p for l in layers] == pytest.approx([0.12, 0.24])
        for _ in range(20):
            ramp.step()
        assert [l.p for l in layers] == pytest.approx([0.2, 0.4])

    def test_methods_filter(self):
        m = self.model()
        dropkit.schedule.Constant(m, 0.05, methods=["dropblock"])
        assert [l.p for _, l in dropkit.dropkit_layers(m)] == [0.05, 0.4]

    def test_participation_even_is_spread_and_exact(self):
        m = self.model()
        part = dropkit.schedule.Participation(m, rate=0.1)
        flags = []
        for _ in range(100):
            part.step()
            flags.append(part.participating)
            assert all(l.enabled == part.participating for _, l in dropkit.dropkit_layers(m))
        assert sum(flags) == 10
        assert all(sum(flags[i:i + 10]) == 1 for i in range(0, 100, 10))  # one per block of ten: not front-loaded

    def test_participation_random_rate_and_rng_untouched(self):
        m = self.model()
        part = dropkit.schedule.Participation(m, rate=0.3, mode="random", seed=1)
        torch.manual_seed(0)
        before = torch.rand(1)
        torch.manual_seed(0)
        count = 0
        for _ in range(1000):
            part.step()
            count += part.participating
        assert torch.equal(torch.rand(1), before)
        assert 240 < count < 360

    def test_warmup_and_from_card(self):
        m = self.model()
        ramp = dropkit.schedule.from_card(dropkit.get_card("dropblock"), m, total_steps=20)
        assert isinstance(ramp, dropkit.schedule.LinearRamp) and len(ramp.layers) == 1
        assert dropkit.schedule.from_card(dropkit.get_card("spatial_dropout"), m, 20) is None
        warm = dropkit.schedule.WarmUp(m, 2)
        warm.step(); warm.step()
        assert not any(l.enabled for l in warm.layers)
        warm.step()
        assert all(l.enabled for l in warm.layers)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="no dropkit layer"):
            dropkit.schedule.LinearRamp(nn.Linear(2, 2), 10)
        with pytest.raises(ValueError, match="n_steps"):
            dropkit.schedule.LinearRamp(self.model(), 0)
        with pytest.raises(ValueError, match="rate must be in"):
            dropkit.schedule.Participation(self.model(), 1.5)
