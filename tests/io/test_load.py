"""load_image: one entry point for DICOM folders/files and NIfTI/NRRD/MHA files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ir_planner.core.errors import ImageReadError, InputError
from ir_planner.io.dicom_write import write_dicom_series
from ir_planner.io.image_files import write_image_file
from ir_planner.io.load import image_file_info, load_image
from tests.io.test_dicom_write import DIRECTIONS, make_volume


def test_dicom_folder_and_nifti_give_the_same_volume(tmp_path: Path) -> None:
    vol = make_volume(DIRECTIONS["oblique"], shape_kji=(5, 9, 7))
    write_dicom_series(
        vol, tmp_path / "dcm", series_description="Abdomen venous", patient_id="P42",
        study_date="20240301", patient_position="FFS",
    )
    from_dicom = load_image(tmp_path / "dcm")
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        out = write_image_file(from_dicom, tmp_path / f"v{suffix}")
        back = load_image(out)
        np.testing.assert_array_equal(back.array, from_dicom.array)
        np.testing.assert_allclose(back.index_to_lps, from_dicom.index_to_lps, atol=1e-4)
        assert back.metadata["source"] == str(out)
    meta = from_dicom.metadata
    assert meta["series_description"] == "Abdomen venous"
    assert meta["patient_id"] == "P42"
    assert meta["study_date"] == "20240301"
    assert meta["patient_position"] == "FFS"
    assert meta["manufacturer"] == "IR Planner"
    assert meta["slice_thickness_mm"] == pytest.approx(2.5)
    assert from_dicom.modality == "CT" and from_dicom.series_uid


def test_single_dicom_file_reads_its_series_or_that_slice(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(3, 5, 6))
    files = write_dicom_series(vol, tmp_path / "dcm")
    series = load_image(files[1])
    np.testing.assert_array_equal(series.array, vol.array)
    assert any("read the whole series" in w for w in series.warnings)
    one = load_image(files[1], single_file=True)
    assert one.shape == (1, 5, 6)
    np.testing.assert_array_equal(one.array[0], vol.array[1])
    np.testing.assert_allclose(one.index_to_world([0.0, 0.0, 0.0]), vol.index_to_world([0, 0, 1]))


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "missing.nii.gz")
    out = write_image_file(make_volume(), tmp_path / "v.nii.gz")
    with pytest.raises(InputError, match="series UID"):
        load_image(out, series_uid="1.2.3")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(ImageReadError, match="bad.nii.gz"):
        load_image(bad)
    with pytest.raises(ImageReadError, match="bad.nii.gz"):
        image_file_info(bad)


def test_image_file_info_matches_simpleitk(tmp_path: Path) -> None:
    vol = make_volume(DIRECTIONS["flipped"])
    out = write_image_file(vol, tmp_path / "v.nrrd")
    info = image_file_info(out)
    img = sitk.ReadImage(str(out))
    assert info["size_ijk"] == list(img.GetSize())
    np.testing.assert_allclose(info["spacing_mm"], img.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(info["origin_lps_mm"], img.GetOrigin(), atol=1e-4)
    assert info["orientation"] == vol.orientation_code() == "RPI"
