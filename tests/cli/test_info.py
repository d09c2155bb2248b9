"""``ir-planner info``: series table, JSON, image files, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ir_planner.cli import main
from ir_planner.io.dicom_write import write_dicom_series
from ir_planner.io.image_files import write_image_file
from tests.io.test_dicom_write import DIRECTIONS, make_volume


def test_info_tilted_series_reports_geometry_and_warnings(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "info", str(shared_data / "dcm-qa-ct-ge-tilt")]) == 0
    out = capsys.readouterr().out
    assert "1 study(ies), 1 series" in out
    assert "CT" in out and "HFS" in out and "LPS" in out
    assert "gantry tilt" in out and "18.50°" in out
    assert "uneven slice spacing" in out
    assert "skipped 1 non-DICOM file(s): LICENSE" in out


def test_info_json_multi_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_dicom_series(make_volume(shape_kji=(6, 8, 8)), tmp_path / "a", series_number=3,
                       series_description="venous")
    write_dicom_series(make_volume(DIRECTIONS["flipped"], shape_kji=(3, 8, 8)),
                       tmp_path / "b", series_number=4, modality="MR")
    assert main(["-q", "info", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "dicom" and len(data["series"]) == 2
    by_number = {s["series_number"]: s for s in data["series"]}
    assert by_number[3]["size_ijk"] == [8, 8, 6]
    assert by_number[3]["spacing_mm"] == pytest.approx([0.8, 0.7, 2.5])
    assert by_number[3]["description"] == "venous" and by_number[3]["orientation"] == "LPS"
    assert by_number[4]["modality"] == "MR" and by_number[4]["orientation"] == "RPI"
    assert data["default_series_uid"] == by_number[3]["series_uid"]


def test_info_image_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = write_image_file(make_volume(), tmp_path / "v.nii.gz")
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "24×20×6 voxels" in text and "0.8×0.7×2.5 mm" in text and "LPS" in text
    assert main(["info", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "image" and data["size_ijk"] == [24, 20, 6]


def test_info_subprocess_junk_folder_exits_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.dcm").write_bytes(b"")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ir-planner"), "info", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no readable DICOM" in proc.stderr and "notes.txt" in proc.stderr
    assert "empty.dcm: empty file" in proc.stderr


def test_info_single_file_describes_its_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_dicom_series(make_volume(shape_kji=(4, 5, 6)), tmp_path / "dcm")
    assert main(["-q", "info", str(files[1])]) == 0
    out = capsys.readouterr().out
    assert "note: IM_0001_00002.dcm is one image of a series" in out and "6×5×4" in out
    assert main(["-q", "info", "--json", "--single-file", str(files[1])]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["notes"] == [] and data["series"][0]["n_frames"] == 1
