"""Conversions between :class:`ImageVolume` and PyVista/VTK image data.

``vtkImageData`` stores points in x-fastest order, i.e. the (k, j, i) array
flattened in C order; its direction matrix is set, but many VTK filters ignore
it (contour/flying edges with vtk 9.7), so :func:`map_points_to_lps` exists to
place filter output correctly.
"""

from __future__ import annotations

import numpy as np
import pyvista as pv

from ir_planner.core.errors import GeometryError
from ir_planner.core.volume import ImageVolume, affine_from_geometry, geometry_from_affine

__all__ = ["to_pyvista", "from_pyvista", "map_points_to_lps", "contour_surface_lps"]


def to_pyvista(volume: ImageVolume, array: np.ndarray | None = None,
               name: str = "values") -> pv.ImageData:
    """A ``pyvista.ImageData`` with origin, spacing and direction matrix of ``volume``."""
    if not volume.is_orthogonal():
        raise GeometryError("cannot convert a sheared volume to vtkImageData")
    origin, spacing, direction = geometry_from_affine(volume.index_to_lps)
    data = volume.array if array is None else np.asarray(array)
    grid = pv.ImageData(dimensions=volume.shape_ijk, spacing=tuple(spacing),
                        origin=tuple(origin))
    grid.direction_matrix = direction
    grid.point_data[name] = np.ascontiguousarray(data).ravel(order="C")
    return grid


def from_pyvista(grid: pv.ImageData, name: str | None = None) -> ImageVolume:
    """An :class:`ImageVolume` from ``pyvista.ImageData`` (direction matrix kept)."""
    ni, nj, nk = grid.dimensions
    key = name or grid.point_data.active_scalars_name or grid.point_data.keys()[0]
    array = np.asarray(grid.point_data[key]).reshape((nk, nj, ni))
    affine = affine_from_geometry(grid.origin, grid.spacing, np.asarray(grid.direction_matrix))
    return ImageVolume(array.copy(), affine)


def map_points_to_lps(points_ignoring_direction: np.ndarray, volume: ImageVolume) -> np.ndarray:
    """Fix points produced by a VTK filter that ignored the direction matrix.

    Such filters output ``origin + spacing·index`` (axis-aligned); this maps them
    to ``origin + Direction·spacing·index``.
    """
    origin, spacing, _ = geometry_from_affine(volume.index_to_lps)
    ijk = (np.asarray(points_ignoring_direction, dtype=float) - origin) / spacing
    return volume.index_to_world(ijk)


def contour_surface_lps(volume: ImageVolume, array: np.ndarray, level: float = 0.5) -> pv.PolyData:
    """Iso-surface of ``array`` (on ``volume``'s grid) with points in LPS mm.

    The contour runs on an axis-aligned copy of the grid (identity direction), and
    its points are then mapped through the real direction, so the result is right
    whether or not the installed VTK honours the direction matrix.
    """
    origin, spacing, _ = geometry_from_affine(volume.index_to_lps)
    grid = pv.ImageData(dimensions=volume.shape_ijk, spacing=tuple(spacing), origin=tuple(origin))
    grid.point_data["values"] = np.ascontiguousarray(np.asarray(array, dtype=np.float32)).ravel()
    surf = grid.contour([level], scalars="values")
    if surf.n_points:
        surf.points = map_points_to_lps(np.asarray(surf.points), volume)
    return surf
