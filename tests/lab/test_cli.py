"""The lab's commands (``dropkit.lab.cli``) through ``dropkit``'s entry point."""

from __future__ import annotations

import json

import pytest
import torch

import dropkit
from dropkit.cli import build_parser
from dropkit.cli import main as cli_main
from dropkit.lab import cli as lab_cli

torch.set_num_threads(1)


def test_cli_run_sweep_report_probe_and_lab(npz, tmp_path, capsys):
    from dropkit.cli import main

    db = str(tmp_path / "cli.db")
    common = ["--data", npz, "--train-size", "30", "--val-size", "6", "--epochs", "1", "--db", db]
    assert main(["run", "--method", "dropout", "--param", "p=0.3", "-q", *common]) == 0
    out = capsys.readouterr().out
    assert "done" in out and "test_acc" in out
    assert main(["run", "--method", "dropout", "--param", "p=0.3", "-q", *common]) == 0  # already stored
    assert "nothing to do" in capsys.readouterr().err
    assert main(["run", "--method", "spatial_dropout", "--model", "mlp", "-q", *common]) == 1

    sweep = tmp_path / "s.toml"
    sweep.write_text(f'[grid]\nmethods = ["none", "dropout"]\nseeds = 2\n[run]\ndata = "{npz}"\n'
                     'train_size = 30\nval_size = 6\nepochs = 1\n')
    assert main(["sweep", str(sweep), "--db", db, "-q", "--report", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "index.html").is_file()
    assert main(["report", "--db", db, "--out", str(tmp_path / "rep2")]) == 0
    assert "report:" in capsys.readouterr().out
    assert main(["probe", "coadaptation", "--methods", "none", "--seeds", "1", "--fractions", "0,0.5",
                 "--repeats", "1", "--images", "20", "-q", *common]) == 0

    labdb = str(tmp_path / "lab.db")
    args = ["lab", "--fixed", "--quick", "--data", npz, "--methods", "none,dropout,spatial_dropout", "--train-size", "30",
            "--val-size", "6", "--test-size", "20", "--db", labdb, "--out", str(tmp_path / "lab"), "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "vs baseline" in out and "wall time" in out
    assert main(args) == 0  # resumes: everything already in the store
    assert "0 runs done" in capsys.readouterr().out
    assert main(args[:1] + args[2:]) == 2  # without --fixed, --quick is refused: `dropkit lab` is the advisor
    assert main(["run", "--method", "dropout", "--epochs", "0", "--db", db]) == 2  # bad input: message, no trace


def test_width_probe_cli_stores_and_plots(npz, tmp_path, capsys):
    args = ["probe", "width", "--data", npz, "--train-size", "64", "--val-size", "16", "--epochs", "2",
            "--batch-size", "16", "--step", "16", "--db", str(tmp_path / "w.db"), "--out", str(tmp_path / "out")]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "chosen width" in out
    assert (tmp_path / "out" / "width.png").stat().st_size > 1000
    curve = json.loads((tmp_path / "out" / "width.json").read_text())
    assert curve["rows"][-1]["width"] == curve["full_width"]
    assert cli_main(args) == 0  # stored: the second call re-plots without training
    assert "already in" in capsys.readouterr().err


def test_version_and_every_lab_command_is_registered(capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"dropkit {dropkit.__version__}"
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"methods", "bench", "advise", "run", "sweep", "report", "lab", "probe", "experts"} <= set(commands)
    probes = commands["probe"]._subparsers._group_actions[0].choices
    assert set(probes) == {"coadaptation", "width"}


def test_a_broken_command_module_is_not_skipped(monkeypatch):
    class Broken:
        @staticmethod
        def add_commands(subparsers):
            raise ImportError("a lab dependency is missing")

    monkeypatch.setattr(lab_cli, "COMMAND_MODULES", (*lab_cli.COMMAND_MODULES, Broken))
    with pytest.raises(ImportError, match="missing"):
        build_parser()



def test_the_command_line_starts_without_the_lab_extras():
    # A core install (torch and numpy only) must still answer --version, --help and `methods`; the lab's field
    # libraries load when a lab command runs.
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys\n"
            "for name in ('scipy', 'rich', 'monai', 'matplotlib'): sys.modules[name] = None  # not installed\n"
            "from dropkit.cli import main\n"
            "assert main(['methods', 'dropblock']) == 0\n"
            "import dropkit.lab.config\n"
            "main(['--version'])\n")
    src = str(Path(__import__("dropkit").__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "dropkit " in done.stdout and "dropblock" in done.stdout
