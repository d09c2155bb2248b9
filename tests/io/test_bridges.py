"""Exact ImageVolume ↔ SimpleITK / PyVista conversions, and NIfTI/NRRD/MHA files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from ir_planner.core.errors import GeometryError, ImageReadError, InputError
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.io.image_files import read_image_file, write_image_file
from ir_planner.io.sitk_convert import from_sitk, to_sitk
from ir_planner.io.vtk_convert import (
    contour_surface_lps,
    from_pyvista,
    map_points_to_lps,
    to_pyvista,
)
from tests.core.test_volume import DIRECTIONS


def _volume(direction: np.ndarray) -> ImageVolume:
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 1000, size=(6, 7, 8)).astype(np.int16)
    return ImageVolume(arr, affine_from_geometry([-50.0, 20.0, 100.0], [0.8, 0.9, 2.0], direction))


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_sitk_round_trip(name: str) -> None:
    vol = _volume(DIRECTIONS[name])
    img = to_sitk(vol)
    assert img.GetSize() == vol.shape_ijk
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((7, 6, 5)),
                               vol.index_to_world([7, 6, 5]), atol=1e-9)
    assert img.GetPixel(7, 6, 5) == vol.array[5, 6, 7]
    back = from_sitk(img)
    np.testing.assert_allclose(back.index_to_lps, vol.index_to_lps, atol=1e-9)
    np.testing.assert_array_equal(back.array, vol.array)


def test_sheared_volume_refuses_sitk() -> None:
    affine = np.eye(4)
    affine[2, 1] = 0.3  # shear (gantry tilt kept explicitly)
    with pytest.raises(GeometryError, match="orthogonal"):
        to_sitk(ImageVolume(np.zeros((2, 2, 2)), affine))


@pytest.mark.parametrize("name", ["identity", "oblique_flipped", "flipped_xy"])
def test_pyvista_round_trip_and_contour_positions(name: str) -> None:
    direction = DIRECTIONS[name]
    arr = np.zeros((20, 20, 20), np.float32)
    arr[6:14, 8:16, 4:12] = 1.0  # a box: centre at index (7.5, 11.5, 9.5)
    vol = ImageVolume(arr, affine_from_geometry([10.0, -30.0, 55.0], [1.0, 1.5, 2.0], direction))
    grid = to_pyvista(vol)
    back = from_pyvista(grid)
    np.testing.assert_allclose(back.index_to_lps, vol.index_to_lps, atol=1e-9)
    np.testing.assert_array_equal(back.array, arr)
    # VTK's contour ignores the direction matrix: map its points back and check the position
    surf = grid.contour([0.5], scalars="values")
    centre = map_points_to_lps(np.asarray(surf.points), vol).mean(axis=0)
    np.testing.assert_allclose(centre, vol.index_to_world([7.5, 11.5, 9.5]), atol=0.3)
    # the robust helper gives the same place whatever VTK does with the direction
    surf_lps = contour_surface_lps(vol, arr)
    np.testing.assert_allclose(np.asarray(surf_lps.points).mean(axis=0),
                               vol.index_to_world([7.5, 11.5, 9.5]), atol=0.3)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("name", ["oblique_flipped", "flipped_xy"])
def test_file_round_trip(tmp_path: Path, suffix: str, name: str) -> None:
    vol = _volume(DIRECTIONS[name])
    out = write_image_file(vol, tmp_path / f"img{suffix}")
    back = read_image_file(out)
    np.testing.assert_allclose(back.index_to_lps, vol.index_to_lps, atol=1e-4)
    np.testing.assert_array_equal(back.array, vol.array)
    if suffix == ".nii.gz":
        # NIfTI is RAS: nibabel's affine = diag(-1,-1,1,1) · index_to_lps
        ras = nib.load(str(out)).affine
        np.testing.assert_allclose(ras, np.diag([-1, -1, 1, 1]) @ vol.index_to_lps, atol=1e-4)
        assert np.array_equal(np.asarray(nib.load(str(out)).dataobj)[7, 6, 5], vol.array[5, 6, 7])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"img{suffix}"]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        read_image_file(tmp_path / "missing.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="junk.nii.gz"):
        read_image_file(junk)
    with pytest.raises(InputError, match="unsupported suffix"):
        write_image_file(_volume(np.eye(3)), tmp_path / "x.png")
    with pytest.raises(InputError, match="does not exist"):
        write_image_file(_volume(np.eye(3)), tmp_path / "nodir" / "x.nii.gz")
    img2d = sitk.Image(4, 4, sitk.sitkUInt8)
    sitk.WriteImage(img2d, str(tmp_path / "flat.nrrd"))
    with pytest.raises(ImageReadError, match="3-D"):
        read_image_file(tmp_path / "flat.nrrd")
