"""Structure surfaces: placement in LPS on any grid, triangle budgets, caching.

Oracles: the centroid of a structure's voxel centres mapped through the grid's own
``index_to_world`` (independent of VTK), and the exact volume enclosed by the
mesh (divergence theorem).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from ir_planner.core.errors import InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.scene.surfaces import (
    MeshOptions,
    clear_mesh_cache,
    mesh_labels,
    mesh_mask,
    mesh_volume_centroid,
)

SHAPE = (24, 30, 36)  # (k, j, i)

GRIDS = {
    "identity": np.eye(3),
    "flipped": np.diag([-1.0, 1.0, -1.0]),
    "mirrored": np.diag([1.0, -1.0, 1.0]),  # det < 0: a left-handed grid
    "oblique": Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix(),
}


def _grid(direction: np.ndarray) -> ImageVolume:
    return ImageVolume(np.zeros(SHAPE, np.int16),
                       affine_from_geometry([12.0, -30.0, 55.0], [0.9, 1.2, 2.5], direction))


def _asymmetric_mask() -> np.ndarray:
    """An off-centre ellipsoid with a bar sticking out: any flip or swap moves its centroid."""
    k, j, i = np.indices(SHAPE)
    m = ((i - 14) / 8.0) ** 2 + ((j - 12) / 6.0) ** 2 + ((k - 9) / 5.0) ** 2 <= 1
    m |= (i > 18) & (i < 32) & (j > 10) & (j < 15) & (k > 7) & (k < 12)
    return m


def _voxel_centroid_lps(mask: np.ndarray, grid: ImageVolume) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    return grid.index_to_world(np.c_[i, j, k].mean(axis=0))


@pytest.mark.parametrize("name", list(GRIDS))
def test_unsmoothed_mesh_encloses_exactly_the_voxels(name: str) -> None:
    """Without smoothing the mesh is the voxels' boundary: same centroid, same volume."""
    grid = _grid(GRIDS[name])
    mask = _asymmetric_mask()
    opts = MeshOptions(smoothing_iterations=0, triangle_budget=10**6)
    mesh, raw, step = mesh_mask(mask, grid, triangle_budget=10**6, options=opts)
    assert step == 1 and mesh.n_cells == raw
    centroid = mesh_volume_centroid(mesh)
    np.testing.assert_allclose(centroid, _voxel_centroid_lps(mask, grid), atol=1e-6)
    # surface nets of a binary mask cut every boundary voxel edge at its middle: the
    # enclosed volume is close to the voxel volume (corners are chamfered)
    volume = mesh.volume
    voxels = mask.sum() * grid.voxel_volume_ml * 1000.0
    assert 0.85 * voxels < volume < 1.02 * voxels


@pytest.mark.parametrize("name", list(GRIDS))
def test_smoothed_mesh_within_half_a_voxel(name: str) -> None:
    """The default (smoothed, reduced) mesh: centroid within half a voxel, normals outward."""
    grid = _grid(GRIDS[name])
    mask = _asymmetric_mask()
    mesh, raw, _ = mesh_mask(mask, grid, triangle_budget=1000)
    assert 0 < mesh.n_cells <= 1000 < raw
    err_ijk = grid.world_to_index(mesh_volume_centroid(mesh)) - \
        grid.world_to_index(_voxel_centroid_lps(mask, grid))
    assert np.all(np.abs(err_ijk) < 0.5), err_ijk
    # outward normals: moving a little along them leaves the solid
    pts = np.asarray(mesh.points)
    outward = pts + 1.0 * np.asarray(mesh.point_data["Normals"])
    inward = pts - 1.0 * np.asarray(mesh.point_data["Normals"])
    centre = _voxel_centroid_lps(mask, grid)
    assert np.mean(np.linalg.norm(outward - centre, axis=1) >
                   np.linalg.norm(inward - centre, axis=1)) > 0.9


def test_flip_moves_the_mesh_with_the_anatomy() -> None:
    """Same voxels on an identity and a flipped grid: the meshes are mirror images in LPS."""
    mask = _asymmetric_mask()
    a = mesh_volume_centroid(mesh_mask(mask, _grid(GRIDS["identity"]))[0])
    b = mesh_volume_centroid(mesh_mask(mask, _grid(GRIDS["flipped"]))[0])
    origin = np.array([12.0, -30.0, 55.0])
    np.testing.assert_allclose((b - origin)[[0, 2]], -(a - origin)[[0, 2]], atol=1e-6)
    np.testing.assert_allclose(b[1], a[1], atol=1e-6)


