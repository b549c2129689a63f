"""The tests mirror the source: every module of ``dropkit.methods`` has its ``tests/methods/test_<module>.py``."""

from pathlib import Path

import dropkit

TESTS = Path(__file__).resolve().parent
METHODS = Path(dropkit.__file__).resolve().parent / "methods"


def test_every_method_module_has_its_test_file():
    modules = {p.stem for p in METHODS.glob("*.py") if p.stem != "__init__"}
    tested = {p.stem.removeprefix("test_") for p in (TESTS / "methods").glob("test_*.py")}
    assert modules - tested == set(), f"method modules without tests/methods/test_<module>.py: {sorted(modules - tested)}"
    assert tested - modules == set(), f"test files for no method module: {sorted(tested - modules)}"
