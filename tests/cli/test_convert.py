"""``ir-planner convert``: agreement with dcm2niix on a real tilted series, NIfTI geometry, errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ir_planner.cli import main
from ir_planner.io.dicom_write import write_dicom_series
from tests.io.test_dicom_write import DIRECTIONS, make_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _nifti_lps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Array (x, y, z order) and index→LPS affine of a NIfTI file read with nibabel."""
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), LPS_TO_RAS @ img.affine


def _sample(array_xyz: np.ndarray, index_to_lps: np.ndarray, points_lps: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(index_to_lps)
    ijk = points_lps @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all((ijk >= 0) & (ijk <= np.array(array_xyz.shape) - 1), axis=1)
    values = ndimage.map_coordinates(array_xyz, ijk.T, order=1, cval=np.nan)
    values[~inside] = np.nan
    return values


@pytest.fixture(scope="module")
def tilt_outputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tilt")
    src = shared_data / "dcm-qa-ct-ge-tilt"
    ours = tmp / "ours.nii"  # uncompressed: fast to write and read
    assert main(["-q", "convert", str(src), str(ours)]) == 0
    dcm2niix = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    ref_dir = tmp / "dcm2niix"
    ref_dir.mkdir()
    subprocess.run([dcm2niix, "-z", "n", "-f", "ref", "-o", str(ref_dir), str(src)],
                   check=True, capture_output=True, timeout=120)
    tilt_eq = sorted(ref_dir.glob("ref_Tilt_Eq*.nii")) or sorted(ref_dir.glob("ref_Eq*.nii"))
    assert tilt_eq, f"dcm2niix wrote no _Tilt_Eq/_Eq file: {sorted(p.name for p in ref_dir.iterdir())}"
    return {"ours": ours, "ref": tilt_eq[0]}


def test_tilted_ge_series_agrees_with_dcm2niix_in_world_space(tilt_outputs: dict[str, Path]) -> None:
    ours, ours_affine = _nifti_lps(tilt_outputs["ours"])
    ref, ref_affine = _nifti_lps(tilt_outputs["ref"])
    # Both are orthogonal grids (tilt removed).
    for affine in (ours_affine, ref_affine):
        d = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
        np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-4)
    # A grid of world points over our field of view; keep those inside both.
    axes = [np.arange(0, n, 6) for n in ours.shape]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(float)
    points = ijk @ ours_affine[:3, :3].T + ours_affine[:3, 3]
    a = _sample(ours, ours_affine, points)
    b = _sample(ref, ref_affine, points)
    both = np.isfinite(a) & np.isfinite(b)
    assert both.sum() > 50_000
    r = np.corrcoef(a[both], b[both])[0, 1]
    assert r >= 0.95, r
    bone_a = both & (a > 300)
    bone_b = both & (b > 300)
    assert bone_a.sum() > 1000 and bone_b.sum() > 1000
    centroid_a = points[bone_a].mean(axis=0)
    centroid_b = points[bone_b].mean(axis=0)
    assert np.linalg.norm(centroid_a - centroid_b) <= 1.0, (centroid_a, centroid_b)


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
