"""Open a static HTML page in headless Chromium and check that it renders: every image loaded, the expected tables
present, no console errors.

The browser is Debian's ``chromium`` driven by Playwright for Python; Playwright's own browser download is never
used. Where either is missing the calling test skips and says what to install.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = ["chromium_path", "browser_unavailable", "assert_page_renders"]

# Debian/Ubuntu names of the distribution's Chromium; DROPKIT_CHROMIUM overrides them.
_CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    """The Chromium executable to drive, or None when none is installed."""
    override = os.environ.get("DROPKIT_CHROMIUM")
    if override:
        return override if Path(override).is_file() else None
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_unavailable() -> str | None:
    """Why the page cannot be opened here (a sentence naming what to install), or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install 'dropkit[test]' or pip install playwright)"
    if chromium_path() is None:
        return "Chromium is not installed (apt-get install chromium, or set DROPKIT_CHROMIUM to its path)"
    return None


def assert_page_renders(path: str | os.PathLike, *, tables: Sequence[str] = ("table",),
                        texts: Sequence[str] = (), min_images: int = 1, timeout_ms: int = 30_000) -> dict[str, Any]:
    """Open ``path`` in headless Chromium and assert that it renders.

    Checks that every ``<img>`` finished loading with ``naturalWidth > 0`` (and that there are at least
    ``min_images``), that each CSS selector in ``tables`` matches an element, that each string in ``texts`` is in
    the page's visible text, and that the console shows no errors (console errors, uncaught exceptions and
    failed requests all count). Skips the calling test when the browser cannot be had here.

    Returns:
        ``{"images": [{"src", "complete", "naturalWidth"}, ...], "title": str}`` for further checks.
    """
    reason = browser_unavailable()
    if reason is not None:
        pytest.skip(f"the report cannot be opened in a browser here: {reason}")
    from playwright.sync_api import sync_playwright

    page_path = Path(path).resolve()
    assert page_path.is_file(), f"{page_path} does not exist"
    errors: list[str] = []
    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox.
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}")
                    if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
            page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url} ({req.failure})"))
            page.goto(page_path.as_uri(), wait_until="load", timeout=timeout_ms)
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({src: e.getAttribute('src'), complete: e.complete,"
                       " naturalWidth: e.naturalWidth}))")
            found = {sel: page.locator(sel).count() for sel in tables}
            body_text = page.inner_text("body")
            title = page.title()
        finally:
            browser.close()
    assert len(images) >= min_images, f"{page_path.name}: {len(images)} <img> found, expected ≥ {min_images}"
    broken = [img["src"] for img in images if not img["complete"] or img["naturalWidth"] == 0]
    assert not broken, f"{page_path.name}: images that did not load: {broken}"
    absent = [sel for sel, n in found.items() if n == 0]
    assert not absent, f"{page_path.name}: no element matches {absent}"
    missing = [t for t in texts if t not in body_text]
    assert not missing, f"{page_path.name}: text not shown: {missing}"
    assert not errors, f"{page_path.name}: the console shows errors: {errors}"
    return {"images": images, "title": title}
