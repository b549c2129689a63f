"""``dropkit bench``: the harness measures every row and checks the targets (tiny shapes: the harness, not the speed)."""

import io

from dropkit.bench import run_benchmark


def test_benchmark_harness_measures_and_checks_targets():
    buf = io.StringIO()
    rows = run_benchmark(shapes=((4, 8, 8, 8),), pattern="spatial_dropout", rounds=3, warmup=1, out=buf)
    by_name = {r["name"]: r for r in rows}
    assert {"nn.Dropout2d", "nn.Dropout", "conv3x3", "textbook_dropblock", "spatial_dropout"} <= set(by_name)
    assert all(r["median_ms"] > 0 for r in rows if not r["name"].startswith("gain:"))
    assert by_name["spatial_dropout"]["met"] in ("yes", "NO")
    assert "spatial_dropout" in buf.getvalue()
