"""``dropkit bench``: every row measured, targets checked; the floors, reference gains and memory columns (tiny
shapes: the harness, not the speed)."""

from __future__ import annotations

import io
import math

from dropkit.bench import FLOOR_OF_UNIT, REFERENCE_GAINS, WORK_FLOORS, run_benchmark, run_step_memory
from dropkit.lab.cli import bench_resnet


def test_rows_carry_floor_ratio_saved_bytes_and_reference_gain():
    buf = io.StringIO()
    rows = [row for pattern in ("dropblock", "heuristic_dropout")
            for row in run_benchmark(shapes=((4, 8, 8, 8),), pattern=pattern, rounds=3, warmup=1, out=buf)]
    by_name = {r["name"]: r for r in rows}
    assert {"floor:element", "floor:channel", "floor:sample", "floor:spatial", "floor:histogram"} <= set(by_name)
    block = by_name["dropblock"]
    assert block["floor"] == FLOOR_OF_UNIT["block"] and math.isfinite(block["vs_floor"]) and block["vs_floor"] > 0
    assert 0.2 <= block["saved_per_byte"] <= 0.26  # a bool mask (+ a 0-d scale), never a float one
    # its output is a copy with channels replaced by their Laplacian, not x times a channel mask
    assert by_name["heuristic_dropout"]["floor"] == "floor:laplacian_fill"
    assert "with floor:laplacian_fill the least it can cost" in by_name["heuristic_dropout"]["target"]
    for name in REFERENCE_GAINS:
        assert by_name[f"gain:{name}"]["met"] in ("yes", "NO")
    assert "floor:histogram" in by_name["heuristic_dropout"]["target"]  # the measured reason is printed
    out = buf.getvalue()
    assert "saved B/B" in out and "gain:dropblock" in out


def test_guided_methods_print_their_work_floors_as_the_reason():
    rows = [row for pattern in ("heuristic_dropout", "corrdrop_channel", "channel_dropblock")
            for row in run_benchmark(shapes=((4, 8, 8, 8),), pattern=pattern, rounds=3, warmup=1, out=io.StringIO())]
    by_name = {r["name"]: r for r in rows}
    for name, work in WORK_FLOORS.items():
        if name not in by_name:
            continue
        for floor in work:
            assert math.isfinite(by_name[floor]["vs_conv3x3"]) and by_name[floor]["vs_conv3x3"] > 0
            assert floor in by_name[name]["target"]
        assert "the least it can cost is" in by_name[name]["target"]
    assert {"heuristic_dropout", "corrdrop_channel", "channel_dropblock"} <= set(by_name)


def test_step_memory_meets_the_targets():
    rows = {r["name"]: r for pattern in ("dropblock", "gaussian_dropout")
            for r in run_step_memory(bench_resnet, out=io.StringIO(), pattern=pattern)}
    assert rows["none"]["vs_plain"] == 1.0
    assert rows["dropblock"]["vs_plain"] <= 1.07 and rows["dropblock"]["met"] == "yes"
    assert rows["dropblock+recompute"]["vs_plain"] <= 1.01
    assert rows["gaussian_dropout"]["vs_plain"] <= 1.01  # recomputes by default
    assert rows["gaussian_dropout+stored"]["vs_plain"] > rows["gaussian_dropout"]["vs_plain"]  # float noise kept


def test_benchmark_harness_measures_and_checks_targets():
    buf = io.StringIO()
    rows = run_benchmark(shapes=((4, 8, 8, 8),), pattern="spatial_dropout", rounds=3, warmup=1, out=buf)
    by_name = {r["name"]: r for r in rows}
    assert {"nn.Dropout2d", "nn.Dropout", "conv3x3", "textbook_dropblock", "spatial_dropout"} <= set(by_name)
    assert all(r["median_ms"] > 0 for r in rows if not r["name"].startswith("gain:"))
    assert by_name["spatial_dropout"]["met"] in ("yes", "NO")
    assert "spatial_dropout" in buf.getvalue()


def test_a_filter_that_matches_no_method_is_refused_before_any_timing(capsys):
    # A regular expression where a shell-style pattern is expected used to time only the yardsticks and report
    # "targets missed or failed: none", as if every method had passed.
    import argparse

    import pytest

    from dropkit.bench import add_arguments, main

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ValueError, match=r"--methods.*'\^dropblock\$'.*shell-style.*dropblock"):
        main(parser.parse_args(["--methods", "^dropblock$", "--no-memory"]))
    assert "median ms" not in capsys.readouterr().out


def test_bad_threads_and_an_unwritable_csv_are_refused_before_any_timing(tmp_path, capsys):
    # --threads 0 used to end in "RuntimeError: set_num_threads expects a positive integer" from torch, and a
    # --csv under a file in a FileExistsError traceback after the whole benchmark had run.
    import argparse

    import pytest

    from dropkit.bench import add_arguments, main

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ValueError, match=r"--threads must be an integer ≥ 1, got 0"):
        main(parser.parse_args(["--threads", "0", "--no-memory"]))
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"--csv '.*f/x.csv'.*is a file, not a folder"):
        main(parser.parse_args(["--csv", str(tmp_path / "f" / "x.csv"), "--methods", "dropout", "--no-memory"]))
    assert "median ms" not in capsys.readouterr().out
