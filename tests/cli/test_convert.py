"""``ir-planner convert``: NIfTI/NRRD/MHA geometry, single files, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from ir_planner.cli import main
from ir_planner.io.dicom_write import write_dicom_series
from tests.io.test_dicom_write import DIRECTIONS, make_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# Agreement with dcm2niix on the real GE tilted series and many synthetic geometries:
# tests/io/test_dcm2niix_agreement.py (through `ir-planner convert`).


def test_nifti_from_convert_same_world_positions_in_sitk_and_nibabel(tmp_path: Path) -> None:
    vol = make_volume(DIRECTIONS["oblique"], shape_kji=(5, 9, 7))
    write_dicom_series(vol, tmp_path / "dcm")
    out = tmp_path / "v.nii.gz"
    assert main(["-q", "convert", str(tmp_path / "dcm"), str(out)]) == 0
    img = sitk.ReadImage(str(out))
    nii = nib.load(str(out))
    assert int(nii.header["qform_code"]) > 0 and int(nii.header["sform_code"]) > 0
    np.testing.assert_allclose(nii.get_qform(), nii.get_sform(), atol=1e-4)
    affine_lps = LPS_TO_RAS @ nii.affine
    ni, nj, nk = img.GetSize()
    for ijk in [(0, 0, 0), (ni - 1, 0, 0), (0, nj - 1, nk - 1), (ni - 1, nj - 1, nk - 1)]:
        sitk_world = np.array(img.TransformIndexToPhysicalPoint(ijk))
        nib_world = affine_lps[:3, :3] @ np.array(ijk, float) + affine_lps[:3, 3]
        ours_world = vol.index_to_world(np.array(ijk, float))
        np.testing.assert_allclose(sitk_world, ours_world, atol=1e-3)
        np.testing.assert_allclose(nib_world, ours_world, atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol.array)
    np.testing.assert_array_equal(np.asarray(nii.dataobj).transpose(2, 1, 0), vol.array)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_other_formats(tmp_path: Path, suffix: str) -> None:
    vol = make_volume(DIRECTIONS["flipped"], shape_kji=(3, 5, 4))
    write_dicom_series(vol, tmp_path / "dcm")
    out = tmp_path / f"v{suffix}"
    assert main(["-q", "convert", str(tmp_path / "dcm"), str(out)]) == 0
    img = sitk.ReadImage(str(out))
    np.testing.assert_allclose(
        img.TransformIndexToPhysicalPoint((3, 4, 2)), vol.index_to_world([3.0, 4.0, 2.0]), atol=1e-3
    )


def test_convert_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vol = make_volume(shape_kji=(3, 5, 4))
    write_dicom_series(vol, tmp_path / "dcm", series_uid="1.2.826.0.1.3680043.8.498.99")
    assert main(["-q", "convert", str(tmp_path / "dcm"), str(tmp_path / "v.png")]) == 2
    assert "unsupported suffix" in capsys.readouterr().err
    assert main(["-q", "convert", str(tmp_path / "dcm"), str(tmp_path / "no" / "v.nii.gz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["-q", "convert", str(tmp_path / "dcm"), str(tmp_path / "v.nii.gz"),
                 "--series", "1.2.3"]) == 2
    err = capsys.readouterr().err
    assert "no series with UID 1.2.3" in err and "1.2.826.0.1.3680043.8.498.99" in err
    assert not (tmp_path / "v.nii.gz").exists()


def test_convert_subprocess_progress_and_unwritable_output(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(3, 5, 4))
    write_dicom_series(vol, tmp_path / "dcm")
    exe = str(Path(sys.executable).parent / "ir-planner")
    proc = subprocess.run([exe, "convert", str(tmp_path / "dcm"), str(tmp_path / "v.mha")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "reading pixel data" in proc.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    # root ignores folder permissions: /proc refuses new files for everybody
    target = locked if os.access(locked, os.W_OK) is False else Path("/proc")
    try:
        proc = subprocess.run([exe, "-q", "convert", str(tmp_path / "dcm"),
                               str(target / "v.nii.gz")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "not writable" in proc.stderr
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("name", ["no_meta.dcm", "MR_truncated.dcm", "badVR.dcm",
                                  "meta_missing_tsyntax.dcm"])
def test_convert_malformed_pydicom_files_exit_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    from pydicom.data import get_testdata_file

    assert main(["-q", "convert", get_testdata_file(name), str(tmp_path / "v.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert name in err and err.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / "v.nii.gz").exists()


def test_convert_single_file_reads_series_unless_single_file(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(5, 6, 7))
    files = write_dicom_series(vol, tmp_path / "dcm")
    exe = str(Path(sys.executable).parent / "ir-planner")
    proc = subprocess.run([exe, "-q", "convert", str(files[2]), str(tmp_path / "a.nii")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "7×6×5 voxels" in proc.stdout and "read the whole series" in proc.stderr
    assert main(["-q", "convert", "--single-file", str(files[2]), str(tmp_path / "b.nii")]) == 0
    one = nib.load(str(tmp_path / "b.nii"))
    assert one.shape[:3] == (7, 6, 1)
    np.testing.assert_array_equal(np.asarray(one.dataobj)[..., 0].T, vol.array[2])
