"""Every registered method has its page in docs/methods/, with the agreed sections, and the page's defaults are
the card's defaults (so a changed default cannot leave its page behind)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dropkit

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "docs" / "methods"
SECTIONS = ("## Paper", "## Algorithm", "## Readings and options", "## Defaults", "## Cost",
            "## What the lab measured")
# Arguments that are plumbing, not a method's setting: not listed on the pages.
NOT_DOCUMENTED = ("generator", "process_group")
CARDS = dropkit.methods()
_ROW = re.compile(r"^\|\s*`(?P<name>[^`]+)`\s*\|\s*(?:`(?P<value>.*?)`|(?P<required>required))\s*\|")


def sections(text: str) -> dict[str, str]:
    """The body of every ``## `` section, keyed by its heading line."""
    parts = re.split(r"^(## .+)$", text, flags=re.MULTILINE)
    return {heading.strip(): body for heading, body in zip(parts[1::2], parts[2::2])}


def documented_defaults(text: str) -> dict[str, str]:
    """``{parameter: repr of its default, or "required"}`` from the page's Defaults table."""
    rows = {}
    for line in sections(text).get("## Defaults", "").splitlines():
        m = _ROW.match(line)
        if m:
            rows[m["name"]] = "required" if m["required"] else m["value"]
    return rows


def card_defaults(card: dropkit.MethodCard) -> dict[str, str]:
    expected = {name: "required" for name in card.required}
    expected.update({k: repr(v) for k, v in card.defaults.items() if k not in NOT_DOCUMENTED})
    return expected


@pytest.mark.parametrize("card", CARDS, ids=[c.name for c in CARDS])
def test_every_method_has_a_page_with_the_sections(card):
    page = ROOT / card.doc_page
    assert page.is_file(), f"{card.name}: no page at {card.doc_page}"
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# ") and f"`{card.name}`" in text.splitlines()[0]
    found = [line for line in text.splitlines() if line in SECTIONS]
    assert found == list(SECTIONS), f"{card.name}: sections {found}, expected {list(SECTIONS)} in that order"
    body = sections(text)
    assert re.search(r"<https?://[^>\s]+>", body["## Paper"]), f"{card.name}: the paper section has no link"
    steps = re.findall(r"^(\d+)\. \S", body["## Algorithm"], flags=re.MULTILINE)
    assert len(steps) >= 3 and steps == [str(i) for i in range(1, len(steps) + 1)], \
        f"{card.name}: the algorithm must be numbered steps 1, 2, 3, …; got {steps}"
    assert "### Not offered" in body["## Readings and options"]
    for heading in ("## Cost", "## What the lab measured"):
        assert body[heading].strip(), f"{card.name}: {heading} is empty"
    if re.search(r"\d", body["## Cost"]):  # quoted numbers say where they were measured
        assert "as measured by `make bench` on the 2-core cpu" in body["## Cost"].lower()


@pytest.mark.parametrize("card", CARDS, ids=[c.name for c in CARDS])
def test_page_defaults_match_the_card(card):
    documented = documented_defaults((ROOT / card.doc_page).read_text(encoding="utf-8"))
    assert documented == card_defaults(card)


def test_defaults_check_catches_a_stale_page():
    # The comparison must see a changed value, a missing parameter and an extra one.
    card = dropkit.get_card("dropblock")
    text = (ROOT / card.doc_page).read_text(encoding="utf-8")
    assert documented_defaults(text) == card_defaults(card)
    assert documented_defaults(text.replace("| `7` |", "| `5` |")) != card_defaults(card)
    assert documented_defaults(re.sub(r"^\| `block_size`.*\n", "", text, flags=re.MULTILINE)) != card_defaults(card)
    assert documented_defaults(text.replace("| `p` |", "| `q` |")) != card_defaults(card)


def test_index_lists_every_page_and_nothing_else():
    index = (PAGES / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([a-z0-9_]+)\.md\)", index))
    names = {c.name for c in CARDS}
    assert linked == names
    on_disk = {p.stem for p in PAGES.glob("*.md")} - {"README"}
    assert on_disk == names, f"pages without a registered method: {sorted(on_disk - names)}"


def test_methods_verbose_prints_the_page_path(capsys):
    from dropkit.cli import main

    assert main(["methods", "-v", "dropblock"]) == 0
    out = capsys.readouterr().out
    assert "page: docs/methods/dropblock.md" in out
    assert (ROOT / "docs/methods/dropblock.md").is_file()
