"""attach / remove (hooks, wrappers, deep copies, FX, compile) and mc_dropout."""

import pytest
import torch
from torch import nn

import dropkit


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
