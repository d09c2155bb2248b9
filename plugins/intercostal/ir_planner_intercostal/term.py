"""Avoid the intercostal neurovascular bundle: stay in the lower half of the rib space.

The intercostal vein, artery and nerve run in the costal groove along the *inferior*
border of each rib; a needle crossing a rib space should pass just above the rib below.
For every point of a candidate path that lies in a rib space (between two rib voxels
along the patient's cranio-caudal axis, LPS +z = head), the position in the space is

    f = d_below / (d_below + d_above)

(0 at the upper border of the rib below, 1 at the lower border of the rib above). The
risk term costs ``max(0, 2 f - 1)`` at the worst point of the path (0 in the lower half,
1 at the upper rib); the constraint rejects paths with ``f > 0.5`` anywhere.

Ribs are the structures named like TotalSegmentator's (``rib_left_5``, ``rib_right_12``)
or ``rib``/``ribs``. Without any, both are inactive (cost 0, everything allowed): the
search's own rules still keep the needle out of bone.
"""

from __future__ import annotations

import re

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ir_planner.core.labels import LabelMap
from ir_planner.planning.search_plugins import CandidatePaths

__all__ = ["IntercostalBundle", "LowerHalfOfRibSpace", "rib_space_position", "rib_mask"]

_RIB_NAME = re.compile(r"^(rib|ribs|rib_(left|right)_\d+)$", re.IGNORECASE)
#: A rib space is at most this high (mm); wider gaps are not a rib space.
MAX_SPACE_MM = 40.0
#: Points farther than this from every rib (mm) are not in a rib space.
MAX_DEPTH_MM = 15.0
PATH_STEP_MM = 1.0


def rib_mask(labels: LabelMap) -> NDArray[np.bool_] | None:
    """Union of the rib structures, or None when there are none."""
    ribs = [s for s in labels.structures if _RIB_NAME.match(s.name)]
    if not ribs:
        return None
    mask = np.zeros(labels.grid.shape, dtype=bool)
    for s in ribs:
        mask |= labels.mask(s)
    return mask if mask.any() else None


def rib_space_position(labels: LabelMap, points_lps: NDArray[np.float64]) -> NDArray[np.float64]:
    """Position ``f`` of each point in its rib space (NaN where not in a rib space).

    Parameters
    ----------
    labels : LabelMap
        With rib structures.
    points_lps : ndarray (p, 3)
        LPS mm.
    """
    pts = np.asarray(points_lps, dtype=float).reshape(-1, 3)
    out = np.full(len(pts), np.nan)
    ribs = rib_mask(labels)
    if ribs is None or not len(pts):
        return out
    grid = labels.grid
    shape = np.array(grid.shape)  # (k, j, i)
    # points near a rib (distance transform on the ribs' bounding box + margin)
    spacing_kji = grid.spacing_mm[::-1]
    lo_kji = np.maximum(np.min(np.nonzero(ribs), axis=1) -
                        np.ceil(MAX_DEPTH_MM / spacing_kji).astype(int), 0)
    hi_kji = np.minimum(np.max(np.nonzero(ribs), axis=1) +
                        np.ceil(MAX_DEPTH_MM / spacing_kji).astype(int) + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo_kji, hi_kji))
    dist = ndimage.distance_transform_edt(~ribs[box], sampling=spacing_kji)

    def lookup(world: NDArray[np.float64]) -> tuple[NDArray[np.bool_], NDArray[np.intp]]:
        ijk = np.rint(grid.world_to_index(world)).astype(np.intp)
        kji = ijk[:, ::-1]
        inside = np.all((kji >= 0) & (kji < shape), axis=1)
        return inside, np.where(inside[:, None], kji, 0)

    inside, kji = lookup(pts)
    in_box = inside & np.all((kji >= lo_kji) & (kji < hi_kji), axis=1)
    near = np.zeros(len(pts), dtype=bool)
    rel = kji[in_box] - lo_kji
    near[in_box] = dist[rel[:, 0], rel[:, 1], rel[:, 2]] <= MAX_DEPTH_MM
    near &= ~ribs[kji[:, 0], kji[:, 1], kji[:, 2]]
    idx = np.flatnonzero(near)
    if not len(idx):
        return out
    step = float(min(grid.spacing_mm)) / 2.0
    offsets = np.arange(step, MAX_SPACE_MM + step, step)
    found = {}
    for sign in (+1.0, -1.0):
        first = np.full(len(idx), np.inf)
        for s in offsets:  # nearest rib voxel straight up (+z) / down (-z)
            todo = ~np.isfinite(first)
            if not todo.any():
                break
            probe = pts[idx[todo]] + np.array([0.0, 0.0, sign * s])
            ok, pk = lookup(probe)
            hit = ok & ribs[pk[:, 0], pk[:, 1], pk[:, 2]]
            sel = np.flatnonzero(todo)[hit]
            first[sel] = s
        found[sign] = first
    up, down = found[+1.0], found[-1.0]
    space = np.isfinite(up) & np.isfinite(down) & (up + down <= MAX_SPACE_MM)
    out[idx[space]] = down[space] / (up[space] + down[space])
    return out


def _worst_position(paths: CandidatePaths) -> NDArray[np.float64]:
    """Highest rib-space position along each path (0 where it crosses no rib space)."""
    points, valid = paths.samples(PATH_STEP_MM)
    f = rib_space_position(paths.labels, points.reshape(-1, 3)).reshape(valid.shape)
    f = np.where(valid & np.isfinite(f), f, 0.0)
    return np.asarray(f.max(axis=1, initial=0.0))


class IntercostalBundle:
    """Risk term: 0 in the lower half of the rib space, rising to 1 at the upper rib."""

    title = "intercostal bundle"

    def evaluate(self, paths: CandidatePaths) -> NDArray[np.float64]:
        """Per-candidate cost in [0, 1]."""
        return np.clip(2.0 * _worst_position(paths) - 1.0, 0.0, 1.0)


class LowerHalfOfRibSpace:
    """Constraint: the path stays in the lower half of every rib space it crosses."""

    title = "lower half of the rib space"

    def allowed(self, paths: CandidatePaths) -> NDArray[np.bool_]:
        """True where the path never goes above the middle of a rib space."""
        return np.asarray(_worst_position(paths) <= 0.5)
