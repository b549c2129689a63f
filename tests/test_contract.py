"""The API contract every method keeps (docs/contributing.md), checked on every registered method (whoever wrote it)."""

import pytest
import torch

import dropkit
from helpers.props import assert_compiles_fullgraph, assert_eval_identity, assert_keeps_dtype_and_format

ACTIVATION = [c.name for c in dropkit.methods(kind="activation")]
CANONICAL = {
    "random": ["dropout", "gaussian_dropout", "spatial_dropout", "dropblock", "drop_path", "dropconnect"],
    "guided": ["weighted_channel_dropout", "focused_dropout", "corrdrop_spatial", "corrdrop_channel",
               "channel_dropblock", "heuristic_dropout"],
    "aware": ["ns_dropout", "clustering_dropout"],
    "structural": ["structural_dropout"],
    "related": ["biased_dropout", "crossmap_dropout", "guided_dropout", "spectral_dropout", "standout",
                "stochastic_pooling", "maxout", "cutout"],
}


def test_every_canonical_name_is_registered_in_its_family():
    for family, names in CANONICAL.items():
        registered = {c.name for c in dropkit.methods(family=family)}
        assert set(names) <= registered, f"{family}: missing {set(names) - registered}"


@pytest.mark.parametrize("card", dropkit.methods(), ids=lambda c: c.name)
def test_every_method_class_carries_its_registered_name(card):
    # The name in error messages is the one users type: register sets it on the class.
    assert card.factory.method_name == card.name


@pytest.mark.parametrize("name", ACTIVATION)
class TestActivationContract:
    def test_eval_is_identity(self, name):
        assert_eval_identity(dropkit.create(name), torch.rand(4, 16, 12, 12))

    def test_training_keeps_shape_and_is_finite_on_degenerate_input(self, name):
        layer = dropkit.create(name).train()
        for x in (torch.rand(4, 16, 12, 12), torch.zeros(2, 16, 12, 12), torch.ones(1, 16, 12, 12)):
            y = layer(x)
            assert y.shape == x.shape and torch.isfinite(y).all()

    def test_gradient_flows(self, name):
        x = torch.rand(4, 16, 12, 12, requires_grad=True)
        dropkit.create(name).train()(x).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()

    def test_dtype_and_memory_format(self, name):
        assert_keeps_dtype_and_format(dropkit.create(name), torch.rand(4, 16, 12, 12))

    def test_compiles_without_graph_breaks(self, name):
        assert_compiles_fullgraph(dropkit.create(name).train(), torch.rand(4, 16, 12, 12))

    def test_integer_input_refused(self, name):
        with pytest.raises(TypeError):
            dropkit.create(name).train()(torch.ones(2, 16, 8, 8, dtype=torch.int64))

    def test_p_validated_on_assignment(self, name):
        layer = dropkit.create(name)
        with pytest.raises(ValueError, match="p"):
            layer.p = 1.5
