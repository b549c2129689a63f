"""Registry and cards, attach/remove, schedules, MC dropout, DropConnect, the CLI and the benchmark harness."""

import io
import json

import pytest
import torch
from torch import nn

import dropkit
from dropkit.bench import run_benchmark
from dropkit.cli import main as cli_main
from dropkit.registry import TAXONOMY_AXES

CANONICAL = ["dropout", "gaussian_dropout", "spatial_dropout", "dropblock", "drop_path", "dropconnect"]


class TestRegistry:
    def test_cards_complete(self):
        cards = {c.name: c for c in dropkit.methods()}
        assert set(CANONICAL) <= set(cards)
        for card in cards.values():
            assert set(card.taxonomy) == set(TAXONOMY_AXES)
            assert card.paper and card.kind in dropkit.KINDS and card.family in dropkit.FAMILIES
            if card.defaults.get("p") is not None:
                assert 0.0 <= card.defaults["p"] <= 1.0

    def test_defaults_come_from_the_constructor(self):
        card = dropkit.get_card("dropblock")
        assert card.defaults["p"] == 0.1 and card.defaults["block_size"] == 7
        layer = dropkit.create("dropblock")
        assert layer.p == 0.1 and layer.block_size == 7
        assert dropkit.get_card("dropconnect").required == ("layer",)

    def test_unknown_name_suggests_close_names(self):
        with pytest.raises(ValueError, match="did you mean 'dropblock'"):
            dropkit.create("dropblok")

    def test_unknown_and_missing_parameters(self):
        with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['block'\]; allowed"):
            dropkit.create("dropblock", block=3)
        with pytest.raises(ValueError, match="missing required parameter"):
            dropkit.create("dropconnect", p=0.2)

    def test_filters(self):
        assert all(c.family == "random" for c in dropkit.methods(family="random"))
        assert [c.name for c in dropkit.methods("drop_p*")] == ["drop_path"]
        with pytest.raises(ValueError, match="family must be one of"):
            dropkit.methods(family="nope")

    def test_bad_taxonomy_refused_at_registration(self):
        with pytest.raises(ValueError, match="taxonomy"):
            dropkit.register("x", family="random", kind="activation", paper="-",
                             taxonomy={"element": "architecture"})


class TestAttach:
    def model(self):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(8 * 6 * 6, 4))

    def test_attach_changes_training_output_and_remove_restores(self):
        model, x = self.model(), torch.randn(2, 3, 6, 6)
        reference = model(x)
        handle = dropkit.attach(model, "spatial_dropout", at=["1", "3"], p=0.5,
                                generator=torch.Generator().manual_seed(0))
        assert set(handle.layers) == {"1", "3"}
        assert "1.dropkit_spatial_dropout" in dict(model.named_modules())
        assert not torch.allclose(model(x), reference)
        model.eval()
        torch.testing.assert_close(model(x), reference)
        model.train()
        handle.remove()
        torch.testing.assert_close(model(x), reference)
        assert not any("dropkit" in n for n, _ in model.named_modules())

    def test_attach_by_predicate_and_before(self):
        model = self.model()
        handle = dropkit.attach(model, "dropout", at=lambda n, m: isinstance(m, nn.ReLU), p=0.1)
        assert set(handle.layers) == {"1", "3"}
        handle.remove()
        seen = []
        handle = dropkit.attach(model, "dropout", at="0", where="before", p=1.0)
        model[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].abs().sum().item()))
        model(torch.randn(2, 3, 6, 6))
        assert seen == [0.0]  # the pre-hook added after ours sees the dropped input

    def test_wrapper_replaces_and_restores(self):
        model = self.model()
        linear = model[5]
        handle = dropkit.attach(model, "dropconnect", at="5", p=0.5)
        assert isinstance(model[5], dropkit.DropConnect) and model[5].layer is linear
        handle.remove()
        assert model[5] is linear

    def test_bad_targets(self):
        model = self.model()
        with pytest.raises(ValueError, match="no submodule named '9'"):
            dropkit.attach(model, "dropout", at=["9"])
        with pytest.raises(ValueError, match="matched no submodule"):
            dropkit.attach(model, "dropout", at=lambda n, m: False)
        with pytest.raises(ValueError, match="unknown method"):
            dropkit.attach(model, "dropoot", at=["1"])

    def test_deep_copy_runs_its_own_layer(self):
        import copy

        model = self.model()
        handle = dropkit.attach(model, "dropout", at=["1"], p=0.5)
        twin = copy.deepcopy(model)
        calls = {"original": 0, "copy": 0}
        handle.layers["1"].register_forward_hook(lambda *a: calls.__setitem__("original", calls["original"] + 1))
        twin[1].dropkit_dropout.register_forward_hook(lambda *a: calls.__setitem__("copy", calls["copy"] + 1))
        twin(torch.randn(2, 3, 6, 6))
        assert calls == {"original": 0, "copy": 1}

    def test_fx_tracer_sees_attached_layers(self):
        model = self.model()
        dropkit.attach(model, "dropout", at=["1"], p=0.5)
        dropkit.attach(model, "cutout", at=["0"], where="before")
        graph = dropkit.attach.__globals__["AttachAwareTracer"]().trace(model)
        targets = [n.target for n in graph.nodes if n.op == "call_module"]
        assert targets.index("0.dropkit_cutout") < targets.index("0") < targets.index("1") \
            < targets.index("1.dropkit_dropout") < targets.index("2")

    def test_compiles_with_hooks(self):
        model = self.model()
        dropkit.attach(model, "dropblock", at=["1", "3"], p=0.2, block_size=3)
        torch._dynamo.reset()
        out = torch.compile(model, fullgraph=True, backend="eager")(torch.randn(2, 3, 6, 6))
        assert out.shape == (2, 4)


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


