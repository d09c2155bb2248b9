"""Exact per-structure distances of many paths to one target (compiled branch and bound).

The distance from a segment to a structure (the union of its cells) is the minimum of
the exact segment-to-cell-box distances over its *surface cells* (labelled cells with
a 6-neighbour outside the structure or outside the grid): a segment that reaches an
interior cell from outside crosses a surface cell first; a segment with an endpoint in
a structure cell is at distance 0 (checked directly).

Surface cells are grouped in a three-level hierarchy per structure: blocks of 4×4×4
voxels, super-blocks of 16³ and mega-blocks of 64³ voxels, each with the tight box of
its cells. Segments are processed in Z-order of their start point (Morton code on a
4 mm grid), in chunks of 256 (one per parallel task); within a chunk each segment is
warm-started from its predecessor's closest cell of every structure: the exact
distance to that cell is an upper bound, usually tight already, so almost every box
is pruned by its cheap lower bound (distance from the box centre minus its half
diagonal) and the boxes are visited in storage order. A cold start (first segment
of a chunk, or no previous cell) visits boxes nearest-first. Boxes that are reached get
the exact segment-to-box distance (a lower bound of every cell inside); the search
stops once every bound left is ≥ the best distance found minus ``tol_mm``: with
``tol_mm = 0`` the result is the exact distance (float64 arithmetic, stored as
float32). Compiled with numba, parallel over chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from ir_planner.planning.tube import seg_box_dist

__all__ = ["SurfaceIndex", "build_surface_index", "structure_distances"]

#: log2 of the block / super-block / mega-block edge (voxels): 4³, 16³, 64³.
_L1 = 2
_L2 = 4
_L3 = 6


@dataclass(frozen=True)
class SurfaceIndex:
    """Surface cells of every structure, grouped for branch and bound (q-space mm)."""

    n_struct: int
    cells: NDArray[np.float64]       # (n_cells, 3) cell centres (q-space mm)
    b1_box: NDArray[np.float64]      # (n_b1, 6) lo xyz, hi xyz
    b1_start: NDArray[np.int64]      # (n_b1 + 1,) cell ranges
    b2_box: NDArray[np.float64]      # (n_b2, 6)
    b2_start: NDArray[np.int64]      # (n_b2 + 1,) block ranges
    b3_box: NDArray[np.float64]      # (n_b3, 6)
    b3_start: NDArray[np.int64]      # (n_b3 + 1,) super-block ranges
    s_start: NDArray[np.int64]       # (n_struct + 1,) mega-block ranges
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


def _group(key: NDArray[np.int64], lo: NDArray[np.float64], hi: NDArray[np.float64]
           ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64],
                      NDArray[np.float64]]:
    """Runs of equal (sorted) ``key``: first index of each run, ranges, and the boxes
    enclosing the members' boxes."""
    new = np.ones(len(key), dtype=bool)
    new[1:] = key[1:] != key[:-1]
    first = np.flatnonzero(new)
    start = np.append(first, len(key)).astype(np.int64)
    if len(key):
        return first, start, np.minimum.reduceat(lo, first, axis=0), np.maximum.reduceat(
            hi, first, axis=0)
    return first, start, np.zeros((0, 3)), np.zeros((0, 3))


