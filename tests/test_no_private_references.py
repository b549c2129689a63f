"""The shipped tree points readers only to what ships with it: no path into the project's unpublished notes, no
spec section label, no tracker issue number. A choice that needs a reference cites the method's page,
``docs/methods/<name>.md``, which states it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src", "tests", "docs", "examples", "bench", "README.md")
# Built from pieces so that this file does not match itself.
PRIVATE = re.compile("|".join((
    "shared" + "/",                # the notes folder
    "specs" + "/",
    "resolutions",                 # the notes' resolutions file and its labels ("resolutions A2")
    r"[Ii]ssue #?\d",              # tracker numbers: the word, an optional '#', a digit
    "spec" + r" §",                # a section of a spec ("spec §5")
)))


def scanned_files(top: str) -> list[Path]:
    """Every text file under ``top`` (a folder or a file of the repository root), this test file excluded."""
    path = ROOT / top
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [p for p in files if "__pycache__" not in p.parts and ".egg-info" not in str(p)
            and p.resolve() != Path(__file__).resolve()]


def private_references(path: Path) -> list[str]:
    """``"path:line: text"`` for every line of ``path`` that cites a private note (none for binary files)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return []
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return [f"{rel}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if PRIVATE.search(line)]


@pytest.mark.parametrize("top", SCANNED)
def test_no_reference_to_private_notes(top):
    if not (ROOT / top).exists():
        pytest.skip(f"{top} is not in this checkout")
    hits = [hit for path in scanned_files(top) for hit in private_references(path)]
    assert not hits, "cite docs/methods/<name>.md instead of:\n" + "\n".join(hits)


@pytest.mark.parametrize("line", [
    "Reading implemented (``" + "shared" + "/" + "specs" + "/" + "resolutions.md`` A2):",
    "see " + "specs/" + "neuron_structural_experts.md",
    "Targets (" + "iss" + "ue 2/3/7) are checked",
    "as " + "Iss" + "ue #12 asks",
    "properties from " + "spec §5(e)",
])
def test_the_pattern_catches_each_form(line, tmp_path):
    # The scan must see every form that was once in the tree, so that none can come back unnoticed.
    note = tmp_path / "note.py"
    note.write_text(f"x = 1\n# {line}\n", encoding="utf-8")
    assert private_references(note) == [f"{note}:2: # {line}"]
