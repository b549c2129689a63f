"""The prepared GPU script runs end to end in its CPU smoke mode (tiny shapes): every section, every yardstick."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def test_gpu_check_smoke_runs_every_section(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--smoke", "--methods", "dropout,dropblock"]) == 0
    out = capsys.readouterr().out
    for section in ("correctness", "eager", "compile", "graphs"):
        assert f"== {section}" in out
    assert "FAIL " not in out and "skipped (time box)" not in out
    assert "dropblock recompute=True  bit-identical" in out
    for mode in ("eager", "compile", "graphs"):
        for label in ("x*y floor", "nn.Dropout", "textbook_dropblock", "dropout", "dropblock"):
            assert any(line.startswith(f"time  {mode:<8}{label:<28}") for line in out.splitlines()), (mode, label)
    assert "faster than textbook" in out and "x floor" in out