def build_surface_index(layers: list[NDArray[np.integer]], luts: NDArray[np.int16],
                        n_struct: int, spacing_mm: NDArray[np.float64]) -> SurfaceIndex:
    """Group the surface cells of structures ``0..n_struct−1`` (``luts``: label value of
    each layer → structure index, −1 = ignored) for :func:`structure_distances`."""
    sp = np.asarray(spacing_mm, dtype=np.float64)
    keys = []
    ijks = []
    n3 = ((np.asarray(layers[0].shape[::-1]) >> _L3) + 1) if layers else np.ones(3, np.int64)
    n3_all = int(np.prod(n3))
    for li, layer in enumerate(layers):
        lut = np.ascontiguousarray(luts[li], dtype=np.int16)
        surf = _surface_kernel(np.ascontiguousarray(layer), lut)
        k, j, i = np.nonzero(surf)
        if not len(k):
            continue
        s = lut[layer[k, j, i]].astype(np.int64)
        ijk = np.stack([i, j, k], axis=1).astype(np.int64)
        b3 = ijk >> _L3
        b2 = (ijk >> _L2) & ((1 << (_L3 - _L2)) - 1)
        b1 = (ijk >> _L1) & ((1 << (_L2 - _L1)) - 1)
        key3 = (b3[:, 2] * n3[1] + b3[:, 1]) * n3[0] + b3[:, 0]
        key2 = (b2[:, 2] * 4 + b2[:, 1]) * 4 + b2[:, 0]
        key1 = (b1[:, 2] * 4 + b1[:, 1]) * 4 + b1[:, 0]
        keys.append(((s * n3_all + key3) * 64 + key2) * 64 + key1)
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
    b1_first, b1_start, lo1, hi1 = _group(key, cells - half, cells + half)
    k2 = key[b1_first] // 64
    b2_first, b2_start, lo2, hi2 = _group(k2, lo1, hi1)
    k3 = k2[b2_first] // 64
    b3_first, b3_start, lo3, hi3 = _group(k3, lo2, hi2)
    s_of_b3 = k3[b3_first] // n3_all
    s_start = np.searchsorted(s_of_b3, np.arange(n_struct + 1)).astype(np.int64)

    def box(lo: NDArray[np.float64], hi: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.ascontiguousarray(np.hstack([lo, hi]), dtype=np.float64)

    return SurfaceIndex(
        n_struct=int(n_struct), cells=np.ascontiguousarray(cells, dtype=np.float64),
        b1_box=box(lo1, hi1), b1_start=b1_start, b2_box=box(lo2, hi2), b2_start=b2_start,
        b3_box=box(lo3, hi3), b3_start=b3_start, s_start=s_start, spacing_mm=sp)


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


@njit(cache=True, inline="always")
def _cheap_lb(box: NDArray[np.float64], g: int, a: NDArray[np.float64],
              d: NDArray[np.float64], dd: float) -> float:
    """Lower bound of the segment's distance to box ``g``: centre distance − half diagonal."""
    hx = 0.5 * (box[g, 3] - box[g, 0])
    hy = 0.5 * (box[g, 4] - box[g, 1])
    hz = 0.5 * (box[g, 5] - box[g, 2])
    return _pt_seg(box[g, 0] + hx, box[g, 1] + hy, box[g, 2] + hz, a, d, dd) - math.sqrt(
        hx * hx + hy * hy + hz * hz)


@njit(cache=True, inline="always")
def _box_dist(box: NDArray[np.float64], g: int, a: NDArray[np.float64],
              d: NDArray[np.float64], lo: NDArray[np.float64], hi: NDArray[np.float64],
              scratch: NDArray[np.float64]) -> float:
    """Exact distance of the segment to box ``g``."""
    for ax in range(3):
        lo[ax] = box[g, ax]
        hi[ax] = box[g, 3 + ax]
    return seg_box_dist(a, d, lo, hi, scratch)


@njit(cache=True, inline="always")
def _visit_order(lb: NDArray[np.float64], n: int, warm: bool,
                 ar: NDArray[np.int64]) -> NDArray[np.int64]:
    """Visit order of ``n`` boxes: nearest-first (by their cheap bound) for a cold
    start; storage order once a tight upper bound prunes most boxes anyway."""
    if warm:
        return ar[:n]
    return np.argsort(lb[:n])


@njit(cache=True, parallel=True)
def _query_kernel(a_q: NDArray[np.float64], b_q: NDArray[np.float64],
                  cells: NDArray[np.float64], b1_box: NDArray[np.float64],
                  b1_start: NDArray[np.int64], b2_box: NDArray[np.float64],
                  b2_start: NDArray[np.int64], b3_box: NDArray[np.float64],
                  b3_start: NDArray[np.int64], s_start: NDArray[np.int64],
                  sp: NDArray[np.float64], zero: NDArray[np.bool_], want: NDArray[np.bool_],
                  tol: float, order: NDArray[np.int64], chunk_start: NDArray[np.int64]
                  ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    n = a_q.shape[0]
    n_struct = s_start.shape[0] - 1
    out_lo = np.zeros((n, n_struct), dtype=np.float32)
    out_hi = np.zeros((n, n_struct), dtype=np.float32)
    max_b3 = 1
    for s in range(n_struct):
        max_b3 = max(max_b3, s_start[s + 1] - s_start[s])
    half = np.empty(3)
    for ax in range(3):
        half[ax] = 0.5 * sp[ax]
    r_cell = math.sqrt(half[0] * half[0] + half[1] * half[1] + half[2] * half[2])
    n_chunk = chunk_start.shape[0] - 1
    for ch in prange(n_chunk):
        lo = np.empty(3)
        hi = np.empty(3)
        scratch = np.empty(8)
        lb3 = np.empty(max_b3)
        lb2 = np.empty(64)
        lb1 = np.empty(64)
        # closest cell of each structure for the previous segment of this chunk:
        # segments are in spatial order, so it gives a tight upper bound at once
        prev = np.full(n_struct, -1, dtype=np.int64)
        ar = np.arange(max(max_b3, 64))
        for oc in range(chunk_start[ch], chunk_start[ch + 1]):
            c = order[oc]
            a = a_q[c].copy()
            d = b_q - a
            dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
            for s in range(n_struct):
                if not want[s]:
                    out_lo[c, s] = np.nan
                    out_hi[c, s] = np.nan
                    continue
                if zero[c, s]:
                    continue
                s0 = s_start[s]
                nb3 = s_start[s + 1] - s0
                if nb3 == 0:
                    out_lo[c, s] = np.inf
                    out_hi[c, s] = np.inf
                    continue
                best = np.inf
                best_e = prev[s]
                warm = best_e >= 0
                if warm:
                    # warm start: exact distance to the predecessor's closest cell
                    for ax in range(3):
                        lo[ax] = cells[best_e, ax] - half[ax]
                        hi[ax] = cells[best_e, ax] + half[ax]
                    best = seg_box_dist(a, d, lo, hi, scratch)
                low = np.inf  # smallest lower bound of anything pruned
                for q in range(nb3):
                    lb3[q] = _cheap_lb(b3_box, s0 + q, a, d, dd)
                order3 = _visit_order(lb3, nb3, warm, ar)
                for q3 in range(nb3):
                    u3 = order3[q3]
                    if lb3[u3] >= best - tol:
                        low = min(low, lb3[u3])
                        if warm:
                            continue
                        break
                    g3 = s0 + u3
                    bx3 = _box_dist(b3_box, g3, a, d, lo, hi, scratch)
                    if bx3 >= best - tol:
                        low = min(low, bx3)
                        continue
                    f2 = b3_start[g3]
                    nb2 = b3_start[g3 + 1] - f2
                    for q in range(nb2):
                        lb2[q] = _cheap_lb(b2_box, f2 + q, a, d, dd)
                    order2 = _visit_order(lb2, nb2, warm, ar)
                    for q2 in range(nb2):
                        u = order2[q2]
                        if lb2[u] >= best - tol:
                            low = min(low, lb2[u])
                            if warm:
                                continue
                            break
                        g = f2 + u
                        bx = _box_dist(b2_box, g, a, d, lo, hi, scratch)
                        if bx >= best - tol:
                            low = min(low, bx)
                            continue
                        f0 = b2_start[g]
                        nb1 = b2_start[g + 1] - f0
                        # cheap bound of each block for the order; the exact box
                        # distance only for the blocks reached
                        for q in range(nb1):
                            lb1[q] = _cheap_lb(b1_box, f0 + q, a, d, dd)
                        order1 = _visit_order(lb1, nb1, warm, ar)
                        for q1 in range(nb1):
                            v = order1[q1]
                            if lb1[v] >= best - tol:
                                low = min(low, lb1[v])
                                if warm:
                                    continue
                                break
                            blk = f0 + v
                            bx1 = _box_dist(b1_box, blk, a, d, lo, hi, scratch)
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
                                    best_e = e
                prev[s] = best_e
                out_lo[c, s] = max(min(low, best), 0.0)
                out_hi[c, s] = best
    return out_lo, out_hi


def _spatial_chunks(a_q: NDArray[np.float64], cell_mm: float = 4.0, chunk: int = 256
                    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Segments in Morton (Z-curve) order of their start on a ``cell_mm`` grid, cut
    into chunks of ``chunk`` consecutive segments (one per parallel task): neighbours in
    the order are mostly close in space, so each warm-starts from its predecessor."""
    n = len(a_q)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    q = np.floor((a_q - a_q.min(axis=0)) / cell_mm).astype(np.int64)
    q = np.minimum(q, (1 << 20) - 1)
    code = np.zeros(n, dtype=np.int64)
    for bit in range(20):
        for ax in range(3):
            code |= ((q[:, ax] >> bit) & 1) << (3 * bit + ax)
    order = np.argsort(code, kind="stable").astype(np.int64)
    chunk_start = np.append(np.arange(0, n, chunk), n).astype(np.int64)
    return order, chunk_start


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
    order, chunk_start = _spatial_chunks(a_q)
    lo, hi = _query_kernel(a_q, b_q, index.cells, index.b1_box, index.b1_start, index.b2_box,
                           index.b2_start, index.b3_box, index.b3_start, index.s_start, index.spacing_mm,
                           np.ascontiguousarray(zero, dtype=np.bool_),
                           np.ascontiguousarray(want, dtype=np.bool_), float(max(tol_mm, 0.0)),
                           order, chunk_start)
    return lo, hi
