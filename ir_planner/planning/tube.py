"""Exact per-structure clearances of many segments within a range (compiled kernel).

For each segment a→b (scaled-index space q, mm) the kernel visits every grid cell
that can lie within ``range_mm`` of the segment — slab by slab along the segment's
major axis, each slab's cells bounded by the box of the segment part within
``range_mm`` of the slab, expanded by ``range_mm`` — and, for every labelled cell of a
requested structure, takes the exact Euclidean distance from the segment to the
cell's box (the convex, piecewise-quadratic squared distance minimised over its
breakpoints and stationary points, as :func:`geometry.segment_box_distance`).

Result per (segment, structure): the exact distance to the union of its cells when
it is < ``range_mm``; otherwise ``inf``, meaning "≥ range_mm" (every cell closer than
the range was visited). A segment passing through a cell gets distance 0.

Compiled with numba (``parallel=True``: segments are spread over the cores; the
compiled code is cached on disk after the first use).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

__all__ = ["tube_distances", "seg_box_dist", "forbidden_map", "forbidden_maps", "block_map",
           "low_t_range"]


#: log2 of the block size of the block occupancy map.
_B = 2


def block_map(fmap: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Occupancy of blocks of 4×4×4 cells of ``fmap`` (1 = some cell set)."""
    b = 1 << _B
    nk, nj, ni = fmap.shape
    pad = np.zeros((-(-nk // b) * b, -(-nj // b) * b, -(-ni // b) * b), dtype=np.uint8)
    pad[:nk, :nj, :ni] = fmap
    out = pad.reshape(pad.shape[0] // b, b, pad.shape[1] // b, b, pad.shape[2] // b, b)
    return np.ascontiguousarray(out.max(axis=(1, 3, 5)))


def forbidden_map(layers: list[NDArray[np.integer]], luts: NDArray[np.int16]
                  ) -> NDArray[np.uint8]:
    """uint8 map (k, j, i): 1 where some layer's label maps to a structure in ``luts``."""
    return forbidden_maps(layers, luts)[0]


def forbidden_maps(layers: list[NDArray[np.integer]], luts: NDArray[np.int16]
                   ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """:func:`forbidden_map` and its :func:`block_map`, computed together (parallel)."""
    dtype = np.result_type(*[lay.dtype for lay in layers])
    lay = tuple(np.ascontiguousarray(x, dtype=dtype) for x in layers)
    return _maps_kernel(lay, np.ascontiguousarray(luts, dtype=np.int16))


@njit(cache=True, parallel=True)
def _maps_kernel(layers: tuple, luts: NDArray[np.int16]
                 ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    nk, nj, ni = layers[0].shape
    b = 1 << _B
    fmap = np.zeros((nk, nj, ni), dtype=np.uint8)
    bmap = np.zeros(((nk + b - 1) >> _B, (nj + b - 1) >> _B, (ni + b - 1) >> _B),
                    dtype=np.uint8)
    n_lut = luts.shape[1]
    for kb in prange(bmap.shape[0]):
        for k in range(kb * b, min(nk, kb * b + b)):
            for j in range(nj):
                for i in range(ni):
                    for li in range(luts.shape[0]):
                        lab = layers[li][k, j, i]
                        if lab != 0 and lab < n_lut and luts[li, lab] >= 0:
                            fmap[k, j, i] = 1
                            bmap[kb, j >> _B, i >> _B] = 1
                            break
    return fmap, bmap


@njit(cache=True, fastmath=False, inline="always")
def _f2(ax: float, ay: float, az: float, dx: float, dy: float, dz: float, t: float,
        lx: float, ly: float, lz: float, hx: float, hy: float, hz: float) -> float:
    px = ax + t * dx
    py = ay + t * dy
    pz = az + t * dz
    gx = max(lx - px, px - hx, 0.0)
    gy = max(ly - py, py - hy, 0.0)
    gz = max(lz - pz, pz - hz, 0.0)
    return gx * gx + gy * gy + gz * gz


@njit(cache=True)
def seg_box_dist(a: NDArray[np.float64], d: NDArray[np.float64], lo: NDArray[np.float64],
                 hi: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Exact distance from the segment a + t·d (t ∈ [0, 1]) to the box [lo, hi]
    (``b``: scratch array of 8 floats)."""
    b[0] = 0.0
    b[1] = 1.0
    nb = 2
    for ax in range(3):
        if d[ax] != 0.0:
            for face in (lo[ax], hi[ax]):
                t = (face - a[ax]) / d[ax]
                if 0.0 < t < 1.0:
                    # insertion sort
                    q = nb
                    while q > 0 and b[q - 1] > t:
                        b[q] = b[q - 1]
                        q -= 1
                    b[q] = t
                    nb += 1
    best = np.inf
    for n in range(nb):
        v = _f2(a[0], a[1], a[2], d[0], d[1], d[2], b[n], lo[0], lo[1], lo[2],
                hi[0], hi[1], hi[2])
        if v < best:
            best = v
    for n in range(nb - 1):
        t0 = b[n]
        t1 = b[n + 1]
        if t1 - t0 <= 0.0:
            continue
        tm = 0.5 * (t0 + t1)
        num = 0.0
        den = 0.0
        for ax in range(3):
            p = a[ax] + tm * d[ax]
            if p < lo[ax]:
                num += d[ax] * (lo[ax] - a[ax])
                den += d[ax] * d[ax]
            elif p > hi[ax]:
                num += d[ax] * (hi[ax] - a[ax])
                den += d[ax] * d[ax]
        if den > 0.0:
            ts = min(max(num / den, t0), t1)
            v = _f2(a[0], a[1], a[2], d[0], d[1], d[2], ts, lo[0], lo[1], lo[2],
                    hi[0], hi[1], hi[2])
            if v < best:
                best = v
    return math.sqrt(max(best, 0.0))


@njit(cache=True, parallel=True)
def _tube_kernel(a_q: NDArray[np.float64], b_q: NDArray[np.float64], fmap: NDArray[np.uint8],
                 bmap: NDArray[np.uint8], layers: tuple,
                 luts: NDArray[np.int16], sp: NDArray[np.float64], shape_ijk: NDArray[np.int64],
                 range_c: NDArray[np.float64], t_from: NDArray[np.float64],
                 t_to: NDArray[np.float64], n_struct: int, min_only: bool
                 ) -> NDArray[np.float32]:
    n = a_q.shape[0]
    out = np.full((n, n_struct), np.inf, dtype=np.float32)
    r_cell = 0.5 * math.sqrt(sp[0] * sp[0] + sp[1] * sp[1] + sp[2] * sp[2])
    n_layers = luts.shape[0]
    n_lut = luts.shape[1]
    for c in prange(n):
        a = a_q[c]
        d = b_q - a
        range_mm = range_c[c]
        ta = t_from[c]
        tb = t_to[c]
        if not (range_mm > 0.0) or ta > tb:
            continue
        best = np.full(n_struct, np.inf)
        gbest = np.inf
        # major axis: most cells crossed
        m = 0
        for ax in range(1, 3):
            if abs(d[ax]) / sp[ax] > abs(d[m]) / sp[m]:
                m = ax
        o1 = 2 if m != 2 else 1
        o2 = 0 if m != 0 else 1
        if d[m] == 0.0:
            continue
        dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        s_lo = min(a[m] + ta * d[m], a[m] + tb * d[m]) - range_mm
        s_hi = max(a[m] + ta * d[m], a[m] + tb * d[m]) + range_mm
        n_lo = max(0, int(math.ceil(s_lo / sp[m] - 0.5)))
        n_hi = min(shape_ijk[m] - 1, int(math.floor(s_hi / sp[m] + 0.5)))
        lo = np.empty(3)
        hi = np.empty(3)
        idx = np.empty(3, dtype=np.int64)
        scratch = np.empty(8)
        for nm in range(n_lo, n_hi + 1):
            x0 = (nm - 0.5) * sp[m] - range_mm
            x1 = (nm + 0.5) * sp[m] + range_mm
            t0 = (x0 - a[m]) / d[m]
            t1 = (x1 - a[m]) / d[m]
            if t0 > t1:
                t0, t1 = t1, t0
            t0 = max(t0, ta)
            t1 = min(t1, tb)
            if t0 > t1:
                continue
            p0 = a[o1] + t0 * d[o1]
            p1 = a[o1] + t1 * d[o1]
            i1_lo = max(0, int(math.ceil((min(p0, p1) - range_mm) / sp[o1] - 0.5)))
            i1_hi = min(shape_ijk[o1] - 1, int(math.floor((max(p0, p1) + range_mm) / sp[o1] + 0.5)))
            idx[m] = nm
            for n1 in range(i1_lo, i1_hi + 1):
                idx[o1] = n1
                # Narrow the parameter range to the segment points within the range of
                # this row along o1 as well, then bound the row along o2.
                u0 = t0
                u1 = t1
                if d[o1] != 0.0:
                    v0 = ((n1 - 0.5) * sp[o1] - range_mm - a[o1]) / d[o1]
                    v1 = ((n1 + 0.5) * sp[o1] + range_mm - a[o1]) / d[o1]
                    if v0 > v1:
                        v0, v1 = v1, v0
                    u0 = max(u0, v0)
                    u1 = min(u1, v1)
                    if u0 > u1:
                        continue
                p0 = a[o2] + u0 * d[o2]
                p1 = a[o2] + u1 * d[o2]
                i2_lo = max(0, int(math.ceil((min(p0, p1) - range_mm) / sp[o2] - 0.5)))
                i2_hi = min(shape_ijk[o2] - 1,
                            int(math.floor((max(p0, p1) + range_mm) / sp[o2] + 0.5)))
                n2 = i2_lo
                while n2 <= i2_hi:
                    idx[o2] = n2
                    i = idx[0]
                    j = idx[1]
                    k = idx[2]
                    if bmap[k >> _B, j >> _B, i >> _B] == 0:
                        # empty block: jump to the next block along o2
                        n2 = ((n2 >> _B) + 1) << _B
                        continue
                    n2 += 1
                    if fmap[k, j, i] == 0:
                        continue
                    for li in range(n_layers):
                        lab = layers[li][k, j, i]
                        if lab == 0 or lab >= n_lut:
                            continue
                        s = luts[li, lab]
                        if s < 0:
                            continue
                        cx = i * sp[0]
                        cy = j * sp[1]
                        cz = k * sp[2]
                        # cheap lower bound: centre-to-segment distance - half diagonal
                        tt = ((cx - a[0]) * d[0] + (cy - a[1]) * d[1] + (cz - a[2]) * d[2]) / dd
                        tt = min(max(tt, 0.0), 1.0)
                        ex = cx - a[0] - tt * d[0]
                        ey = cy - a[1] - tt * d[1]
                        ez = cz - a[2] - tt * d[2]
                        cd = math.sqrt(ex * ex + ey * ey + ez * ez)
                        if cd - r_cell >= min(gbest if min_only else best[s], range_mm):
                            continue
                        lo[0] = cx - 0.5 * sp[0]
                        lo[1] = cy - 0.5 * sp[1]
                        lo[2] = cz - 0.5 * sp[2]
                        hi[0] = cx + 0.5 * sp[0]
                        hi[1] = cy + 0.5 * sp[1]
                        hi[2] = cz + 0.5 * sp[2]
                        v = seg_box_dist(a, d, lo, hi, scratch)
                        if v < best[s]:
                            best[s] = v
                            if v < gbest:
                                gbest = v
        for s in range(n_struct):
            if best[s] < range_mm:
                out[c, s] = best[s]
    return out


def tube_distances(a_q: NDArray[np.float64], b_q: NDArray[np.float64],
                   layers: list[NDArray[np.integer]], luts: NDArray[np.int16],
                   spacing_mm: NDArray[np.float64], shape_ijk: tuple[int, int, int],
                   range_mm: float | NDArray[np.float64], n_struct: int,
                   fmap: NDArray[np.uint8] | None = None,
                   t_range: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None,
                   min_only: bool = False, bmap: NDArray[np.uint8] | None = None
                   ) -> NDArray[np.float32]:
    """Exact distances (mm) from segments ``a_q[n] → b_q`` to structures, within a range.

    Parameters
    ----------
    a_q : ndarray (n, 3)
        Segment starts (scaled-index mm).
    b_q : ndarray (3,)
        Common segment end (scaled-index mm).
    layers : list of ndarray (k, j, i)
        The label layers (same integer dtype).
    luts : ndarray (n_layers, max_label + 1) int16
        Label value of each layer → structure index (0..n_struct−1), −1 = ignored.
    spacing_mm, shape_ijk
        Grid spacing and size.
    range_mm : float or ndarray (n,)
        Distances ≥ this are returned as ``inf`` (meaning "≥ range_mm"); per segment
        when an array.
    n_struct : int
        Number of structure indices.
    fmap : ndarray (k, j, i) uint8, optional
        :func:`forbidden_map` of ``layers``/``luts`` (built when not given).
    t_range : (ndarray (n,), ndarray (n,)), optional
        Only cells within the range of the sub-segment ``t ∈ [t_from, t_to]`` (t = 0
        at a, 1 at b) are visited; distances are still to the whole segment. Use it
        when the rest of the segment is known to be ≥ the range from every cell
        (t_from > t_to skips the segment). Default [0, 1].
    min_only : bool
        Only the minimum over the structures is wanted: a structure's value is then
        exact only where it is that minimum (others may be larger upper bounds, still
        ``inf`` when ≥ the range); faster.
    bmap : ndarray uint8, optional
        :func:`block_map` of ``fmap`` (built when not given).

    Returns
    -------
    ndarray (n, n_struct) float32
        Exact distance (mm) from each segment to each structure's cells (0 when it
        passes through a cell), ``inf`` where ≥ ``range_mm``.
    """
    a_q = np.ascontiguousarray(a_q, dtype=np.float64).reshape(-1, 3)
    b_q = np.ascontiguousarray(b_q, dtype=np.float64).reshape(3)
    dtype = np.result_type(*[lay.dtype for lay in layers])
    lay = tuple(np.ascontiguousarray(x, dtype=dtype) for x in layers)
    if fmap is None:
        fmap = forbidden_map(layers, luts)
    if bmap is None:
        bmap = block_map(fmap)
    n = len(a_q)
    rng = np.broadcast_to(np.asarray(range_mm, dtype=np.float64), (n,)).copy()
    if t_range is None:
        t0, t1 = np.zeros(n), np.ones(n)
    else:
        t0 = np.clip(np.asarray(t_range[0], dtype=np.float64), 0.0, 1.0)
        t1 = np.clip(np.asarray(t_range[1], dtype=np.float64), 0.0, 1.0)
    return _tube_kernel(a_q, b_q, fmap, bmap, lay, np.ascontiguousarray(luts, dtype=np.int16),
                        np.asarray(spacing_mm, dtype=np.float64),
                        np.asarray(shape_ijk, dtype=np.int64), rng, t0, t1, int(n_struct),
                        bool(min_only))


@njit(cache=True, parallel=True)
def low_t_range(a_q: NDArray[np.float64], b_q: NDArray[np.float64],
                bound: NDArray[np.float64], step_mm: float, field_lo: NDArray[np.float32],
                block: NDArray[np.float64], sp: NDArray[np.float64]
                ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per segment a_q[n] → b_q (t = 0 at a, 1 at b): the parameter range outside
    which a guaranteed lower bound of the distance is ≥ ``bound[n]``.

    ``field_lo`` is a lower bound of the distance at the corners ``m`` of a lattice of
    blocks (corner m at scaled-index position ``(m·block − ½)·sp``); a point p with
    corner v gets ``field_lo(v) − |p − v|`` (1-Lipschitz), and samples at step h cover
    ±h/2. Returns (t_from, t_to); (2, −1) where the bound holds everywhere.
    """
    n = a_q.shape[0]
    t_from = np.full(n, 2.0)
    t_to = np.full(n, -1.0)
    nk, nj, ni = field_lo.shape
    top = (ni - 1, nj - 1, nk - 1)
    for c in prange(n):
        dx = b_q[0] - a_q[c, 0]
        dy = b_q[1] - a_q[c, 1]
        dz = b_q[2] - a_q[c, 2]
        length = math.sqrt(dx * dx + dy * dy + dz * dz)
        ns = max(2, int(math.ceil(length / step_mm)) + 1)
        ht = 1.0 / (ns - 1)
        half = 0.5 * length * ht
        lo_t = 2.0
        hi_t = -1.0
        for s in range(ns):
            t = s * ht
            px = a_q[c, 0] + t * dx
            py = a_q[c, 1] + t * dy
            pz = a_q[c, 2] + t * dz
            mi = min(max(int(math.floor((px / sp[0] + 0.5) / block[0] + 0.5)), 0), top[0])
            mj = min(max(int(math.floor((py / sp[1] + 0.5) / block[1] + 0.5)), 0), top[1])
            mk = min(max(int(math.floor((pz / sp[2] + 0.5) / block[2] + 0.5)), 0), top[2])
            vx = (mi * block[0] - 0.5) * sp[0] - px
            vy = (mj * block[1] - 0.5) * sp[1] - py
            vz = (mk * block[2] - 0.5) * sp[2] - pz
            lb = field_lo[mk, mj, mi] - math.sqrt(vx * vx + vy * vy + vz * vz) - half - 1e-3
            if lb < bound[c]:
                if t < lo_t:
                    lo_t = t
                hi_t = t
        if hi_t >= 0.0:
            t_from[c] = lo_t - ht
            t_to[c] = hi_t + ht
    return t_from, t_to
