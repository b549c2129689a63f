"""The lab report opened in a real browser (headless Chromium): figures load, the summary table is there, the
console is clean. Skips, saying why, where Chromium or Playwright is missing."""

from __future__ import annotations

import pytest

from helpers.browser import assert_page_renders, browser_unavailable

pytestmark = pytest.mark.skipif(browser_unavailable() is not None,
                                reason=f"no headless browser here: {browser_unavailable()}")


@pytest.fixture(scope="module")
def lab_report(npz, tmp_path_factory):
    """A report from a small store: the baseline and one method, two seeds each, one short epoch."""
    from dropkit.cli import main

    root = tmp_path_factory.mktemp("report")
    db, out = str(root / "runs.db"), root / "report"
    common = ["--data", npz, "--train-size", "30", "--val-size", "6", "--epochs", "1", "--threads", "1",
              "--db", db, "-q"]
    for method in ("none", "spatial_dropout"):
        for seed in (0, 1):
            assert main(["run", "--method", method, "--seed", str(seed), *common]) == 0
    assert main(["report", "--db", db, "--out", str(out)]) == 0
    return out / "index.html"


def test_lab_report_renders_in_chromium(lab_report):
    seen = assert_page_renders(lab_report, tables=["table"], texts=["vs baseline", "spatial_dropout"], min_images=2)
    assert all(img["src"].endswith(".png") for img in seen["images"])


def test_a_broken_figure_is_caught(lab_report, tmp_path):
    # The check must fail on a page whose figure is missing, or it would pass on anything.
    broken = tmp_path / "index.html"
    broken.write_text(lab_report.read_text().replace(".png'", "-missing.png'", 1))
    with pytest.raises(AssertionError, match="did not load|request failed"):
        assert_page_renders(broken)


@pytest.fixture(scope="module")
def advisor_report(tmp_path_factory):
    """The advisor's report on the planted noisy-label set (2 trials, 5 seeds: seconds)."""
    from dropkit.lab.advisor import advise
    from lab.test_advisor import PLANTED, _planted_npz

    root = tmp_path_factory.mktemp("advice")
    advise(data=_planted_npz(root / "planted.npz"), methods=["dropout"], trials=2, seeds=5, cocktails=0,
           budget="1h", db=root / "runs.db", out=root / "report", progress=False, echo=None, **PLANTED)
    return root / "report" / "index.html"


def test_advisor_report_renders_in_chromium(advisor_report):
    seen = assert_page_renders(advisor_report, tables=["table"], texts=["dropout", "dropkit.attach"], min_images=2)
    names = {img["src"].rsplit("/", 1)[-1] for img in seen["images"]}
    assert {"strength_response.png", "confirmation.png"} <= names
