"""Exact per-structure distances of many paths to one target (compiled branch and bound).

The distance from a segment to a structure (the union of its cells) is the minimum of
the exact segment-to-cell-box distances over its *surface cells* (labelled cells with
a 6-neighbour outside the structure or outside the grid): a segment that reaches an
interior cell from outside crosses a surface cell first; a segment with an endpoint in
a structure cell is at distance 0 (checked directly).

Surface cells are grouped in a two-level hierarchy per structure: blocks of 8×8×8
voxels and super-blocks of 32×32×32 voxels, each with the tight box of its cells. A
query visits super-blocks and blocks in order of a cheap lower bound (distance from
the box centre minus its half diagonal), takes the exact segment-to-box distance (a
lower bound of every cell inside) of those it reaches, and stops once every bound
left is ≥ the best distance found minus ``tol_mm``: with ``tol_mm = 0`` the result is
the exact distance (float64 arithmetic, stored as float32). Compiled with numba,
parallel over segments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from ir_planner.planning.tube import seg_box_dist

__all__ = ["SurfaceIndex", "build_surface_index", "structure_distances"]

#: log2 of the block / super-block edge (voxels).
_L1 = 3
_L2 = 5


@dataclass(frozen=True)
class SurfaceIndex:
    """Surface cells of every structure, grouped for branch and bound (q-space mm)."""

    n_struct: int
    cells: NDArray[np.float64]       # (n_cells, 3) cell centres (q-space mm)
    b1_box: NDArray[np.float64]      # (n_b1, 6) lo xyz, hi xyz
    b1_start: NDArray[np.int64]      # (n_b1 + 1,) cell ranges
    b2_box: NDArray[np.float64]      # (n_b2, 6)
    b2_start: NDArray[np.int64]      # (n_b2 + 1,) block ranges
    s_start: NDArray[np.int64]       # (n_struct + 1,) super-block ranges
    spacing_mm: NDArray[np.float64]


@njit(cache=True, parallel=True)
def _surface_kernel(layer: NDArray, lut: NDArray[np.int16]) -> NDArray[np.int8]:
    """Per voxel: 1 where the voxel is a surface cell of its structure (lut ≥ 0)."""
    nk, nj, ni = layer.shape
    out = np.zeros((nk, nj, ni), dtype=np.int8)
    n_lut = lut.shape[0]
    for k in prange(nk):
        for j in range(nj):
            for i in range(ni):
                lab = layer[k, j, i]
                if lab == 0 or lab >= n_lut or lut[lab] < 0:
                    continue
                if (k == 0 or k == nk - 1 or j == 0 or j == nj - 1 or i == 0 or i == ni - 1
                        or layer[k - 1, j, i] != lab or layer[k + 1, j, i] != lab
                        or layer[k, j - 1, i] != lab or layer[k, j + 1, i] != lab
                        or layer[k, j, i - 1] != lab or layer[k, j, i + 1] != lab):
                    out[k, j, i] = 1
    return out


def build_surface_index(layers: list[NDArray[np.integer]], luts: NDArray[np.int16],
                        n_struct: int, spacing_mm: NDArray[np.float64]) -> SurfaceIndex:
    """Group the surface cells of structures ``0..n_struct−1`` (``luts``: label value of
    each layer → structure index, −1 = ignored) for :func:`structure_distances`."""
    sp = np.asarray(spacing_mm, dtype=np.float64)
    keys = []
    ijks = []
    for li, layer in enumerate(layers):
        lut = np.ascontiguousarray(luts[li], dtype=np.int16)
        surf = _surface_kernel(np.ascontiguousarray(layer), lut)
        k, j, i = np.nonzero(surf)
        if not len(k):
            continue
        s = lut[layer[k, j, i]].astype(np.int64)
        ijk = np.stack([i, j, k], axis=1).astype(np.int64)
        b2 = ijk >> _L2
        b1 = (ijk >> _L1) & ((1 << (_L2 - _L1)) - 1)
        n2 = (np.asarray(layer.shape[::-1]) >> _L2) + 1
        key2 = (b2[:, 2] * n2[1] + b2[:, 1]) * n2[0] + b2[:, 0]
        key1 = (b1[:, 2] * 4 + b1[:, 1]) * 4 + b1[:, 0]
        keys.append((s * int(np.prod(n2)) + key2) * 64 + key1)
        ijks.append(ijk)
    if keys:
        key = np.concatenate(keys)
        ijk = np.concatenate(ijks)
        order = np.argsort(key, kind="stable")
        key = key[order]
        ijk = ijk[order]
    else:
        key = np.zeros(0, dtype=np.int64)
        ijk = np.zeros((0, 3), dtype=np.int64)
    cells = ijk * sp
    half = 0.5 * sp
    # blocks (level 1)
    new1 = np.ones(len(key), dtype=bool)
    new1[1:] = key[1:] != key[:-1]
    b1_first = np.flatnonzero(new1)
    b1_start = np.append(b1_first, len(key)).astype(np.int64)
    if len(key):
        lo1 = np.minimum.reduceat(cells, b1_first, axis=0) - half
        hi1 = np.maximum.reduceat(cells, b1_first, axis=0) + half
    else:
        lo1 = hi1 = np.zeros((0, 3))
    key1 = key[b1_first] if len(key) else key
    # super-blocks (level 2)
    key2 = key1 // 64
    new2 = np.ones(len(key2), dtype=bool)
    new2[1:] = key2[1:] != key2[:-1]
    b2_first = np.flatnonzero(new2)
    b2_start = np.append(b2_first, len(key2)).astype(np.int64)
    if len(key2):
        lo2 = np.minimum.reduceat(lo1, b2_first, axis=0)
        hi2 = np.maximum.reduceat(hi1, b2_first, axis=0)
    else:
        lo2 = hi2 = np.zeros((0, 3))
    n2 = max((int(np.prod((np.asarray(lay.shape[::-1]) >> _L2) + 1)) for lay in layers),
             default=1)
    s_of_b2 = key2[b2_first] // n2 if len(key2) else key2
    s_start = np.searchsorted(s_of_b2, np.arange(n_struct + 1)).astype(np.int64)
    return SurfaceIndex(
        n_struct=int(n_struct), cells=np.ascontiguousarray(cells, dtype=np.float64),
        b1_box=np.ascontiguousarray(np.hstack([lo1, hi1]), dtype=np.float64),
        b1_start=b1_start,
        b2_box=np.ascontiguousarray(np.hstack([lo2, hi2]), dtype=np.float64),
        b2_start=b2_start, s_start=s_start, spacing_mm=sp)


@njit(cache=True, inline="always")
def _pt_seg(cx: float, cy: float, cz: float, a: NDArray[np.float64],
            d: NDArray[np.float64], dd: float) -> float:
    """Distance from point c to the segment a + t·d, t ∈ [0, 1]."""
    tt = 0.0
    if dd > 0.0:
        tt = ((cx - a[0]) * d[0] + (cy - a[1]) * d[1] + (cz - a[2]) * d[2]) / dd
        tt = min(max(tt, 0.0), 1.0)
    ex = cx - a[0] - tt * d[0]
    ey = cy - a[1] - tt * d[1]
    ez = cz - a[2] - tt * d[2]
    return math.sqrt(ex * ex + ey * ey + ez * ez)


@njit(cache=True, parallel=True)
def _query_kernel(a_q: NDArray[np.float64], b_q: NDArray[np.float64],
                  cells: NDArray[np.float64], b1_box: NDArray[np.float64],
                  b1_start: NDArray[np.int64], b2_box: NDArray[np.float64],
                  b2_start: NDArray[np.int64], s_start: NDArray[np.int64],
                  sp: NDArray[np.float64], zero: NDArray[np.bool_], want: NDArray[np.bool_],
                  tol: float) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    n = a_q.shape[0]
    n_struct = s_start.shape[0] - 1
    out_lo = np.zeros((n, n_struct), dtype=np.float32)
    out_hi = np.zeros((n, n_struct), dtype=np.float32)
    max_b2 = 1
    for s in range(n_struct):
        max_b2 = max(max_b2, s_start[s + 1] - s_start[s])
    half = np.empty(3)
    for ax in range(3):
        half[ax] = 0.5 * sp[ax]
    r_cell = math.sqrt(half[0] * half[0] + half[1] * half[1] + half[2] * half[2])
    for c in prange(n):
        a = a_q[c].copy()
        d = b_q - a
        dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        lo = np.empty(3)
        hi = np.empty(3)
        scratch = np.empty(8)
        lb2 = np.empty(max_b2)
        lb1 = np.empty(64)
        for s in range(n_struct):
            if not want[s]:
                out_lo[c, s] = np.nan
                out_hi[c, s] = np.nan
                continue
            if zero[c, s]:
                continue
            s0 = s_start[s]
            nb2 = s_start[s + 1] - s0
            if nb2 == 0:
                out_lo[c, s] = np.inf
                out_hi[c, s] = np.inf
                continue
            # cheap lower bound of each super-block: centre distance − half diagonal
            for q in range(nb2):
                g = s0 + q
                hx = 0.5 * (b2_box[g, 3] - b2_box[g, 0])
                hy = 0.5 * (b2_box[g, 4] - b2_box[g, 1])
                hz = 0.5 * (b2_box[g, 5] - b2_box[g, 2])
                lb2[q] = _pt_seg(b2_box[g, 0] + hx, b2_box[g, 1] + hy, b2_box[g, 2] + hz,
                                 a, d, dd) - math.sqrt(hx * hx + hy * hy + hz * hz)
            order2 = np.argsort(lb2[:nb2])
            best = np.inf
            low = np.inf  # smallest lower bound of anything pruned
            for q2 in range(nb2):
                u = order2[q2]
                if lb2[u] >= best - tol:
                    low = min(low, lb2[u])
                    break
                g = s0 + u
                for ax in range(3):
                    lo[ax] = b2_box[g, ax]
                    hi[ax] = b2_box[g, 3 + ax]
                bx = seg_box_dist(a, d, lo, hi, scratch)
                if bx >= best - tol:
                    low = min(low, bx)
                    continue
                f0 = b2_start[g]
                nb1 = b2_start[g + 1] - f0
                # cheap lower bound of each block (centre distance − half diagonal) for
                # the order; the exact box distance only for the blocks reached
                for q in range(nb1):
                    g1 = f0 + q
                    hx = 0.5 * (b1_box[g1, 3] - b1_box[g1, 0])
                    hy = 0.5 * (b1_box[g1, 4] - b1_box[g1, 1])
                    hz = 0.5 * (b1_box[g1, 5] - b1_box[g1, 2])
                    lb1[q] = _pt_seg(b1_box[g1, 0] + hx, b1_box[g1, 1] + hy,
                                     b1_box[g1, 2] + hz, a, d, dd) - math.sqrt(
                                         hx * hx + hy * hy + hz * hz)
                order1 = np.argsort(lb1[:nb1])
                for q1 in range(nb1):
                    v = order1[q1]
                    if lb1[v] >= best - tol:
                        low = min(low, lb1[v])
                        break
                    blk = f0 + v
                    for ax in range(3):
                        lo[ax] = b1_box[blk, ax]
                        hi[ax] = b1_box[blk, 3 + ax]
                    bx1 = seg_box_dist(a, d, lo, hi, scratch)
                    if bx1 >= best - tol:
                        low = min(low, bx1)
                        continue
                    for e in range(b1_start[blk], b1_start[blk + 1]):
                        cx = cells[e, 0]
                        cy = cells[e, 1]
                        cz = cells[e, 2]
                        cd = _pt_seg(cx, cy, cz, a, d, dd)
                        if cd - r_cell >= best - tol:
                            low = min(low, cd - r_cell)
                            continue
                        lo[0] = cx - half[0]
                        lo[1] = cy - half[1]
                        lo[2] = cz - half[2]
                        hi[0] = cx + half[0]
                        hi[1] = cy + half[1]
                        hi[2] = cz + half[2]
                        val = seg_box_dist(a, d, lo, hi, scratch)
                        if val < best:
                            best = val
            out_lo[c, s] = max(min(low, best), 0.0)
            out_hi[c, s] = best
    return out_lo, out_hi


def structure_distances(index: SurfaceIndex, a_q: NDArray[np.float64],
                        b_q: NDArray[np.float64], *, zero: NDArray[np.bool_] | None = None,
                        want: NDArray[np.bool_] | None = None, tol_mm: float = 0.0
                        ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Guaranteed bounds (mm) of the distance from segments ``a_q[n] → b_q`` to structures.

    Parameters
    ----------
    index : SurfaceIndex
        From :func:`build_surface_index`.
    a_q : ndarray (n, 3)
        Segment starts (q-space mm: index × spacing).
    b_q : ndarray (3,)
        Common segment end (q-space mm).
    zero : ndarray (n, n_struct) bool, optional
        Pairs known to be at distance 0 (an endpoint inside a cell of the structure).
        Endpoints inside *interior* cells must be flagged here: only surface cells are
        searched.
    want : ndarray (n_struct,) bool, optional
        Structures to compute (others get NaN); default all.
    tol_mm : float
        Allowed width of the bounds: the search stops refining once everything not
        visited is at least ``upper − tol_mm`` away. 0 = exact.

    Returns
    -------
    lower, upper : ndarray (n, n_struct) float32
        ``lower ≤ distance ≤ upper`` and ``upper − lower ≤ tol_mm`` (up to float32
        rounding); ``upper`` is the exact distance to one of the structure's cells.
        ``inf`` for an empty structure.
    """
    a_q = np.ascontiguousarray(a_q, dtype=np.float64).reshape(-1, 3)
    b_q = np.ascontiguousarray(b_q, dtype=np.float64).reshape(3)
    if zero is None:
        zero = np.zeros((len(a_q), index.n_struct), dtype=bool)
    if want is None:
        want = np.ones(index.n_struct, dtype=bool)
    lo, hi = _query_kernel(a_q, b_q, index.cells, index.b1_box, index.b1_start, index.b2_box,
                           index.b2_start, index.s_start, index.spacing_mm,
                           np.ascontiguousarray(zero, dtype=np.bool_),
                           np.ascontiguousarray(want, dtype=np.bool_), float(max(tol_mm, 0.0)))
    return lo, hi
