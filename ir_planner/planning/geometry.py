"""Exact geometry on voxel grids: grid frames, segment-to-box distances, cell traversal.

The planner measures distances to structures made of voxel *cells*. On a grid with
orthonormal direction cosines (any rotation or flip, no shear) LPS space and the
grid's "scaled index" space ``q = (i·sᵢ, j·sⱼ, k·sₖ)`` (mm) differ by a rigid
motion, so Euclidean distances are the same in both and every cell is an
axis-aligned box ``[(n−½)·s, (n+½)·s]`` per axis in q-space. All exact distance
computations happen there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ir_planner.core.errors import GeometryError
from ir_planner.core.volume import ImageVolume

__all__ = [
    "GridFrame",
    "point_segment_distance",
    "segment_box_distance",
    "point_box_distance",
    "traverse_cells",
]


@dataclass(frozen=True)
class GridFrame:
    """Rigid map between LPS mm and a grid's scaled-index space (mm).

    Attributes
    ----------
    rotation : ndarray (3, 3)
        Direction cosines (column c = world direction of index axis c).
    origin_lps : ndarray (3,)
        LPS position of voxel centre (0, 0, 0).
    spacing_mm : ndarray (3,)
        Spacing along i, j, k.
    shape_ijk : tuple of int
        Grid size (ni, nj, nk).
    """

    rotation: NDArray[np.float64]
    origin_lps: NDArray[np.float64]
    spacing_mm: NDArray[np.float64]
    shape_ijk: tuple[int, int, int]

    @classmethod
    def from_volume(cls, volume: ImageVolume) -> "GridFrame":
        """The frame of ``volume``; raises for sheared (non-orthogonal) grids."""
        if not volume.is_orthogonal(tol=1e-4):
            raise GeometryError(
                "not supported yet: planning on a sheared (non-orthogonal) grid; resample the "
                "image and labels onto an orthogonal grid first (e.g. the loader's tilt "
                "correction)"
            )
        return cls(volume.direction.copy(), volume.origin_lps, volume.spacing_mm.copy(),
                   volume.shape_ijk)

    @property
    def half_diagonal_mm(self) -> float:
        """Half the diagonal of one cell (largest centre-to-cell-point distance), mm."""
        return float(np.linalg.norm(self.spacing_mm) / 2.0)

    def lps_to_q(self, points_lps: ArrayLike) -> NDArray[np.float64]:
        """LPS mm → scaled-index mm."""
        p = np.asarray(points_lps, dtype=float)
        return (p - self.origin_lps) @ self.rotation

    def q_to_lps(self, points_q: ArrayLike) -> NDArray[np.float64]:
        """Scaled-index mm → LPS mm."""
        q = np.asarray(points_q, dtype=float)
        return q @ self.rotation.T + self.origin_lps

    def lps_to_index(self, points_lps: ArrayLike) -> NDArray[np.float64]:
        """LPS mm → continuous (i, j, k)."""
        return self.lps_to_q(points_lps) / self.spacing_mm


def point_segment_distance(points: ArrayLike, a: ArrayLike, b: ArrayLike
                           ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Distance from points (n, 3) to segment a→b and the segment parameter t ∈ [0, 1]."""
    p = np.asarray(points, dtype=float)
    a = np.asarray(a, dtype=float)
    d = np.asarray(b, dtype=float) - a
    dd = float(d @ d)
    t = np.zeros(len(p)) if dd == 0 else np.clip((p - a) @ d / dd, 0.0, 1.0)
    closest = a + t[:, None] * d
    return np.linalg.norm(p - closest, axis=1), t