def test_sheared_grid_maps_through_the_affine() -> None:
    """A gantry-tilt style shear: VTK never sees it, the affine places the points."""
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[1, 2] = 0.7  # y shifts with slice index
    affine[:3, 3] = [-50, 20, 100]
    grid = ImageVolume(np.zeros(SHAPE), affine)
    mask = _asymmetric_mask()
    mesh, _, _ = mesh_mask(mask, grid, options=MeshOptions(smoothing_iterations=0),
                           triangle_budget=10**6)
    np.testing.assert_allclose(mesh_volume_centroid(mesh), _voxel_centroid_lps(mask, grid),
                               atol=1e-6)


def test_triangle_budget_and_cache() -> None:
    grid = _grid(GRIDS["oblique"])
    k, j, i = np.indices(SHAPE)
    lab = np.zeros(SHAPE, np.uint8)
    lab[((i - 10) ** 2 + (j - 15) ** 2 + (k - 12) ** 2) < 64] = 1
    lab[((i - 26) ** 2 + (j - 15) ** 2 + (k - 12) ** 2) < 25] = 2
    lab[0, 0, 0] = 3  # a one-voxel structure still gets a (tiny) surface
    labels = LabelMap.from_array(lab, grid, {1: "liver", 2: "aorta", 3: "nodule", 4: "empty"})
    clear_mesh_cache()
    opts = MeshOptions(triangle_budget=900, min_triangles=50)
    meshes = mesh_labels(labels, options=opts)
    assert set(meshes) == {"liver", "aorta", "nodule"}  # empty structure left out
    assert sum(m.n_triangles for m in meshes.values()) <= 900
    assert all(m.n_triangles > 0 for m in meshes.values())
    assert meshes["liver"].n_triangles > meshes["aorta"].n_triangles
    assert meshes["nodule"].voxels == 1
    again = mesh_labels(labels, options=opts)
    assert all(again[n].mesh is meshes[n].mesh for n in meshes)  # cached, not re-meshed
    other = mesh_labels(labels, options=MeshOptions(triangle_budget=5000))
    assert other["liver"].mesh is not meshes["liver"].mesh
    with pytest.raises(InputError, match="no structure"):
        mesh_labels(labels, names=["spleen"])


def test_large_structure_is_block_averaged_not_lost() -> None:
    """A fine grid and a small budget: the mask is meshed coarser, still in place."""
    shape = (60, 80, 80)
    grid = ImageVolume(np.zeros(shape), affine_from_geometry([0, 0, 0], [0.5, 0.5, 0.6],
                                                             np.diag([1.0, -1.0, -1.0])))
    k, j, i = np.indices(shape)
    mask = ((i - 40) / 30.0) ** 2 + ((j - 35) / 25.0) ** 2 + ((k - 30) / 20.0) ** 2 <= 1
    mesh, raw, step = mesh_mask(mask, grid, triangle_budget=2000)
    assert step > 1 and raw > 20_000 and mesh.n_cells <= 2000
    err = grid.world_to_index(mesh_volume_centroid(mesh)) - \
        grid.world_to_index(_voxel_centroid_lps(mask, grid))
    assert np.all(np.abs(err) < 0.5)


def test_real_ct_meshes_in_place(shared_data) -> None:  # type: ignore[no-untyped-def]
    """The real TotalSegmentator CT (stored RAS): every structure's unsmoothed mesh has
    its voxels' centroid; every smoothed vertex lies within 1.5 voxels of the
    structure's boundary."""
    from ir_planner.io.load import load_image
    from ir_planner.io.segmentation import load_labels

    root = shared_data / "totalseg-ct"
    image = load_image(root / "example_ct.nii.gz")
    labels = load_labels(root / "masks", image=image)
    assert image.orientation_code() != "LPS"  # the test is about a non-trivial layout
    exact = mesh_labels(labels, options=MeshOptions(smoothing_iterations=0,
                                                    triangle_budget=10**7))
    smooth = mesh_labels(labels, options=MeshOptions(triangle_budget=100_000))
    assert len(exact) >= 60 and set(exact) == set(smooth)
    assert sum(m.n_triangles for m in smooth.values()) <= 100_000
    for name, sm in exact.items():
        mask = labels.mask(name)
        np.testing.assert_allclose(mesh_volume_centroid(sm.mesh),
                                   _voxel_centroid_lps(mask, labels.grid), atol=1e-4,
                                   err_msg=name)
        # distance (voxels) of each smoothed vertex to the nearest boundary voxel face
        ijk = labels.grid.world_to_index(np.asarray(smooth[name].mesh.points))
        box = ndi.find_objects(mask.view(np.uint8))[0]
        lo = np.array([s.start for s in box]) - 3  # (k, j, i) of the padded crop
        local = np.pad(mask[box], 3)
        boundary = local ^ ndi.binary_erosion(local)
        dist = ndi.distance_transform_edt(~boundary)
        cell = np.rint(ijk[:, ::-1]).astype(int) - lo
        d = dist[cell[:, 0], cell[:, 1], cell[:, 2]]
        assert d.max() <= 1.5, (name, float(d.max()))
