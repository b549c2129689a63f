"""The training-loop protocol (dropkit.protocol): supervise, wants_validation, feed_validation, step_statistics."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from dropkit.base import DropkitModule
from dropkit.methods.clustering_dropout import ClusteringDropout
from dropkit.methods.ns_dropout import NSDropout
from dropkit.protocol import (
    ProtocolLayer,
    feed_validation,
    protocol_layers,
    step_statistics,
    supervise,
    wants_validation,
)


class Recorder(ProtocolLayer, DropkitModule):
    """A minimal participating layer: records what the protocol shows it."""

    needs_targets = True
    needs_validation = True
    needs_steps = True

    def __init__(self) -> None:
        super().__init__(0.0)
        self.seen: list[tuple[str | None, torch.Tensor | None, bool]] = []
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.protocol_phase, self.protocol_targets, self.training))
        return x

    def protocol_step(self) -> None:
        self.steps += 1


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), Recorder(), nn.Linear(8, 3))


def test_supervise_shows_targets_only_inside_and_restores() -> None:
    model = _model()
    rec = model[4]
    y = torch.tensor([0, 1, 2, 1])
    with supervise(model, y) as m:
        assert m is model
        model(torch.randn(4, 6))
    model(torch.randn(4, 6))
    assert rec.seen[0][0] == "train" and rec.seen[0][1] is y
    assert rec.seen[1][:2] == (None, None)
    assert rec.protocol_phase is None and rec.protocol_targets is None


def test_supervise_restores_after_an_exception_and_nests() -> None:
    model = _model()
    rec = model[4]
    outer, inner = torch.tensor([0, 1]), torch.tensor([2, 2])
    with pytest.raises(RuntimeError, match="boom"):
        with supervise(model, outer):
            raise RuntimeError("boom")
    assert rec.protocol_phase is None
    with supervise(model, outer):
        with supervise(model, inner):
            assert rec.protocol_targets is inner
        assert rec.protocol_targets is outer
    assert rec.protocol_targets is None


@pytest.mark.parametrize("bad, error", [
    (torch.tensor([0.0, 1.0]), TypeError),
    (torch.tensor([[0, 1]]), ValueError),
    ([0, 1], TypeError),
    (torch.tensor([True, False]), TypeError),
])
def test_supervise_refuses_bad_targets(bad, error) -> None:
    with pytest.raises(error, match="targets"):
        with supervise(_model(), bad):
            pass


def test_model_without_participants_supervise_and_step_are_noops() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with supervise(model, torch.tensor([0])):
        model(torch.randn(1, 3))
    assert step_statistics(model) == 0
    assert not wants_validation(model)
    assert protocol_layers(model) == []
    with pytest.raises(ValueError, match="wants_validation"):
        feed_validation(model, torch.randn(2, 3), torch.tensor([0, 1]))


def test_protocol_layers_refuses_non_module() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        wants_validation("model")


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_feed_validation_leaves_batchnorm_and_flags_untouched(mode: str) -> None:
    model = _model()
    model.train()
    model(torch.randn(16, 6))  # give BatchNorm non-trivial running statistics
    model[3].eval()  # a mixed set of flags must come back exactly
    bn = model[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    flags = [m.training for m in model.modules()]
    rec = model[4]
    y_val = torch.tensor([0, 1, 2, 0, 1])
    out = feed_validation(model, torch.randn(5, 6) * 3 + 2, y_val, mode=mode)
    assert out.shape == (5, 3) and not out.requires_grad
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [m.training for m in model.modules()] == flags
    phase, targets, training = rec.seen[-1]
    assert phase == "validation" and targets is y_val
    assert training is (mode == "train")
    assert rec.protocol_phase is None


def test_feed_validation_restores_flags_when_the_model_raises() -> None:
    model = _model()
    model.train()
    with pytest.raises(RuntimeError):
        feed_validation(model, torch.randn(3, 5), torch.tensor([0, 1, 2]))  # wrong width: Linear raises
    assert all(m.training for m in model.modules())
    assert model[4].protocol_phase is None


def test_feed_validation_bad_arguments() -> None:
    model = _model()
    with pytest.raises(ValueError, match="mode"):
        feed_validation(model, torch.randn(2, 6), torch.tensor([0, 1]), mode="test")
    with pytest.raises(TypeError, match="y_val"):
        feed_validation(model, torch.randn(2, 6), torch.tensor([0.0, 1.0]))


def test_step_statistics_calls_every_stepping_layer_once() -> None:
    model = _model()
    shared = model[4]
    model.append(nn.Sequential(shared))  # a shared layer is notified once
    assert step_statistics(model) == 1
    assert shared.steps == 1


def test_documented_loop_trains_ns_and_clustering_dropout() -> None:
    """The module docstring's loop, end to end, on a tiny problem."""
    torch.manual_seed(0)
    x, y = torch.randn(96, 10), torch.randint(0, 3, (96,))
    x_val, y_val = torch.randn(24, 10), torch.randint(0, 3, (24,))
    ns, cl = NSDropout(0.25), ClusteringDropout(0.3, update_every=2)
    model = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), ns, nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), cl,
                          nn.Linear(12, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    val_batches = itertools.cycle([(x_val[:12], y_val[:12]), (x_val[12:], y_val[12:])])
    assert wants_validation(model)
    for xb, yb in zip(x.split(16), y.split(16)):
        if wants_validation(model):
            feed_validation(model, *next(val_batches))
        with supervise(model, yb):
            loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_statistics(model)
    assert int(ns.num_updates) == 6
    assert int((ns.mask == 0).sum()) == 4  # floor(0.25 · 16)
    assert int(cl.num_updates) == 3 and int(cl.steps) == 6
    assert not torch.allclose(cl.unit_probs, torch.full_like(cl.unit_probs, 0.3))
