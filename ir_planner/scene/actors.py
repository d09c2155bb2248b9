"""Meshes of planning objects, in LPS mm: needle, markers, ablation zones, skin risk.

Each function builds a :class:`pyvista.PolyData` from core/planning objects; the
:class:`~ir_planner.scene.scene.PlanningScene` turns them into actors and updates
them in place when the plan changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyvista as pv
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from ir_planner.core.errors import GeometryError, InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume
from ir_planner.planning.ablation.zones import Zone
from ir_planner.scene.style import clearance_colors, risk_colors
from ir_planner.scene.surfaces import MeshOptions, mesh_mask

__all__ = [
    "needle_mesh",
    "clearance_profile",
    "marker_mesh",
    "zone_mesh",
    "margin_shell_mesh",
    "skin_risk_mesh",
    "slice_quad",
]


def _seg(entry_lps: ArrayLike, target_lps: ArrayLike) -> tuple[NDArray[np.float64],
                                                               NDArray[np.float64], float]:
    a = np.asarray(entry_lps, dtype=float).reshape(3)
    b = np.asarray(target_lps, dtype=float).reshape(3)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise InputError("needle entry and target must be finite LPS mm")
    length = float(np.linalg.norm(b - a))
    if length < 1e-6:
        raise GeometryError("needle entry and target coincide (zero-length needle)")
    return a, b, length


def clearance_profile(distance_fn: Any, entry_lps: ArrayLike, target_lps: ArrayLike, *,
                      samples: int = 24) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Positions (mm from entry) and clearance slack (mm) along a needle.

    ``distance_fn(a_lps, b_lps) -> float`` gives the smallest clearance slack
    (clearance − margin, mm) of the needle piece a → b to any forbidden structure
    (e.g. from the planning session). The needle is cut into ``samples`` pieces;
    each piece's value is assigned to its midpoint.
    """
    a, b, length = _seg(entry_lps, target_lps)
    if samples < 1:
        raise InputError(f"samples must be ≥ 1; got {samples}")
    t = np.linspace(0.0, 1.0, samples + 1)
    values = np.array([float(distance_fn(a + (b - a) * t0, a + (b - a) * t1))
                       for t0, t1 in zip(t[:-1], t[1:])])
    mids = (t[:-1] + t[1:]) / 2.0 * length
    return mids, values


def needle_mesh(entry_lps: ArrayLike, target_lps: ArrayLike, *, diameter_mm: float,
                slack_mm: ArrayLike | None = None, positions_mm: ArrayLike | None = None,
                caution_band_mm: float = 2.0, sides: int = 16, rings: int = 48
                ) -> pv.PolyData:
    """The needle as a capped tube of the gauge's outer diameter, entry → target.

    Parameters
    ----------
    entry_lps, target_lps : array_like (3,)
    diameter_mm : float
        Outer diameter of the needle (mm) — the tube is drawn at true size.
    slack_mm, positions_mm : array_like, optional
        Clearance slack (clearance − margin, mm) at positions along the needle (mm
        from the entry); the tube is coloured from it (red < 0 ≤ amber < band ≤
        green). Without them the tube is uniformly grey.
    caution_band_mm : float
    sides, rings : int
        Tessellation around and along the tube.

    Returns
    -------
    pyvista.PolyData
        With point data ``RGB`` (uint8, n × 3) and ``slack_mm``; ``field_data``
        ``length_mm``.
    """
    a, b, length = _seg(entry_lps, target_lps)
    if not diameter_mm > 0:
        raise InputError(f"needle diameter must be > 0 mm; got {diameter_mm}")
    d = (b - a) / length
    ref = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(d, ref)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    r = diameter_mm / 2.0
    s = np.linspace(0.0, length, rings + 1)
    ang = np.linspace(0.0, 2 * np.pi, sides, endpoint=False)
    circle = np.cos(ang)[:, None] * e1 + np.sin(ang)[:, None] * e2  # (sides, 3)
    ring_pts = a + s[:, None, None] * d + r * circle[None, :, :]  # (rings+1, sides, 3)
    pts = ring_pts.reshape(-1, 3)
    faces: list[NDArray[np.int64]] = []
    idx = np.arange((rings + 1) * sides).reshape(rings + 1, sides)
    nxt = np.roll(idx, -1, axis=1)
    quads = np.stack([idx[:-1], nxt[:-1], nxt[1:], idx[1:]], axis=-1).reshape(-1, 4)
    faces.append(np.hstack([np.full((len(quads), 1), 4), quads]).ravel())
    # caps: centre points at both ends
    n0 = len(pts)
    pts = np.vstack([pts, a, b])
    cap0 = np.stack([np.full(sides, n0), idx[0][::-1], np.roll(idx[0][::-1], -1)], axis=-1)
    cap1 = np.stack([np.full(sides, n0 + 1), idx[-1], np.roll(idx[-1], -1)], axis=-1)
    for cap in (cap0, cap1):
        faces.append(np.hstack([np.full((sides, 1), 3), cap]).ravel())
    mesh = pv.PolyData(pts, np.concatenate(faces))
    along = np.concatenate([np.repeat(s, sides), [0.0, length]])
    if slack_mm is not None:
        sl = np.asarray(slack_mm, dtype=float).reshape(-1)
        pos = (np.linspace(0, length, len(sl)) if positions_mm is None
               else np.asarray(positions_mm, dtype=float).reshape(-1))
        if len(pos) != len(sl):
            raise InputError("slack_mm and positions_mm differ in length")
        finite = np.where(np.isfinite(sl), sl, 1e6)
        point_slack = np.interp(along, pos, finite) if len(sl) > 1 else \
            np.full(len(along), finite[0])
    else:
        point_slack = np.full(len(along), np.inf)
    rgb = clearance_colors(point_slack, caution_band_mm=caution_band_mm)
    if slack_mm is None:
        rgb[:] = (0.75, 0.75, 0.78)
    mesh.point_data["RGB"] = (rgb * 255).astype(np.uint8)
    mesh.point_data["slack_mm"] = point_slack
    mesh.field_data["length_mm"] = np.array([length])
    return mesh


