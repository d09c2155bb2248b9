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


def test_a_command_with_a_broken_import_does_not_take_the_cli_down(
    monkeypatch, capsys  # type: ignore[no-untyped-def]
) -> None:
    import ir_planner.cli as cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "_missing_dep_probe"])
    real_find_spec = cli.importlib.util.find_spec

    def find_spec(name: str):  # type: ignore[no-untyped-def]
        return object() if name.endswith("_missing_dep_probe") else real_find_spec(name)

    monkeypatch.setattr(cli.importlib.util, "find_spec", find_spec)
    assert main(["_missing_dep_probe", "x"]) == 2
    err = capsys.readouterr().err
    assert "cannot run because a dependency failed to import" in err
    assert main(["-q", "devices", "--json"]) == 0  # the other commands still work
