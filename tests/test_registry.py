"""The registry: cards, defaults from the constructor, name suggestions, filters, registration checks, and the
``method_name`` that ``register`` gives each class."""

import re
from pathlib import Path

import pytest

import dropkit
from dropkit.registry import _REGISTRY, TAXONOMY_AXES

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


# --- method_name comes from register --------------------------------------------------------------------------

_TAXONOMY = {"element": "architecture", "space": "hidden", "theta": "p(θ)", "sampling": "random", "unit": "element",
             "phase": "train", "generality": "generic"}


@pytest.fixture
def scratch_registry():
    """Registrations made by a test are undone after it (the contract tests iterate over the registry)."""
    saved = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(saved)


def test_register_sets_method_name_from_the_registered_name(scratch_registry):
    @dropkit.register("scratch_named_layer", family="random", kind="activation", paper="-", taxonomy=_TAXONOMY)
    class Named(dropkit.DropkitModule):
        def __init__(self, p: float = 0.5) -> None:
            super().__init__(p)

    assert Named.method_name == "scratch_named_layer"
    with pytest.raises(ValueError, match=r"^scratch_named_layer: p must be"):
        dropkit.create("scratch_named_layer", p=2.0)


def test_register_refuses_a_different_method_name(scratch_registry):
    with pytest.raises(ValueError, match=r"Misnamed.method_name is 'other'"):
        @dropkit.register("scratch_misnamed", family="random", kind="activation", paper="-", taxonomy=_TAXONOMY)
        class Misnamed(dropkit.DropkitModule):
            method_name = "other"
    assert "scratch_misnamed" not in _REGISTRY


def test_an_unregistered_layer_keeps_the_generic_name():
    class Unregistered(dropkit.DropkitModule):
        pass

    with pytest.raises(ValueError, match=r"^dropkit: p must be"):
        Unregistered(p=2.0)


def test_each_method_file_names_its_method_once():
    # register sets method_name: a class attribute repeating the name could drift from the registered one.
    methods_dir = Path(dropkit.__file__).parent / "methods"
    repeated = [f"{path.name}:{n}" for path in sorted(methods_dir.glob("*.py"))
                for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if re.match(r"\s+method_name\s*(:[^=]+)?=", line)]
    assert not repeated, f"method_name set by hand (register sets it): {repeated}"
