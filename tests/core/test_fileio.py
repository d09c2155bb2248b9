"""The one atomic writer and the output guard (core/fileio.py)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ir_planner.core.errors import InputError, OutputError
from ir_planner.core.fileio import (
    allow_in_place,
    atomic_output,
    atomic_write_json,
    atomic_write_text,
    check_outputs,
    default_mode,
    guarded_inputs,
    register_input,
    same_file,
)


def test_written_file_has_the_normal_mode_and_no_temporary_is_left(tmp_path: Path) -> None:
    out = atomic_write_text(tmp_path / "a.txt", "hello")
    assert out.read_text() == "hello"
    assert stat.S_IMODE(out.stat().st_mode) == default_mode()
    assert os.listdir(tmp_path) == ["a.txt"]


def test_same_file_whatever_the_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "img.nii.gz"
    f.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    os.symlink(f, tmp_path / "link.nii.gz")
    os.link(f, tmp_path / "hard.nii.gz")
    monkeypatch.chdir(tmp_path)
    for spelling in ("img.nii.gz", "./img.nii.gz", "sub/../img.nii.gz", str(f),
                     "link.nii.gz", "hard.nii.gz"):
        assert same_file(spelling, f), spelling
        with pytest.raises(OutputError, match="refusing to overwrite an input"):
            check_outputs([("--out", spelling)], [f])
    assert not same_file("other.nii.gz", f)


def test_two_outputs_that_are_one_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="same file"):
        check_outputs([("--out", tmp_path / "a.json"), ("--names-out", tmp_path / "./a.json")],
                      [])


def test_registered_inputs_cannot_be_replaced_inside_a_guarded_command(tmp_path: Path) -> None:
    side = tmp_path / "seg.labels.json"
    side.write_text("{}")
    with guarded_inputs():
        register_input(side)  # what a reader does when it opens a sidecar
        with pytest.raises(OutputError, match="reads"):
            atomic_write_text(side, "new")
        assert side.read_text() == "{}"
        allow_in_place(side)  # an explicit in-place update (ablate PLAN)
        atomic_write_text(side, "new")
    assert side.read_text() == "new"
    atomic_write_text(side, "outside")  # outside a command nothing is registered
    assert side.read_text() == "outside"


def test_write_errors_name_the_output_not_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(OutputError) as err, atomic_output(target) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(28, "No space left on device")
    assert "out.bin" in str(err.value) and ".tmp" not in str(err.value)
    assert os.listdir(tmp_path) == []
    with pytest.raises(OutputError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "x.txt", "x")
    with pytest.raises(OutputError, match="folder"):
        atomic_write_text(tmp_path, "x")


def test_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="NaN"):
        atomic_write_json(tmp_path / "a.json", {"margin_mm": float("nan")})
    assert not (tmp_path / "a.json").exists()
    atomic_write_json(tmp_path / "a.json", {"margin_mm": 3.0})
    assert json.loads((tmp_path / "a.json").read_text()) == {"margin_mm": 3.0}