def marker_mesh(point_lps: ArrayLike, *, radius_mm: float = 2.5) -> pv.PolyData:
    """A sphere marker (target, entry) at an LPS point."""
    p = np.asarray(point_lps, dtype=float).reshape(3)
    if not np.all(np.isfinite(p)):
        raise InputError("marker position must be finite LPS mm")
    return pv.Sphere(radius=radius_mm, center=p, theta_resolution=16, phi_resolution=12)


def zone_mesh(zone: Zone, *, spacing_mm: float = 1.0, pad_mm: float = 2.0) -> pv.PolyData:
    """Surface of an ablation zone (signed distance 0), LPS mm."""
    lo, hi = zone.bounds_lps()
    lo = np.asarray(lo, float) - pad_mm
    hi = np.asarray(hi, float) + pad_mm
    n = np.ceil((hi - lo) / spacing_mm).astype(int) + 1
    if np.prod(n) > 8_000_000:
        raise InputError(f"ablation zone grid {n.tolist()} too large; use a coarser spacing")
    grid = pv.ImageData(dimensions=tuple(int(x) for x in n), spacing=(spacing_mm,) * 3,
                        origin=tuple(lo))
    sd = zone.signed_distance(np.asarray(grid.points), exact=False)
    grid.point_data["sd"] = np.asarray(sd, dtype=np.float32)
    # identity direction: the contour's points are LPS as they come out
    return grid.contour([0.0], scalars="sd").compute_normals(split_vertices=False)


def margin_shell_mesh(labels: LabelMap, name: str, margin_mm: float, *,
                      triangle_budget: int = 4000) -> pv.PolyData:
    """Surface of a structure grown by ``margin_mm`` (tumour + ablative margin), LPS mm.

    The growth is an exact Euclidean distance on the voxel grid (anisotropic
    spacing honoured), so the shell is where the zone must reach.
    """
    if margin_mm < 0:
        raise InputError(f"margin must be ≥ 0 mm; got {margin_mm}")
    grid = labels.grid
    mask = labels.mask(name)
    if not mask.any():
        raise InputError(f"structure {name!r} is empty; no margin shell")
    if not grid.is_orthogonal():
        raise GeometryError("margin shell on a sheared grid is not supported; resample first")
    sp = grid.spacing_mm
    pad = np.ceil(margin_mm / sp).astype(int) + 2  # (i, j, k)
    k, j, i = np.nonzero(mask)
    lo = np.maximum([k.min() - pad[2], j.min() - pad[1], i.min() - pad[0]], 0)
    hi = np.minimum([k.max() + pad[2] + 1, j.max() + pad[1] + 1, i.max() + pad[0] + 1],
                    grid.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    local = mask[box]
    dist = ndi.distance_transform_edt(~local, sampling=(sp[2], sp[1], sp[0]))
    grown = np.zeros(grid.shape, dtype=bool)
    grown[box] = dist <= margin_mm
    mesh, _, _ = mesh_mask(grown, grid, triangle_budget=triangle_budget,
                           options=MeshOptions(triangle_budget=max(triangle_budget, 100)))
    return mesh


def skin_risk_mesh(body_mask: NDArray[np.bool_], grid: ImageVolume,
                   skin_points_lps: NDArray[np.float64], risk: ArrayLike,
                   feasible: ArrayLike | None = None, *, triangle_budget: int = 30_000,
                   max_distance_mm: float = 6.0) -> pv.PolyData:
    """The skin (body outline surface) coloured by the search's risk map.

    Each surface point takes the risk of the nearest evaluated skin point (green =
    low risk, red = high, grey = infeasible or farther than ``max_distance_mm`` from
    any evaluated point).

    Returns
    -------
    pyvista.PolyData
        Point data ``RGB`` (uint8) and ``risk``.
    """
    pts = np.asarray(skin_points_lps, dtype=float).reshape(-1, 3)
    r = np.asarray(risk, dtype=float).reshape(-1)
    if len(pts) != len(r):
        raise InputError(f"{len(pts)} skin points but {len(r)} risk values")
    mesh, _, _ = mesh_mask(body_mask, grid, triangle_budget=triangle_budget,
                           options=MeshOptions(triangle_budget=max(triangle_budget, 100),
                                               smoothing_iterations=10))
    if mesh.n_points == 0 or len(pts) == 0:
        return mesh
    dist, nearest = cKDTree(pts).query(np.asarray(mesh.points), k=1)
    feas = None if feasible is None else np.asarray(feasible, dtype=bool).reshape(-1)[nearest]
    rgb = risk_colors(r[nearest], feas)
    far = dist > max_distance_mm
    rgb[far] = (0.55, 0.55, 0.58)
    mesh.point_data["RGB"] = (rgb * 255).astype(np.uint8)
    mesh.point_data["risk"] = np.where(far, np.nan, r[nearest])
    return mesh


def slice_quad(corners_lps: Sequence[ArrayLike]) -> pv.PolyData:
    """A textured quad through 4 corners (bottom-left, bottom-right, top-right, top-left)
    with texture coordinates so that a slice image's top row shows at the top."""
    pts = np.asarray(corners_lps, dtype=float).reshape(4, 3)
    quad = pv.PolyData(pts, np.array([4, 0, 1, 2, 3]))
    quad.active_texture_coordinates = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    return quad
