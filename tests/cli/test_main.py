"""The ``ir-planner`` entry point itself."""

from __future__ import annotations

import subprocess
import sys

from ir_planner.cli import main


def test_version_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "ir_planner", "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("ir-planner ")
    out = subprocess.run([sys.executable, "-m", "ir_planner", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "LPS" in out.stdout


def test_no_command_exits_nonzero(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out
