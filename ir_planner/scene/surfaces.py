"""Surface meshes of segmented structures, placed in LPS millimetres.

Every structure of a :class:`~ir_planner.core.labels.LabelMap` becomes a closed
triangle mesh: its voxels are cropped to their bounding box, meshed in *index
space* with VTK's surface nets (``vtkSurfaceNets3D``, smoothing built in), reduced
to a triangle budget with quadric decimation, and only then mapped to the world
through the grid's ``index_to_lps`` affine. VTK filters never see the grid's
direction matrix, so meshes land in the right place on flipped, oblique and even
sheared grids (contour filters of vtk 9.x ignore ``vtkImageData``'s direction).

Meshes are computed once per label map and options (:func:`mesh_labels` keeps a
cache keyed by the label map object), so re-planning, a changed margin or a
toggled visibility never re-meshes.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyvista as pv
from numpy.typing import NDArray
from scipy import ndimage as ndi
from vtkmodules.vtkFiltersCore import vtkQuadricClustering, vtkSurfaceNets3D

from ir_planner.core.catalog import Category
from ir_planner.core.errors import InputError
from ir_planner.core.labels import LabelMap, Structure
from ir_planner.core.progress import ProgressCallback, report
from ir_planner.core.volume import ImageVolume

__all__ = [
    "MeshOptions",
    "StructureMesh",
    "mesh_mask",
    "mesh_labels",
    "clear_mesh_cache",
    "index_to_lps_points",
    "mesh_volume_centroid",
]


@dataclass(frozen=True)
class MeshOptions:
    """How structures are meshed.

    Attributes
    ----------
    triangle_budget : int
        Total number of triangles for all structures together; each structure gets
        a share proportional to its raw surface (at least ``min_triangles``).
    min_triangles : int
        Smallest per-structure budget (tiny structures stay recognisable).
    smoothing_iterations : int
        Surface-nets smoothing iterations (0 = blocky voxel surface).
    relaxation : float
        Surface-nets smoothing relaxation factor (0–1).
    max_raw_factor : float
        When a structure's raw surface would exceed ``max_raw_factor`` × its budget,
        its mask is block-averaged (2×, 3×, …) before meshing, which is far cheaper
        than reducing a huge mesh.
    max_block_mm : float
        Largest block (mm) the mask may be averaged over: fine scans are meshed at
        about this resolution at least, coarse scans at full resolution.
    """

    triangle_budget: int = 200_000
    min_triangles: int = 200
    smoothing_iterations: int = 8
    relaxation: float = 0.3
    max_raw_factor: float = 3.0
    max_block_mm: float = 2.0

    def __post_init__(self) -> None:
        if self.triangle_budget < 100:
            raise InputError(f"triangle_budget must be ≥ 100; got {self.triangle_budget}")
        if self.min_triangles < 20:
            raise InputError(f"min_triangles must be ≥ 20; got {self.min_triangles}")
        if not 0.0 <= self.relaxation <= 1.0:
            raise InputError(f"relaxation must be between 0 and 1; got {self.relaxation}")
        if self.smoothing_iterations < 0:
            raise InputError("smoothing_iterations must be ≥ 0; got "
                             f"{self.smoothing_iterations}")


@dataclass
class StructureMesh:
    """The mesh of one structure (points in LPS mm) and how it was made."""

    structure: Structure
    mesh: pv.PolyData
    voxels: int
    raw_triangles: int
    downsample: int
    seconds: float

    @property
    def n_triangles(self) -> int:
        """Number of triangles of :attr:`mesh`."""
        return int(self.mesh.n_cells)


def index_to_lps_points(points_ijk: NDArray[np.floating[Any]],
                        grid: ImageVolume) -> NDArray[np.float64]:
    """Map continuous (i, j, k) points to LPS mm through ``grid.index_to_lps``."""
    return grid.index_to_world(points_ijk)


def mesh_volume_centroid(mesh: pv.PolyData) -> NDArray[np.float64]:
    """Centroid of the solid enclosed by a closed triangle mesh (divergence theorem).

    Independent of the mesh's point distribution, so it can be compared with the
    centroid of the voxels it was made from.
    """
    tri = mesh.triangulate()
    faces = np.asarray(tri.faces).reshape(-1, 4)[:, 1:]
    p = np.asarray(tri.points, dtype=float)
    a, b, c = p[faces[:, 0]], p[faces[:, 1]], p[faces[:, 2]]
    ref = p.mean(axis=0)
    a, b, c = a - ref, b - ref, c - ref
    vol6 = np.einsum("ij,ij->i", a, np.cross(b, c))
    total = vol6.sum()
    if abs(total) < 1e-12:
        raise InputError("mesh encloses no volume")
    return ref + ((a + b + c) * vol6[:, None]).sum(axis=0) / (4.0 * total)


def _surface_voxels(mask: NDArray[np.bool_]) -> int:
    """Number of voxel faces between the mask and its outside (raw mesh size ~ this)."""
    faces = 0
    for axis in range(3):
        pad = [(0, 0)] * 3
        pad[axis] = (1, 1)
        m = np.pad(mask, pad)
        faces += int(np.count_nonzero(np.diff(m.view(np.uint8), axis=axis)))
    return faces


def _block_mean(mask: NDArray[np.bool_], step: int) -> NDArray[np.float32]:
    """Mean of ``mask`` over blocks of step³ voxels (the grid padded with zeros)."""
    shape = [-(-s // step) * step for s in mask.shape]
    padded = np.zeros(shape, dtype=np.float32)
    padded[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    nk, nj, ni = (s // step for s in shape)
    return padded.reshape(nk, step, nj, step, ni, step).mean(axis=(1, 3, 5))


def _surface_nets(volume_kji: NDArray[np.uint8], options: MeshOptions) -> pv.PolyData:
    """Surface nets of label 1 of a (k, j, i) uint8 array; points in index units (i, j, k)."""
    nk, nj, ni = volume_kji.shape
    img = pv.ImageData(dimensions=(ni, nj, nk))
    img.point_data["labels"] = np.ascontiguousarray(volume_kji).ravel()
    nets = vtkSurfaceNets3D()
    nets.SetInputData(img)
    nets.SetInputArrayToProcess(0, 0, 0, 0, "labels")
    nets.SetLabel(0, 1)
    nets.SetBackgroundLabel(0)
    nets.SetOutputMeshTypeToTriangles()
    nets.SetSmoothing(options.smoothing_iterations > 0)
    nets.SetNumberOfIterations(max(1, options.smoothing_iterations))
    nets.SetRelaxationFactor(options.relaxation)
    nets.Update()
    out = pv.wrap(nets.GetOutput())
    out.clear_data()
    return out


def _decimate(mesh: pv.PolyData, target: int) -> pv.PolyData:
    """At most ``target`` triangles by quadric clustering (linear time; quadric
    decimation is 30–40× slower on software-only machines).

    The bin size is chosen from the surface area so that about ``target`` triangles
    remain, and grown until the budget holds.
    """
    if mesh.n_cells <= target:
        return mesh
    area = float(mesh.area)
    b = np.asarray(mesh.bounds, dtype=float).reshape(3, 2)
    size = np.maximum(b[:, 1] - b[:, 0], 1e-6)
    h = float(np.sqrt(2.0 * area / target)) * 1.15
    out = mesh
    for _ in range(12):
        divisions = np.maximum(2, np.ceil(size / h)).astype(int)
        qc = vtkQuadricClustering()
        qc.SetInputData(mesh)
        qc.SetAutoAdjustNumberOfDivisions(False)
        qc.SetNumberOfDivisions(*(int(d) for d in divisions))
        qc.Update()
        out = pv.wrap(qc.GetOutput())
        if 0 < out.n_cells <= target:
            break
        h *= 1.25
    return out


def mesh_mask(mask_kji: NDArray[np.bool_], grid: ImageVolume, *,
              triangle_budget: int = 5000, options: MeshOptions | None = None,
              ) -> tuple[pv.PolyData, int, int]:
    """Mesh a boolean mask on ``grid``: a closed surface with points in LPS mm.

    Parameters
    ----------
    mask_kji : numpy.ndarray of bool, shape ``grid.shape``
        The structure's voxels.
    grid : ImageVolume
        Its geometry.
    triangle_budget : int
        Most triangles the result may have.
    options : MeshOptions, optional
        Smoothing and down-sampling settings.

    Returns
    -------
    mesh : pyvista.PolyData
        Triangles with outward normals (``Normals`` point data), LPS mm; empty for an
        empty mask.
    raw_triangles : int
        Estimated size of the full-resolution surface (voxel faces).
    downsample : int
        Block size the mask was averaged over before meshing (1 = full resolution).
    """
    options = options or MeshOptions()
    mask = np.asarray(mask_kji, dtype=bool)
    if mask.shape != grid.shape:
        raise InputError(f"mask shape {mask.shape} differs from the grid {grid.shape}")
    objs = ndi.find_objects(mask.view(np.uint8))
    if not objs or objs[0] is None:
        return pv.PolyData(), 0, 1
    box = objs[0]
    return _mesh_local(mask[box], np.array([s.start for s in box]), grid, triangle_budget,
                       options)


def _mesh_local(local: NDArray[np.bool_], lo_kji: NDArray[np.int64], grid: ImageVolume,
                triangle_budget: int, options: MeshOptions) -> tuple[pv.PolyData, int, int]:
    """Mesh a cropped mask whose first voxel is ``lo_kji`` of ``grid``."""
    raw = 2 * _surface_voxels(local)  # two triangles per voxel face
    step = 1
    finest = float(grid.spacing_mm.min())
    while raw / (step * step) > options.max_raw_factor * triangle_budget and \
            min(local.shape) >= 4 * (step + 1) and \
            (step + 1) * finest <= options.max_block_mm:
        step += 1
    if step > 1:
        mean = _block_mean(local, step)
        vol = (mean >= 0.5).astype(np.uint8)
        if np.count_nonzero(vol) * step**3 < 0.7 * np.count_nonzero(local):
            # a thin structure (sheet, shell, small vessel) would lose voxels: keep
            # every block it touches rather than punch holes into it
            vol = (mean > 0).astype(np.uint8)
    else:
        vol = local.astype(np.uint8)
    vol = np.pad(vol, 1)
    surf = _surface_nets(vol, options)
    if surf.n_points == 0:
        return pv.PolyData(), raw, step
    surf = _decimate(surf, triangle_budget)
    # index space of the padded (maybe down-sampled) box -> full-grid (i, j, k)
    pts = np.asarray(surf.points, dtype=float) - 1.0
    pts = pts * step + (step - 1) / 2.0
    pts += lo_kji[::-1]
    world = grid.index_to_world(pts)
    faces = np.asarray(surf.faces)
    out = pv.PolyData(world, faces)
    if _signed_volume(out) < 0:
        # a mirroring grid (det < 0) reverses the winding: restore outward normals
        out = pv.PolyData(world, _flip_faces(faces))
    out = out.compute_normals(cell_normals=False, point_normals=True, consistent_normals=False,
                              auto_orient_normals=False, split_vertices=False)
    return out, raw, step


def _flip_faces(faces: NDArray[np.integer[Any]]) -> NDArray[np.integer[Any]]:
    f = faces.reshape(-1, 4).copy()
    f[:, [1, 3]] = f[:, [3, 1]]
    return f.ravel()


def _signed_volume(mesh: pv.PolyData) -> float:
    faces = np.asarray(mesh.faces).reshape(-1, 4)[:, 1:]
    p = np.asarray(mesh.points, dtype=float)
    if len(faces) == 0:
        return 0.0
    ref = p.mean(axis=0)
    a, b, c = p[faces[:, 0]] - ref, p[faces[:, 1]] - ref, p[faces[:, 2]] - ref
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


@dataclass
class _CacheEntry:
    meshes: dict[str, StructureMesh] = field(default_factory=dict)


_CACHE: "weakref.WeakKeyDictionary[LabelMap, dict[MeshOptions, _CacheEntry]]" = \
    weakref.WeakKeyDictionary()


def clear_mesh_cache() -> None:
    """Forget every cached mesh."""
    _CACHE.clear()


#: Share of the triangle budget per unit of surface, by category: translucent
#: envelopes (skin, fat, muscle) need less detail than vessels and targets.
_DETAIL: dict[Category, float] = {Category.BODY: 0.35, Category.MUSCLE: 0.5, Category.LUNG: 0.6}


def _budgets(labels: LabelMap, structures: list[Structure], boxes: dict[str, Any],
             options: MeshOptions) -> dict[str, int]:
    """Per-structure triangle budgets proportional to each structure's raw surface
    (weighted by category detail); their sum is at most the total budget."""
    sizes: dict[str, float] = {}
    for s in structures:
        box = boxes.get(s.name)
        if box is None:
            continue
        sub = labels.layers[s.layer][box] == s.label
        sizes[s.name] = float(_surface_voxels(sub)) * _DETAIL.get(s.category, 1.0)
    total = sum(sizes.values()) or 1.0
    floor = min(options.min_triangles, options.triangle_budget // max(1, len(sizes)))
    spare = max(options.triangle_budget - floor * len(sizes), 0)
    return {name: max(20, int(floor + spare * size / total)) for name, size in sizes.items()}


def _bounding_boxes(labels: LabelMap) -> dict[str, tuple[slice, slice, slice]]:
    """Bounding box (array slices) of every non-empty structure, one pass per layer."""
    boxes: dict[str, tuple[slice, slice, slice]] = {}
    for n, layer in enumerate(labels.layers):
        in_layer = [s for s in labels.structures if s.layer == n]
        if not in_layer:
            continue
        top = max(s.label for s in in_layer)
        lay = layer if layer.dtype.kind in "iu" else layer.astype(np.int64)
        objs = ndi.find_objects(lay, max_label=top)
        for s in in_layer:
            if s.label <= len(objs) and objs[s.label - 1] is not None:
                boxes[s.name] = objs[s.label - 1]
    return boxes


def mesh_labels(labels: LabelMap, *, options: MeshOptions | None = None,
                names: Iterable[str] | None = None,
                progress: ProgressCallback | None = None) -> dict[str, StructureMesh]:
    """Meshes of every non-empty structure of ``labels`` (points in LPS mm).

    Results are cached per label map object and options: a second call returns the
    same meshes without any work. Empty structures are left out.

    Parameters
    ----------
    labels : LabelMap
    options : MeshOptions, optional
    names : iterable of str, optional
        Only these structures (default: all).
    progress : ProgressCallback, optional

    Returns
    -------
    dict of str to StructureMesh
        In label-map order.

    Examples
    --------
    >>> meshes = mesh_labels(labels, options=MeshOptions(triangle_budget=50_000))  # doctest: +SKIP
    >>> meshes["liver"].mesh.n_cells <= 50_000                                  # doctest: +SKIP
    True
    """
    options = options or MeshOptions()
    wanted = None if names is None else set(names)
    if wanted is not None:
        unknown = wanted - set(labels.names)
        if unknown:
            raise InputError(f"no structure(s) {sorted(unknown)} in the label map; "
                             f"available: {', '.join(labels.names)}")
    per_map = _CACHE.setdefault(labels, {})
    entry = per_map.setdefault(options, _CacheEntry())
    structures = [s for s in labels.structures if wanted is None or s.name in wanted]
    missing = [s for s in structures if s.name not in entry.meshes]
    if missing:
        boxes = _bounding_boxes(labels)
        budgets = _budgets(labels, [s for s in labels.structures], boxes, options)
        for n, s in enumerate(missing):
            report(progress, n / len(missing), f"meshing {s.name}")
            box = boxes.get(s.name)
            if box is None:
                continue
            t0 = time.perf_counter()
            local = labels.layers[s.layer][box] == s.label
            lo = np.array([sl.start for sl in box])
            mesh, raw, step = _mesh_local(local, lo, labels.grid, budgets[s.name], options)
            entry.meshes[s.name] = StructureMesh(s, mesh, int(np.count_nonzero(local)), raw, step,
                                                 time.perf_counter() - t0)
        report(progress, 1.0, "meshing done")
    # structure attributes (colour, category) may have changed since meshing
    by_name = {s.name: s for s in labels.structures}
    out: dict[str, StructureMesh] = {}
    for s in structures:
        m = entry.meshes.get(s.name)
        if m is not None:
            m.structure = by_name[s.name]
            out[s.name] = m
    return out
