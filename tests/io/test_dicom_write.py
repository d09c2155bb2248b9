"""write_dicom_series: round trips through our reader and SimpleITK/GDCM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ir_planner.core.errors import GeometryError, InputError
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.io.dicom import read_dicom_series
from ir_planner.io.dicom_write import write_dicom_series


def rotation(axis: str, degrees: float) -> np.ndarray:
    """Rotation matrix about x, y or z."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def make_volume(
    direction: np.ndarray | None = None,
    *,
    shape_kji: tuple[int, int, int] = (6, 20, 24),
    spacing_mm: tuple[float, float, float] = (0.8, 0.7, 2.5),
    origin_lps: tuple[float, float, float] = (-40.0, -30.0, 12.5),
    integer: bool = True,
    seed: int = 0,
) -> ImageVolume:
    """A small volume with distinct values in every voxel (HU-like)."""
    rng = np.random.default_rng(seed)
    arr = rng.normal(0.0, 400.0, size=shape_kji)
    arr = np.round(arr) if integer else arr
    affine = affine_from_geometry(origin_lps, spacing_mm, np.eye(3) if direction is None else direction)
    return ImageVolume(arr.astype(np.int16 if integer else np.float32), affine, modality="CT")


def sitk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def sample_world(volume: ImageVolume, points_lps: np.ndarray) -> np.ndarray:
    """Nearest-voxel values of ``volume`` at world points (must be voxel centres)."""
    ijk = np.round(volume.world_to_index(points_lps)).astype(int)
    return volume.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]]


DIRECTIONS = {
    "identity": np.eye(3),
    "oblique": rotation("z", 20) @ rotation("x", 15) @ rotation("y", -10),
    "flipped": np.diag([-1.0, 1.0, -1.0]),  # row cosine toward R, slices toward feet
    "left_handed_oblique": rotation("x", 30) @ np.diag([1.0, 1.0, -1.0]),
    "sagittal": np.array([[0.0, 0, 1], [1, 0, 0], [0, -1, 0]]),
}


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_round_trip_ours_and_sitk_same_world_positions(tmp_path: Path, name: str) -> None:
    vol = make_volume(DIRECTIONS[name])
    files = write_dicom_series(vol, tmp_path / "s", study_date="20240102")
    assert len(files) == vol.shape[0] and all(f.is_file() for f in files)

    ours = read_dicom_series(tmp_path / "s")
    img = sitk_read(tmp_path / "s")
    ref = sitk.GetArrayFromImage(img)
    assert ours.shape == ref.shape == vol.shape
    # Index→LPS agrees with SimpleITK's TransformIndexToPhysicalPoint at the 8 corners.
    ni, nj, nk = ours.shape_ijk
    for ijk in [(i, j, k) for i in (0, ni - 1) for j in (0, nj - 1) for k in (0, nk - 1)]:
        np.testing.assert_allclose(
            ours.index_to_world(np.array(ijk, float)),
            img.TransformIndexToPhysicalPoint(ijk),
            atol=1e-3,
        )
        # and back: world → index through both
        world = img.TransformIndexToPhysicalPoint(ijk)
        np.testing.assert_allclose(ours.world_to_index(np.array(world)), ijk, atol=1e-4)
    np.testing.assert_array_equal(ours.array, ref)
    # Every voxel of the written volume is found at the same world point.
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in vol.shape_ijk], indexing="ij"), -1)
    world = vol.index_to_world(grid.reshape(-1, 3).astype(float))
    np.testing.assert_array_equal(sample_world(ours, world), sample_world(vol, world))


def test_float_values_use_slope_and_round_trip_within_quantisation(tmp_path: Path) -> None:
    vol = make_volume(integer=False)
    write_dicom_series(vol, tmp_path / "f")
    ds = pydicom.dcmread(next((tmp_path / "f").iterdir()))
    slope = float(ds.RescaleSlope)
    assert slope != 1.0 and ds.pixel_array.dtype == np.int16
    ours = read_dicom_series(tmp_path / "f")
    ref = sitk.GetArrayFromImage(sitk_read(tmp_path / "f"))
    assert np.max(np.abs(ours.array - vol.array)) <= slope / 2 + 1e-3
    np.testing.assert_allclose(ours.array, ref, atol=1e-3)


def test_header_fields_and_deterministic_uids(tmp_path: Path) -> None:
    vol = make_volume(DIRECTIONS["oblique"])
    kwargs = dict(
        study_uid="1.2.826.0.1.3680043.8.498.1",
        series_uid="1.2.826.0.1.3680043.8.498.2",
        frame_of_reference_uid="1.2.826.0.1.3680043.8.498.3",
        series_description="Test series",
        series_number=7,
        modality="MR",
        patient_position="FFS",
        study_date="20240102",
    )
    a = write_dicom_series(vol, tmp_path / "a", **kwargs)
    b = write_dicom_series(vol, tmp_path / "b", **kwargs)
    for fa, fb in zip(a, b):
        assert fa.read_bytes() == fb.read_bytes()  # fully deterministic
    ds = pydicom.dcmread(a[2])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.Modality == "MR" and ds.PatientPosition == "FFS" and ds.SeriesNumber == 7
    assert ds.InstanceNumber == 3 and ds.FrameOfReferenceUID == kwargs["frame_of_reference_uid"]
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [0.7, 0.8])  # row, column
    np.testing.assert_allclose(float(ds.SliceThickness), 2.5)
    np.testing.assert_allclose(
        [float(v) for v in ds.ImagePositionPatient], vol.index_to_world([0.0, 0.0, 2.0]), atol=1e-4
    )
    d = vol.direction
    np.testing.assert_allclose(
        [float(v) for v in ds.ImageOrientationPatient], [*d[:, 0], *d[:, 1]], atol=1e-6
    )
    uids = {pydicom.dcmread(f).SOPInstanceUID for f in a}
    assert len(uids) == len(a)
    vol_back = read_dicom_series(tmp_path / "a")
    assert vol_back.modality == "MR" and vol_back.metadata["patient_position"] == "FFS"


def test_generated_uids_differ_between_calls(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(2, 4, 4))
    a = pydicom.dcmread(write_dicom_series(vol, tmp_path / "a")[0])
    b = pydicom.dcmread(write_dicom_series(vol, tmp_path / "b")[0])
    assert a.SeriesInstanceUID != b.SeriesInstanceUID
    assert a.StudyInstanceUID != b.StudyInstanceUID


def test_sheared_volume_is_refused(tmp_path: Path) -> None:
    vol = make_volume()
    sheared = vol.index_to_lps.copy()
    sheared[1, 2] = 0.8  # k axis leans toward posterior: a gantry tilt kept as shear
    with pytest.raises(GeometryError, match="sheared"):
        write_dicom_series(ImageVolume(vol.array, sheared), tmp_path / "x")
    assert not any(tmp_path.iterdir())


def test_existing_files_are_not_overwritten_and_nothing_half_written(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(3, 4, 4))
    write_dicom_series(vol, tmp_path / "s", series_number=1)
    with pytest.raises(InputError, match="already holds"):
        write_dicom_series(vol, tmp_path / "s", series_number=1)
    # A second series in the same folder is fine and leaves no temporary folder.
    write_dicom_series(vol, tmp_path / "s", series_number=2)
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert len(names) == 6 and not any(n.startswith(".") for n in names)
    with pytest.raises(InputError, match="modality"):
        write_dicom_series(vol, tmp_path / "t", modality="US")
    with pytest.raises(InputError, match="NaN"):
        write_dicom_series(vol.with_array(np.full(vol.shape, np.nan)), tmp_path / "u")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