def test_mc_dropout_keeps_only_dropkit_layers_sampling():
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Dropout(0.5))
    dropkit.attach(model, "dropout", at=["0"], p=0.5)
    model.eval()
    x = torch.randn(8, 4)
    with dropkit.mc_dropout(model):
        assert not model[1].training and not model[2].training
        assert not torch.equal(model(x), model(x))
    assert not any(m.training for m in model.modules())
    assert torch.equal(model(x), model(x))


class TestDropConnect:
    def test_linear_mask_statistics_and_eval(self):
        lin = nn.Linear(200, 100)
        layer = dropkit.create("dropconnect", layer=lin, p=0.4, generator=torch.Generator().manual_seed(0))
        x = torch.eye(200)[:5]
        y = layer(x) - lin.bias  # row i = column i of the dropped, rescaled weight
        ratio = (y / lin.weight[:, :5].T).detach()
        frac = (ratio.abs() < 1e-6).float().mean().item()
        assert abs(frac - 0.4) < 0.05
        layer.eval()
        torch.testing.assert_close(layer(x), lin(x))

    @pytest.mark.parametrize("conv", [nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.Conv1d(3, 5, 3)])
    def test_per_sample_conv_matches_a_loop(self, conv):
        layer = dropkit.create("dropconnect", layer=conv, p=0.5, per_sample=True,
                               generator=torch.Generator().manual_seed(1))
        x = torch.randn(3, conv.in_channels, *([7] * (conv.weight.ndim - 2)))
        y = layer(x)
        weights = dropkit.dropconnect_weight(conv.weight, 0.5, copies=3, generator=torch.Generator().manual_seed(1))
        f = {2: torch.nn.functional.conv2d, 1: torch.nn.functional.conv1d}[conv.weight.ndim - 2]
        for n in range(3):  # reference loop over samples: in the test only
            ref = f(x[n:n + 1], weights[n], conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
            torch.testing.assert_close(y[n:n + 1], ref)

    def test_bad_layer(self):
        with pytest.raises(TypeError, match="layer must be one of"):
            dropkit.create("dropconnect", layer=nn.ReLU())


def test_cli_methods_table_and_json(capsys):
    assert cli_main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "dropblock" in out and "theta" in out
    assert cli_main(["methods", "--json", "drop*"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in cards} >= {"dropout", "dropblock", "dropconnect", "drop_path"}


def test_benchmark_harness_measures_and_checks_targets():
    buf = io.StringIO()
    rows = run_benchmark(shapes=((4, 8, 8, 8),), pattern="spatial_dropout", rounds=3, warmup=1, out=buf)
    by_name = {r["name"]: r for r in rows}
    assert {"nn.Dropout2d", "nn.Dropout", "conv3x3", "textbook_dropblock", "spatial_dropout"} <= set(by_name)
    assert all(r["median_ms"] > 0 for r in rows if not r["name"].startswith("gain:"))
    assert by_name["spatial_dropout"]["met"] in ("yes", "NO")
    assert "spatial_dropout" in buf.getvalue()


def test_step_benchmark_times_every_stateful_arm():
    from dropkit.bench_steps import STEP_METHODS, run_step_benchmark

    buf = io.StringIO()
    rows = run_step_benchmark(rounds=1, out=buf)
    assert [r["name"] for r in rows] == ["none", "nn.Dropout", *STEP_METHODS]
    assert all(r["step_ms"] > 0 for r in rows) and rows[0]["vs_plain"] == 1.0
    assert "ns_dropout" in buf.getvalue()
