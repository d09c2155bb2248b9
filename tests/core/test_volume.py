"""ImageVolume geometry: the index convention, against SimpleITK as reference."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ir_planner.core.errors import GeometryError
from ir_planner.core.volume import (
    ImageVolume,
    affine_from_geometry,
    geometry_from_affine,
    same_grid,
)


def _rotation(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


DIRECTIONS = {
    "identity": np.eye(3),
    "flipped_xy": np.diag([-1.0, -1.0, 1.0]),
    "flipped_z": np.diag([1.0, 1.0, -1.0]),
    "oblique": _rotation([1, 2, 3], 23.0),
    "oblique_flipped": _rotation([0.3, -1, 0.5], 71.0) @ np.diag([1.0, -1.0, 1.0]),
    "sagittal": np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float),
}


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_index_to_world_matches_simpleitk(name: str) -> None:
    direction = DIRECTIONS[name]
    origin = np.array([-120.5, 33.0, 410.25])
    spacing = np.array([0.7, 0.9, 2.5])
    shape_kji = (7, 6, 5)
    vol = ImageVolume(np.zeros(shape_kji, np.int16), affine_from_geometry(origin, spacing, direction))
    img = sitk.GetImageFromArray(np.zeros(shape_kji, np.int16))
    img.SetOrigin(origin.tolist())
    img.SetSpacing(spacing.tolist())
    img.SetDirection(direction.ravel().tolist())
    assert img.GetSize() == vol.shape_ijk
    rng = np.random.default_rng(1)
    for ijk in rng.uniform(-1, 6, size=(20, 3)):
        expected = img.TransformContinuousIndexToPhysicalPoint(ijk.tolist())
        np.testing.assert_allclose(vol.index_to_world(ijk), expected, atol=1e-9)
        back = vol.world_to_index(vol.index_to_world(ijk))
        np.testing.assert_allclose(back, ijk, atol=1e-9)
    # array[k, j, i] is SimpleITK's voxel (i, j, k)
    arr = np.arange(np.prod(shape_kji), dtype=np.int16).reshape(shape_kji)
    img2 = sitk.GetImageFromArray(arr)
    assert img2.GetPixel(4, 2, 6) == arr[6, 2, 4]


def test_geometry_round_trip_and_properties() -> None:
    direction = DIRECTIONS["oblique"]
    affine = affine_from_geometry([1, 2, 3], [0.5, 0.6, 3.0], direction)
    origin, spacing, d = geometry_from_affine(affine)
    np.testing.assert_allclose(origin, [1, 2, 3])
    np.testing.assert_allclose(spacing, [0.5, 0.6, 3.0])
    np.testing.assert_allclose(d, direction, atol=1e-12)
    vol = ImageVolume(np.zeros((4, 3, 2)), affine)
    assert vol.is_orthogonal()
    assert vol.voxel_volume_ml == pytest.approx(0.5 * 0.6 * 3.0 / 1000)


def test_orientation_code_and_contains() -> None:
    vol = ImageVolume(np.zeros((3, 4, 5)), affine_from_geometry([0, 0, 0], [1, 1, 1],
                                                               np.diag([-1.0, -1.0, 1.0])))
    assert vol.orientation_code() == "RAS"
    assert vol.contains_world([[-4.4, -3.4, 2.4]])[0]
    assert not vol.contains_world([[-4.6, 0, 0]])[0]
    assert not vol.contains_world([[0.6, 0, 0]])[0]


def test_voxel_cell_extent() -> None:
    vol = ImageVolume(np.zeros((2, 2, 2)), np.diag([2.0, 2.0, 2.0, 1.0]))
    corners = vol.extent_lps()
    np.testing.assert_allclose(corners.min(axis=0), [-1, -1, -1])
    np.testing.assert_allclose(corners.max(axis=0), [3, 3, 3])


@pytest.mark.parametrize(
    "array, affine",
    [
        (np.zeros((2, 2)), np.eye(4)),
        (np.zeros((2, 2, 2)), np.zeros((4, 4))),
        (np.zeros((2, 2, 2)), np.eye(3)),
        (np.zeros((2, 2, 2)), np.full((4, 4), np.nan)),
    ],
)
def test_invalid_geometry_is_rejected(array: np.ndarray, affine: np.ndarray) -> None:
    with pytest.raises(GeometryError):
        ImageVolume(array, affine)


def test_zero_spacing_rejected() -> None:
    with pytest.raises(GeometryError, match="spacing"):
        affine_from_geometry([0, 0, 0], [1, 0, 1], np.eye(3))


def test_same_grid_and_with_array() -> None:
    a = ImageVolume(np.zeros((3, 3, 3)), np.eye(4))
    b = a.with_array(np.ones((3, 3, 3)))
    assert same_grid(a, b)
    c = ImageVolume(np.zeros((3, 3, 3)), affine_from_geometry([0.1, 0, 0], [1, 1, 1], np.eye(3)))
    assert not same_grid(a, c)
    with pytest.raises(GeometryError):
        a.with_array(np.zeros((2, 3, 3)))
