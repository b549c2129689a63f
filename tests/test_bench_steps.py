"""The training-step benchmark times every stateful arm."""

import io


def test_step_benchmark_times_every_stateful_arm():
    from dropkit.bench_steps import STEP_METHODS, run_step_benchmark

    buf = io.StringIO()
    rows = run_step_benchmark(rounds=1, out=buf)
    assert [r["name"] for r in rows] == ["none", "nn.Dropout", *STEP_METHODS]
    assert all(r["step_ms"] > 0 for r in rows) and rows[0]["vs_plain"] == 1.0
    assert "ns_dropout" in buf.getvalue()
