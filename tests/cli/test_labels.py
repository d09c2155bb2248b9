"""``ir-planner labels``: table, JSON, warnings, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ir_planner.cli import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ir_planner", "-q", "labels", *args],
                          capture_output=True, text=True, timeout=120)


def test_mask_folder_table_via_subprocess(shared_data: Path) -> None:
    out = _run(str(shared_data / "totalseg-ct" / "masks"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "62 structures" in lines[0] and "122×101×112" in lines[0]
    liver = next(line.split() for line in lines if line.startswith("liver "))
    mask = sitk.GetArrayFromImage(
        sitk.ReadImage(str(shared_data / "totalseg-ct" / "masks" / "liver.nii.gz"))) != 0
    assert liver[3] == str(int(mask.sum()))
    assert float(liver[4]) == pytest.approx(mask.sum() * 0.027, abs=0.006)
    assert liver[5:] == ["solid_organ", "0.00", "no"]
    aorta = next(line.split() for line in lines if line.startswith("aorta "))
    assert aorta[5:] == ["vessel", "3.00", "yes"]
    assert "warning: 45 empty mask(s) dropped" in out.stderr


def test_bad_input_exits_2_with_one_line(shared_data: Path, tmp_path: Path) -> None:
    out = _run(str(shared_data / "dcmqi-seg" / "ct-3slice" / "01.dcm"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "neither a DICOM SEG nor an RTSTRUCT" in out.stderr
    out = _run(str(tmp_path / "missing.nii.gz"))
    assert out.returncode == 2 and "no such file" in out.stderr and "Traceback" not in out.stderr


def test_seg_with_image_json(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seg = shared_data / "dcmqi-seg"
    code = main(["-q", "labels", str(seg / "partial_overlaps.dcm"), "--image",
                 str(seg / "ct-3slice"), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["grid"]["size_ijk"] == [512, 512, 3]
    assert [s["name"] for s in data["structures"]] == ["GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE",
                                                        "DARK_BLUE"]
    assert data["layers"] >= 2
    nrrd = sitk.GetArrayFromImage(sitk.ReadImage(str(seg / "partial_overlaps-2.nrrd")))
    orange = next(s for s in data["structures"] if s["name"] == "ORANGE")
    assert orange["voxels"] == int(np.count_nonzero(nrrd == 2))
    assert orange["category"] == "vessel" and orange["forbidden"] is True


def test_rtstruct_without_image_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.Modality = "RTSTRUCT"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "rs.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert main(["-q", "labels", str(path)]) == 2
    err = capsys.readouterr().err
    assert "rs.dcm" in err and "--image" in err