def point_box_distance(points: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> NDArray[np.float64]:
    """Exact Euclidean distance from points to axis-aligned boxes (broadcasting)."""
    p = np.asarray(points, dtype=float)
    gap = np.maximum(np.maximum(np.asarray(lo) - p, p - np.asarray(hi)), 0.0)
    return np.sqrt(np.sum(gap * gap, axis=-1))


def segment_box_distance(a: ArrayLike, b: ArrayLike, lo: ArrayLike, hi: ArrayLike
                         ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Exact distance from segment(s) a→b to axis-aligned box(es) [lo, hi].

    ``f(t) = dist(a + t(b−a), box)²`` is convex and piecewise quadratic in t with
    breakpoints where a coordinate crosses a box face; the minimum lies at a
    breakpoint or at the stationary point of one quadratic piece, all of which are
    evaluated. Shapes broadcast: a, b (..., 3); lo, hi (..., 3).

    Returns
    -------
    distance_mm, t : ndarray
        Distance and the segment parameter of the closest point.
    """
    a = np.asarray(a, dtype=float)
    d = np.asarray(b, dtype=float) - a
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    shape = np.broadcast_shapes(a.shape, d.shape, lo.shape, hi.shape)
    a, d, lo, hi = (np.broadcast_to(x, shape) for x in (a, d, lo, hi))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_lo = (lo - a) / d
        t_hi = (hi - a) / d
    bps = np.concatenate([np.zeros(shape[:-1] + (1,)), np.ones(shape[:-1] + (1,)),
                          t_lo, t_hi], axis=-1)
    bps = np.where(np.isfinite(bps), np.clip(bps, 0.0, 1.0), 0.0)
    bps.sort(axis=-1)

    def f(t: NDArray[np.float64]) -> NDArray[np.float64]:
        p = a[..., None, :] + t[..., :, None] * d[..., None, :]
        gap = np.maximum(np.maximum(lo[..., None, :] - p, p - hi[..., None, :]), 0.0)
        return np.sum(gap * gap, axis=-1)

    mid = 0.5 * (bps[..., 1:] + bps[..., :-1])
    pm = a[..., None, :] + mid[..., :, None] * d[..., None, :]
    below = pm < lo[..., None, :]
    above = pm > hi[..., None, :]
    c = np.where(below, lo[..., None, :] - a[..., None, :],
                 np.where(above, hi[..., None, :] - a[..., None, :], 0.0))
    active = below | above
    dn = np.where(active, d[..., None, :], 0.0)
    num = np.sum(dn * c, axis=-1)
    den = np.sum(dn * dn, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_star = np.where(den > 0, num / den, mid)
    t_star = np.clip(t_star, bps[..., :-1], bps[..., 1:])
    ts = np.concatenate([bps, t_star], axis=-1)
    vals = f(ts)
    best = np.argmin(vals, axis=-1)
    dist2 = np.take_along_axis(vals, best[..., None], axis=-1)[..., 0]
    t_best = np.take_along_axis(ts, best[..., None], axis=-1)[..., 0]
    return np.sqrt(np.maximum(dist2, 0.0)), t_best


def traverse_cells(u0: ArrayLike, u1: ArrayLike, shape_ijk: tuple[int, int, int]
                   ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Cells crossed by the segment u0→u1 in continuous index space (exact).

    Cells are ``[n−½, n+½]`` per axis. Returns the (i, j, k) of every cell the
    segment passes through with positive length, in order, with the entry and
    exit parameters t ∈ [0, 1]. Cells outside the grid get index −1 rows.

    Returns
    -------
    cells : ndarray (m, 3) int
    t_in, t_out : ndarray (m,)
    """
    u0 = np.asarray(u0, dtype=float)
    du = np.asarray(u1, dtype=float) - u0
    ts = [np.array([0.0, 1.0])]
    for ax in range(3):
        if abs(du[ax]) < 1e-12:
            continue
        lo_v, hi_v = sorted((u0[ax], u0[ax] + du[ax]))
        planes = np.arange(np.ceil(lo_v - 0.5), np.floor(hi_v - 0.5) + 1) + 0.5
        ts.append((planes - u0[ax]) / du[ax])
    t = np.unique(np.clip(np.concatenate(ts), 0.0, 1.0))
    if len(t) < 2:
        t = np.array([0.0, 1.0])
    t_in, t_out = t[:-1], t[1:]
    keep = t_out - t_in > 1e-12
    t_in, t_out = t_in[keep], t_out[keep]
    mid = 0.5 * (t_in + t_out)
    cells = np.floor(u0 + mid[:, None] * du + 0.5).astype(np.int64)
    outside = np.any((cells < 0) | (cells >= np.asarray(shape_ijk)), axis=1)
    cells[outside] = -1
    return cells, t_in, t_out
