"""The patient's body and skin surface: where needles can enter.

The body comes from a segmented outline structure when the label map has one
(category ``BODY`` and named like an outline: ``body``, ``skin``, ``body_trunc``,
``External``; not ``face`` or a fat compartment, which the catalog also files as
BODY), otherwise from thresholding the image:

* a CT in Hounsfield units is thresholded at ``threshold_hu`` (default −300 HU);
* an MR, any other modality, an image of unknown modality without air (no value
  ≤ −500), or a CT whose values are clearly raw stored values (none below 0, tissue
  near +1000) gets an automatic threshold: Otsu's threshold of the log-intensities
  (``log(1 + v − min)``) of a subsample, which separates the dark air background
  from the tissue even when fat and muscle differ strongly;
* an explicit ``threshold`` overrides both.

The body is the largest 6-connected component after a small opening (two erosions
and two dilations with the 6-neighbour cross: it cuts the thin contact with the
table), with holes filled slice by slice in the grid's axial-most slices (an enclosed
lung, bowel gas or air pocket is inside the body, also in a sagittal or coronal
acquisition, where lungs and bowel gas reaching the first/last axial slice would
otherwise stay open and their walls become "skin"); everything segmented is inside the body too. With an automatic
threshold, when the result cannot be a body seen against a background (it covers
≥ 90 % of the in-plane image border of the slices, or the image border is not mostly
dark air) an :class:`~ir_planner.core.errors.InputError` says so. A CT in Hounsfield
units (or a given threshold) keeps the former behaviour: a field of view inside the
patient gives the image box as skin, and ``source`` then carries a WARNING.

Candidate entries are points on that surface at ≤ 2 mm spacing with their outward
normals (:func:`skin_points`).

The heavy steps are numba kernels (opening, slice-wise hole filling from the slice
border, upsampling with the union of the labels, subdivision and thinning of the
surface triangles); the result is identical to the former scipy implementation
(``bench/bench_body.py`` checks this on a real 512×512×300 CT).
"""

from __future__ import annotations

import math
import re

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from ir_planner.core.catalog import Category
from ir_planner.core.errors import InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume

__all__ = ["body_mask", "skin_points", "looks_like_hounsfield", "auto_threshold",
           "axial_array_axis", "is_outline", "OUTLINE_NAMES"]

#: Names of BODY structures that outline the whole body (skin surface); other BODY
#: structures (face, fat compartments) are parts of it and never define the skin.
OUTLINE_NAMES = re.compile(r"(^|[_\s-])(body|skin|outline|external|contour)([_\s-]|$)")

#: Fraction of the in-plane image border covered by the body above which no body
#: can be told from the background.
MAX_BORDER_FRACTION = 0.9
#: For an automatic threshold: the median intensity of the image border (above the
#: image minimum) must be below this fraction of the threshold (above the minimum):
#: the border must be mostly air, whose MR signal is noise far below tissue.
MAX_BORDER_LEVEL = 0.5


# -- intensity model ---------------------------------------------------------------------
def _subsample(arr: NDArray[np.generic], n_target: int = 1_000_000) -> NDArray[np.float64]:
    """About ``n_target`` voxels of ``arr`` on a regular stride (deterministic)."""
    stride = max(1, int(np.ceil((arr.size / n_target) ** (1.0 / 3.0))))
    return np.asarray(arr[::stride, ::stride, ::stride], dtype=np.float64).ravel()


def looks_like_hounsfield(image: ImageVolume) -> bool:
    """Whether the fallback may threshold ``image`` in Hounsfield units.

    For modality ``"CT"``: yes, unless the values are clearly raw stored values without
    the rescale (no value below 0, i.e. no air near −1000, and tissue-like values
    ≥ 900 in the top percent). For an unknown modality (``""``): only when air or
    padding (values ≤ −500) is present. Never for MR or any other modality.
    """
    modality = (image.modality or "").strip().upper()
    if modality not in ("CT", ""):
        return False
    v = _subsample(np.asarray(image.array))
    lowest = float(np.min(v))
    if modality == "CT":
        return lowest < 0.0 or float(np.percentile(v, 99)) < 900.0
    return lowest <= -500.0


def auto_threshold(image: ImageVolume) -> float:
    """Automatic body/background threshold of a non-HU image (image units).

    Otsu's threshold of ``log(1 + v − min)`` on a regular subsample of about 10⁶
    voxels, mapped back to the image's intensities.

    Raises
    ------
    InputError
        When the image is constant (nothing to separate).
    """
    from skimage.filters import threshold_otsu

    v = _subsample(np.asarray(image.array))
    v = v[np.isfinite(v)]
    lo = float(v.min()) if v.size else 0.0
    if v.size == 0 or float(v.max()) <= lo:
        raise InputError("the image is constant: no body can be separated from the background; "
                         "add a 'body' structure to the labels")
    t_log = float(threshold_otsu(np.log1p(v - lo)))
    return float(np.expm1(t_log) + lo)


# -- numba kernels -----------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _erode6(a: NDArray[np.bool_], out: NDArray[np.bool_]) -> None:  # pragma: no cover
    """One erosion with the 6-neighbour cross; outside the array repeats the edge voxel
    (a body cut by the image edge is not eroded there: no bevel, no invented skin)."""
    nk, nj, ni = a.shape
    for k in prange(nk):
        k0, k1 = max(k - 1, 0), min(k + 1, nk - 1)
        for j in range(nj):
            j0, j1 = max(j - 1, 0), min(j + 1, nj - 1)
            for i in range(ni):
                v = a[k, j, i]
                if v:
                    v = (a[k0, j, i] and a[k1, j, i] and a[k, j0, i] and a[k, j1, i]
                         and a[k, j, max(i - 1, 0)] and a[k, j, min(i + 1, ni - 1)])
                out[k, j, i] = v


@njit(cache=True, parallel=True)
def _erode6_threshold(arr: NDArray[np.generic], thr: float, step: int,
                      out: NDArray[np.bool_]) -> None:  # pragma: no cover
    """:func:`_erode6` of ``arr[:, ::step, ::step] > thr`` (thresholding fused in; the
    edge voxel repeats outside the array)."""
    nk, nj, ni = out.shape
    for k in prange(nk):
        k0, k1 = max(k - 1, 0), min(k + 1, nk - 1)
        for j in range(nj):
            jj = j * step
            j0, j1 = max(j - 1, 0) * step, min(j + 1, nj - 1) * step
            for i in range(ni):
                ii = i * step
                v = arr[k, jj, ii] > thr
                if v:
                    v = (arr[k0, jj, ii] > thr and arr[k1, jj, ii] > thr
                         and arr[k, j0, ii] > thr and arr[k, j1, ii] > thr
                         and arr[k, jj, max(i - 1, 0) * step] > thr
                         and arr[k, jj, min(i + 1, ni - 1) * step] > thr)
                out[k, j, i] = v


@njit(cache=True, parallel=True)
def _dilate6(a: NDArray[np.bool_], out: NDArray[np.bool_]) -> None:  # pragma: no cover
    """One dilation with the 6-neighbour cross; outside the array counts as False."""
    nk, nj, ni = a.shape
    for k in prange(nk):
        for j in range(nj):
            for i in range(ni):
                v = a[k, j, i]
                if not v:
                    v = ((k > 0 and a[k - 1, j, i]) or (k < nk - 1 and a[k + 1, j, i])
                         or (j > 0 and a[k, j - 1, i]) or (j < nj - 1 and a[k, j + 1, i])
                         or (i > 0 and a[k, j, i - 1]) or (i < ni - 1 and a[k, j, i + 1]))
                out[k, j, i] = v


@njit(cache=True)
def _erode4(a: NDArray[np.bool_], out: NDArray[np.bool_]) -> None:  # pragma: no cover
    """In-plane erosion with the 4-neighbour cross (for volumes of < 5 slices; the edge
    voxel repeats outside the array)."""
    nk, nj, ni = a.shape
    for k in prange(nk):
        for j in range(nj):
            j0, j1 = max(j - 1, 0), min(j + 1, nj - 1)
            for i in range(ni):
                v = a[k, j, i]
                if v:
                    v = (a[k, j0, i] and a[k, j1, i] and a[k, j, max(i - 1, 0)]
                         and a[k, j, min(i + 1, ni - 1)])
                out[k, j, i] = v


@njit(cache=True)
def _dilate4(a: NDArray[np.bool_], out: NDArray[np.bool_]) -> None:  # pragma: no cover
    """In-plane dilation with the 4-neighbour cross (for volumes of < 5 slices)."""
    nk, nj, ni = a.shape
    for k in prange(nk):
        for j in range(nj):
            for i in range(ni):
                v = a[k, j, i]
                if not v:
                    v = ((j > 0 and a[k, j - 1, i]) or (j < nj - 1 and a[k, j + 1, i])
                         or (i > 0 and a[k, j, i - 1]) or (i < ni - 1 and a[k, j, i + 1]))
                out[k, j, i] = v


#: Radius (mm) of the neighbourhood that gives each skin point its normal.
NORMAL_RADIUS_MM = 3.0


@njit(cache=True, parallel=True)
def _smooth_normals(pts_q: NDArray[np.float64], nrm_q: NDArray[np.float64],
                    mask: NDArray[np.bool_], sp: NDArray[np.float64],
                    radius_mm: float) -> None:  # pragma: no cover
    """Outward normal of each point (q-space) = direction from the centroid of the body
    voxels within ``radius_mm`` to the point (the image edge repeats its voxels, as
    the opening does); kept as is where that neighbourhood is all or no body."""
    nk, nj, ni = mask.shape
    ri = int(math.ceil(radius_mm / sp[0]))
    rj = int(math.ceil(radius_mm / sp[1]))
    rk = int(math.ceil(radius_mm / sp[2]))
    r2 = radius_mm * radius_mm
    for n in prange(pts_q.shape[0]):
        ux = pts_q[n, 0] / sp[0]
        uy = pts_q[n, 1] / sp[1]
        uz = pts_q[n, 2] / sp[2]
        ic = int(math.floor(ux + 0.5))
        jc = int(math.floor(uy + 0.5))
        kc = int(math.floor(uz + 0.5))
        sx = 0.0
        sy = 0.0
        sz = 0.0
        cnt = 0
        tot = 0
        for k in range(kc - rk, kc + rk + 1):
            dz = (k - uz) * sp[2]
            kk = min(max(k, 0), nk - 1)
            for j in range(jc - rj, jc + rj + 1):
                dy = (j - uy) * sp[1]
                jj = min(max(j, 0), nj - 1)
                for i in range(ic - ri, ic + ri + 1):
                    dx = (i - ux) * sp[0]
                    if dx * dx + dy * dy + dz * dz > r2:
                        continue
                    tot += 1
                    if mask[kk, jj, min(max(i, 0), ni - 1)]:
                        sx += dx
                        sy += dy
                        sz += dz
                        cnt += 1
        if cnt == 0 or cnt == tot:
            continue
        vx = -sx / cnt
        vy = -sy / cnt
        vz = -sz / cnt
        norm = math.sqrt(vx * vx + vy * vy + vz * vz)
        if norm < 1e-9:
            continue
        nrm_q[n, 0] = vx / norm
        nrm_q[n, 1] = vy / norm
        nrm_q[n, 2] = vz / norm


@njit(cache=True)
def _count_runs(a: NDArray[np.bool_]) -> NDArray[np.int64]:  # pragma: no cover
    """Number of runs of True along i in every row ``[k, j]``."""
    nk, nj, ni = a.shape
    cnt = np.zeros((nk, nj), dtype=np.int64)
    for k in prange(nk):
        for j in range(nj):
            c = 0
            prev = False
            for i in range(ni):
                v = a[k, j, i]
                if v and not prev:
                    c += 1
                prev = v
            cnt[k, j] = c
    return cnt


@njit(cache=True)
def _fill_runs(a: NDArray[np.bool_], start: NDArray[np.int64], i0: NDArray[np.int32],
               i1: NDArray[np.int32]) -> None:  # pragma: no cover
    """Runs ``[i0, i1)`` of every row, row ``(k, j)`` from index ``start[k * nj + j]``."""
    nk, nj, ni = a.shape
    for k in prange(nk):
        for j in range(nj):
            r = start[k * nj + j]
            prev = False
            for i in range(ni):
                v = a[k, j, i]
                if v and not prev:
                    i0[r] = i
                if prev and not v:
                    i1[r] = i
                    r += 1
                prev = v
            if prev:
                i1[r] = ni
                r += 1


@njit(cache=True)
def _find(parent: NDArray[np.int64], x: int) -> int:  # pragma: no cover
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(cache=True)
def _union_rows(parent: NDArray[np.int64], start: NDArray[np.int64], i0: NDArray[np.int32],
                i1: NDArray[np.int32], ra: int, rb: int) -> None:  # pragma: no cover
    """Union the overlapping runs of row ``ra`` and the earlier row ``rb``."""
    a, a_end = start[ra], start[ra + 1]
    b, b_end = start[rb], start[rb + 1]
    while a < a_end and b < b_end:
        if i0[a] < i1[b] and i0[b] < i1[a]:
            x = _find(parent, a)
            y = _find(parent, b)
            if x != y:  # the root is the run first in raster order
                if x < y:
                    parent[y] = x
                else:
                    parent[x] = y
        if i1[a] < i1[b]:
            a += 1
        else:
            b += 1


@njit(cache=True)
def _largest_component_runs(nk: int, nj: int, start: NDArray[np.int64],
                            i0: NDArray[np.int32], i1: NDArray[np.int32]
                            ) -> tuple[NDArray[np.int64], int, int]:  # pragma: no cover
    """6-connected components of the runs; returns the root of every run, the root of
    the largest component (ties: first in raster order, as ``ndi.label`` numbers them
    and ``argmax`` picks) and the number of components."""
    n = i0.size
    parent = np.arange(n)
    for k in range(nk):
        for j in range(nj):
            row = k * nj + j
            if j > 0:
                _union_rows(parent, start, i0, i1, row, row - 1)
            if k > 0:
                _union_rows(parent, start, i0, i1, row, row - nj)
    size = np.zeros(n, dtype=np.int64)
    ncomp = 0
    for r in range(n):
        root = _find(parent, r)
        parent[r] = root
        if root == r:
            ncomp += 1
        size[root] += i1[r] - i0[r]
    best = -1
    best_size = -1
    for r in range(n):
        if parent[r] == r and size[r] > best_size:
            best = r
            best_size = size[r]
    return parent, best, ncomp


@njit(cache=True)
def _paint_component(out: NDArray[np.bool_], start: NDArray[np.int64], i0: NDArray[np.int32],
                     i1: NDArray[np.int32], root: NDArray[np.int64],
                     keep: int) -> None:  # pragma: no cover
    """``out`` = the runs whose root is ``keep``."""
    nk, nj, ni = out.shape
    for k in prange(nk):
        for j in range(nj):
            out[k, j, :] = False
            for r in range(start[k * nj + j], start[k * nj + j + 1]):
                if root[r] == keep:
                    out[k, j, i0[r]:i1[r]] = True


def _keep_largest_component(mask: NDArray[np.bool_]) -> int:
    """Keep (in place) the largest 6-connected component of ``mask``; returns the
    number of components (0: ``mask`` is empty). Equal to ``ndi.label`` + ``bincount``
    + ``argmax``, on runs along i instead of voxels."""
    nk, nj, _ = mask.shape
    cnt = _count_runs(mask)
    start = np.zeros(nk * nj + 1, dtype=np.int64)
    np.cumsum(cnt.ravel(), out=start[1:])
    n = int(start[-1])
    if n == 0:
        return 0
    i0 = np.empty(n, dtype=np.int32)
    i1 = np.empty(n, dtype=np.int32)
    _fill_runs(mask, start, i0, i1)
    root, keep, ncomp = _largest_component_runs(nk, nj, start, i0, i1)
    if ncomp > 1:
        _paint_component(mask, start, i0, i1, root, keep)
    return int(ncomp)


@njit(cache=True, parallel=True)
def _fill_slices_kernel(lab: NDArray[np.generic], keep: int,
                        out: NDArray[np.bool_]) -> None:  # pragma: no cover
    """``out[k]`` = (``lab[k] == keep``) with its holes filled, slice by slice.

    Background is what is 4-connected (in the slice) to the slice border through
    voxels ``!= keep``; everything else is inside. Equal to
    ``ndi.binary_fill_holes`` per slice (whose default structure is the 4-cross), and
    to the former 3-D fill followed by the slice fill (a 3-D hole is a 2-D hole in
    every slice it meets).
    """
    nk, nj, ni = lab.shape
    for k in prange(nk):
        stack = np.empty(nj * ni, dtype=np.int64)
        for j in range(nj):
            for i in range(ni):
                out[k, j, i] = True
        top = 0
        for j in range(nj):
            for i in (0, ni - 1):
                if lab[k, j, i] != keep and out[k, j, i]:
                    out[k, j, i] = False
                    stack[top] = j * ni + i
                    top += 1
        for i in range(ni):
            for j in (0, nj - 1):
                if lab[k, j, i] != keep and out[k, j, i]:
                    out[k, j, i] = False
                    stack[top] = j * ni + i
                    top += 1
        while top > 0:
            top -= 1
            p = stack[top]
            j = p // ni
            i = p - j * ni
            if j > 0 and out[k, j - 1, i] and lab[k, j - 1, i] != keep:
                out[k, j - 1, i] = False
                stack[top] = p - ni
                top += 1
            if j < nj - 1 and out[k, j + 1, i] and lab[k, j + 1, i] != keep:
                out[k, j + 1, i] = False
                stack[top] = p + ni
                top += 1
            if i > 0 and out[k, j, i - 1] and lab[k, j, i - 1] != keep:
                out[k, j, i - 1] = False
                stack[top] = p - 1
                top += 1
            if i < ni - 1 and out[k, j, i + 1] and lab[k, j, i + 1] != keep:
                out[k, j, i + 1] = False
                stack[top] = p + 1
                top += 1


@njit(cache=True, parallel=True)
def _upsample(small: NDArray[np.bool_], step: int,
              out: NDArray[np.bool_]) -> None:  # pragma: no cover
    """``out[k, j, i] = small[k, j // step, i // step]``."""
    nk, nj, ni = out.shape
    nis = small.shape[2]
    for k in prange(nk):
        for js in range(small.shape[1]):
            j0 = js * step
            if j0 >= nj:
                break
            for i_s in range(nis):
                v = small[k, js, i_s]
                i0 = i_s * step
                for i in range(i0, min(i0 + step, ni)):
                    out[k, j0, i] = v
            for j in range(j0 + 1, min(j0 + step, nj)):
                out[k, j, :] = out[k, j0, :]


@njit(cache=True, parallel=True)
def _or_nonzero(out: NDArray[np.bool_], layer: NDArray[np.generic]) -> None:  # pragma: no cover
    """``out |= layer != 0`` without a temporary (reads ``layer`` only where needed)."""
    nk, nj, ni = out.shape
    for k in prange(nk):
        for j in range(nj):
            for i in range(ni):
                if not out[k, j, i] and layer[k, j, i] != 0:
                    out[k, j, i] = True


@njit(cache=True)
def _surface_points(verts_q: NDArray[np.float64], faces: NDArray[np.int64],
                    spacing_mm: float, max_cells: int
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64],
                               NDArray[np.int64], bool]:  # pragma: no cover
    """Subdivide triangles to edges ≤ ``spacing_mm`` and keep one point per cube of
    ``0.75·spacing_mm`` (the first generated, triangles taken by ascending number of
    subdivisions, then in their order), ordered by cube (lexicographic i, j, k).

    Returns points, their (unnormalised) triangle normals, flat cube keys and whether
    the de-duplication was done here. When the dense cube grid would exceed
    ``max_cells`` all points are returned with their keys and the caller de-duplicates.
    """
    nf = faces.shape[0]
    nsub = np.empty(nf, dtype=np.int64)
    tri_n = np.empty((nf, 3), dtype=np.float64)
    nmax = 1
    total = 0
    for f in range(nf):
        a = faces[f, 0]
        b = faces[f, 1]
        c = faces[f, 2]
        emax = 0.0
        for (p, q) in ((a, c), (b, a), (c, b)):
            d0 = verts_q[p, 0] - verts_q[q, 0]
            d1 = verts_q[p, 1] - verts_q[q, 1]
            d2 = verts_q[p, 2] - verts_q[q, 2]
            e = np.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
            if e > emax:
                emax = e
        n = max(1, int(np.ceil(emax / spacing_mm)))
        nsub[f] = n
        nmax = max(nmax, n)
        total += (n + 1) * (n + 2) // 2
        u0 = verts_q[b, 0] - verts_q[a, 0]
        u1 = verts_q[b, 1] - verts_q[a, 1]
        u2 = verts_q[b, 2] - verts_q[a, 2]
        v0 = verts_q[c, 0] - verts_q[a, 0]
        v1 = verts_q[c, 1] - verts_q[a, 1]
        v2 = verts_q[c, 2] - verts_q[a, 2]
        tri_n[f, 0] = u1 * v2 - u2 * v1
        tri_n[f, 1] = u2 * v0 - u0 * v2
        tri_n[f, 2] = u0 * v1 - u1 * v0
    # Stable counting sort of the triangles by their number of subdivisions.
    count = np.zeros(nmax + 2, dtype=np.int64)
    for f in range(nf):
        count[nsub[f] + 1] += 1
    for n in range(1, nmax + 2):
        count[n] += count[n - 1]
    order = np.empty(nf, dtype=np.int64)
    for f in range(nf):
        order[count[nsub[f]]] = f
        count[nsub[f]] += 1
    cell = 0.75 * spacing_mm
    # Cube index bounds from the vertices (points are convex combinations; ±1 cube
    # for rounding), so the flat key needs no second pass.
    kmin = np.empty(3, dtype=np.int64)
    dims = np.empty(3, dtype=np.int64)
    for ax in range(3):
        kmin[ax] = int(np.floor(verts_q[:, ax].min() / cell)) - 1
        dims[ax] = int(np.floor(verts_q[:, ax].max() / cell)) + 2 - kmin[ax]
    ncells = dims[0] * dims[1] * dims[2]
    dense = ncells <= max_cells
    first = np.full(ncells if dense else 1, -1, dtype=np.int32)
    cap = total
    pts = np.empty((cap, 3), dtype=np.float64)
    owner = np.empty(cap, dtype=np.int64)
    flat = np.empty(cap if not dense else 0, dtype=np.int64)
    m = 0
    for o in range(nf):
        f = order[o]
        n = nsub[f]
        a = faces[f, 0]
        b = faces[f, 1]
        c = faces[f, 2]
        for ia in range(n + 1):
            for ib in range(n + 1 - ia):
                u = ia / n
                v = ib / n
                w = 1 - u - v
                x0 = w * verts_q[a, 0] + u * verts_q[b, 0] + v * verts_q[c, 0]
                x1 = w * verts_q[a, 1] + u * verts_q[b, 1] + v * verts_q[c, 1]
                x2 = w * verts_q[a, 2] + u * verts_q[b, 2] + v * verts_q[c, 2]
                key = ((int(np.floor(x0 / cell)) - kmin[0]) * dims[1]
                       + (int(np.floor(x1 / cell)) - kmin[1])) * dims[2] \
                    + (int(np.floor(x2 / cell)) - kmin[2])
                if dense:
                    if first[key] >= 0:
                        continue
                    first[key] = m
                else:
                    flat[m] = key
                pts[m, 0] = x0
                pts[m, 1] = x1
                pts[m, 2] = x2
                owner[m] = f
                m += 1
    if not dense:
        return pts, tri_n[owner], flat, False
    out_p = np.empty((m, 3), dtype=np.float64)
    out_n = np.empty((m, 3), dtype=np.float64)
    r = 0
    for cidx in range(ncells):
        x = first[cidx]
        if x >= 0:
            out_p[r] = pts[x]
            out_n[r] = tri_n[owner[x]]
            r += 1
    return out_p, out_n, flat, True


@njit(cache=True)
def _orient_normals(pts_q: NDArray[np.float64], nrm_q: NDArray[np.float64],
                    mask: NDArray[np.bool_], spacing: NDArray[np.float64],
                    step: float) -> None:  # pragma: no cover
    """Normalise ``nrm_q`` and flip it where the mask is inside one step along it and
    outside one step against it (nearest voxel; outside the grid counts as outside)."""
    nk, nj, ni = mask.shape
    for p in prange(pts_q.shape[0]):
        n0 = nrm_q[p, 0]
        n1 = nrm_q[p, 1]
        n2 = nrm_q[p, 2]
        norm = max(np.sqrt(n0 * n0 + n1 * n1 + n2 * n2), 1e-12)
        n0 /= norm
        n1 /= norm
        n2 /= norm
        ins = np.zeros(2, dtype=np.bool_)
        for s in range(2):
            sg = step if s == 0 else -step
            i = np.int64(np.rint((pts_q[p, 0] + sg * n0) / spacing[0]))
            j = np.int64(np.rint((pts_q[p, 1] + sg * n1) / spacing[1]))
            k = np.int64(np.rint((pts_q[p, 2] + sg * n2) / spacing[2]))
            ins[s] = (0 <= i < ni and 0 <= j < nj and 0 <= k < nk) and mask[k, j, i]
        if ins[0] and not ins[1]:
            n0, n1, n2 = -n0, -n1, -n2
        nrm_q[p, 0] = n0
        nrm_q[p, 1] = n1
        nrm_q[p, 2] = n2


# -- public API --------------------------------------------------------------------------
def body_mask(image: ImageVolume | None, labels: LabelMap, *,
              threshold_hu: float = -300.0,
              threshold: float | None = None) -> tuple[NDArray[np.bool_], str]:
    """Boolean body mask ``[k, j, i]`` on the label grid and how it was obtained.

    Parameters
    ----------
    image : ImageVolume or None
        The image on the label grid (needed only when no body structure exists).
    labels : LabelMap
        Its BODY-category *outline* structures (``body``, ``skin``, ``body_trunc``,
        ``External``; see :func:`is_outline`) are used if present; other BODY structures
        (``face``, ``subcutaneous_fat``, ...) never define the skin.
    threshold_hu : float
        Threshold (HU) for a CT in Hounsfield units.
    threshold : float, optional
        Explicit threshold in the image's units; overrides ``threshold_hu`` and the
        automatic threshold of non-HU images.

    Returns
    -------
    mask, source : ndarray of bool, str
        ``source`` is ``"structure NAME"``, ``"CT threshold -300 HU"``, ``"automatic
        threshold 123.4 (Otsu of log intensities; MR image, not Hounsfield units)"``
        or ``"threshold 123.4 (given)"``, followed by ``" (outline on a 2x coarser
        in-plane grid)"`` when the outline was found on every other row and column,
        and by ``" (WARNING: the body covers N% of the image border: ...)"`` when a CT
        (or given) threshold gives a body cut by the image edge almost all around.

    Raises
    ------
    InputError
        No body structure and no (matching) image; nothing above the threshold; or
        the thresholded "body" cannot be told from the background.
    """
    axis = axial_array_axis(labels.grid)
    body = [s for s in labels.by_category(Category.BODY) if is_outline(s.name)]
    if body:
        mask = labels.union_mask(body)
        if mask.any():
            return _fill_slices(mask, axis), "structure " + "+".join(s.name for s in body)
    if image is None:
        raise InputError("no body/skin structure in the labels and no image to threshold; "
                         "pass the CT image or add a 'body' structure")
    if image.shape != labels.grid.shape:
        raise InputError(f"image grid {image.shape} differs from label grid "
                         f"{labels.grid.shape}; resample the labels onto the image")
    arr = _native(np.asarray(image.array))
    if arr.shape[0] < 2:
        raise InputError(f"the image has {arr.shape[0]} slice(s): a body outline needs a 3-D "
                         "volume of at least 2 slices")
    if threshold is not None:
        thr = float(threshold)
        auto = False
        what = f"threshold {thr:g} (given)"
    elif looks_like_hounsfield(image):
        thr = float(threshold_hu)
        auto = False
        what = f"CT threshold {thr:g} HU"
    else:
        thr = auto_threshold(image)
        auto = True
        kind = f"{image.modality} image" if image.modality else "image of unknown modality"
        what = (f"automatic threshold {thr:.4g} (Otsu of log intensities; {kind}, "
                "not Hounsfield units)")
    # On large fine grids (> 16 M voxels, in-plane spacing < 1 mm) the outline is found
    # on every other row and column and replicated back: the skin moves < 1 voxel.
    step = 2 if arr.size > 16_000_000 and float(np.min(image.spacing_mm[:2])) < 1.0 else 1
    shape_small = (arr.shape[0], -(-arr.shape[1] // step), -(-arr.shape[2] // step))
    small = np.empty(shape_small, dtype=bool)
    tmp = np.empty(shape_small, dtype=bool)
    # Opening of (arr[:, ::step, ::step] > thr): 2 erosions + 2 dilations with the
    # 6-cross, the edge voxel repeated outside the array (a body cut by the image edge
    # keeps its extent there instead of a 2-voxel bevel of invented skin). Volumes of
    # < 5 slices are opened in-plane.
    if arr.shape[0] >= 5:
        _erode6_threshold(arr, thr, step, tmp)
        erode, dilate = _erode6, _dilate6
    else:
        np.greater(arr[:, ::step, ::step], thr, out=small)
        _erode4(small, tmp)
        erode, dilate = _erode4, _dilate4
    erode(tmp, small)
    dilate(small, tmp)
    dilate(tmp, small)
    n = _keep_largest_component(small)
    if n == 0:
        raise InputError(f"nothing above the {what} survives the opening: cannot find the "
                         "body outline; check the image (is this a CT in Hounsfield units?) "
                         "or add a 'body' structure")
    if axis == 0:
        _fill_slices_kernel(small.view(np.uint8), 1, tmp)
        small = tmp
    else:
        small = _fill_slices(small, axis)
    note = _check_separable(small, arr[:, ::step, ::step], thr, auto, what)
    if step > 1:
        mask = np.empty(arr.shape, dtype=bool)
        _upsample(small, step, mask)
        source = f"{what} (outline on a {step}x coarser in-plane grid){note}"
    else:
        mask = small
        source = what + note
    # Everything segmented is inside the body too.
    for layer in labels.layers:
        _or_nonzero(mask, _native(np.ascontiguousarray(layer)))
    return mask, source


def _native(a: NDArray[np.generic]) -> NDArray[np.generic]:
    """``a`` in native byte order (numba kernels need it; big-endian files exist)."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _check_separable(small: NDArray[np.bool_], arr: NDArray[np.generic], thr: float,
                     auto: bool, what: str) -> str:
    """For an automatic threshold, raise when the thresholded body cannot be a body seen
    against a background. For a CT or a given threshold (unchanged behaviour) return a
    note for ``source`` instead (``""`` when all is well)."""
    # The first and last 2 slices are bevelled by the opening (outside the image counts
    # as background): judge the others.
    inner = small[2:-2] if small.shape[0] >= 5 else small
    border = np.concatenate([inner[:, 0, :].ravel(), inner[:, -1, :].ravel(),
                             inner[:, :, 0].ravel(), inner[:, :, -1].ravel()])
    frac = float(border.mean())
    if frac >= MAX_BORDER_FRACTION and not auto:
        return (f" (WARNING: the body covers {100 * frac:.0f}% of the image border: the field "
                "of view cuts through the patient, the skin there is the image edge)")
    if frac >= MAX_BORDER_FRACTION:
        raise InputError(
            f"no body can be separated from the background with the {what}: the "
            f"thresholded body covers {100 * frac:.0f}% of the image border; the field of "
            "view lies inside the patient or the threshold is wrong. Add a 'body' "
            "structure to the labels or pass an explicit threshold")
    if not auto:
        return ""
    # An automatic threshold presumes a dark air background around the patient: the
    # image border must be mostly that background (noise far below the threshold).
    lo = float(np.min(_subsample(arr)))
    edge = np.concatenate([arr[:, 0, :].ravel(), arr[:, -1, :].ravel(),
                           arr[:, :, 0].ravel(), arr[:, :, -1].ravel()]).astype(np.float64)
    level = (float(np.median(edge)) - lo) / max(thr - lo, 1e-12)
    if level >= MAX_BORDER_LEVEL:
        raise InputError(
            f"no body can be separated from the background with the {what}: the image "
            f"border is not dark (its median is {100 * level:.0f}% of the way from the "
            f"minimum to the threshold, ≥ {100 * MAX_BORDER_LEVEL:.0f}%), so there is no air "
            "background around the patient (is the field of view inside the patient?). Add "
            "a 'body' structure to the labels or pass an explicit threshold")
    return ""


def is_outline(name: str) -> bool:
    """Whether a BODY-category structure is the whole body outline (``body``, ``skin``,
    ``body_trunc``, RTSTRUCT ``External``/``BODY``/``Outer Contour``), not a part of the body
    that the catalog also files as BODY (``face``, ``subcutaneous_fat``, ``torso_fat``)."""
    return OUTLINE_NAMES.search(name.lower()) is not None


def axial_array_axis(grid: ImageVolume) -> int:
    """The array axis (0, 1 or 2 of ``[k, j, i]``) closest to the patient's head–feet
    axis: slices normal to it are the (most) axial ones, whatever the acquisition plane."""
    return 2 - int(np.argmax(np.abs(grid.direction[2, :])))


def _fill_slices(mask: NDArray[np.bool_], axis: int = 0) -> NDArray[np.bool_]:
    """Holes filled slice by slice (``ndi.binary_fill_holes`` of every slice normal to
    array ``axis``: the axial-most slices, so that lungs and bowel gas reaching the
    first/last axial slice are filled whatever the acquisition plane)."""
    moved = np.ascontiguousarray(np.moveaxis(mask, axis, 0))
    out = np.empty(moved.shape, dtype=bool)
    _fill_slices_kernel(moved.view(np.uint8), 1, out)
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def skin_points(mask: NDArray[np.bool_], grid: ImageVolume, *, spacing_mm: float = 2.0
                ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Points on the body surface (LPS mm) at ≤ ``spacing_mm`` with outward unit normals.

    The surface is the boundary of the union of body cells (iso-level ½ between
    inside and outside voxel centres), triangulated by marching cubes; triangles
    are subdivided until their edges are ≤ ``spacing_mm`` and the points thinned
    to one per ``0.75·spacing_mm`` cube.

    Parameters
    ----------
    mask : ndarray of bool, shape (nk, nj, ni)
        Body mask on ``grid``.
    grid : ImageVolume
        Its geometry.
    spacing_mm : float
        Largest distance between neighbouring points.

    Returns
    -------
    points_lps, normals_lps : ndarray, shape (n, 3)
        Points (LPS mm), ordered by their thinning cube, and outward unit normals.

    Raises
    ------
    InputError
        Empty mask, or a mask of fewer than 2 voxels along an axis.
    """
    from skimage.measure import marching_cubes

    mask = np.asarray(mask, dtype=bool)
    if mask.shape != grid.shape:
        raise InputError(f"body mask shape {mask.shape} differs from the grid {grid.shape}")
    if min(mask.shape) < 2:
        raise InputError(f"body mask of shape {mask.shape}: a skin surface needs at least "
                         "2 voxels along every axis")
    if spacing_mm <= 0:
        raise InputError(f"spacing_mm must be > 0; got {spacing_mm}")
    # On fine grids march on every other voxel: the surface moves < 1 voxel. (Marching
    # the subsampled mask gives the same triangles as skimage's step_size=2.)
    st = 2 if float(np.min(grid.spacing_mm)) < 1.0 else 1
    sub = np.ascontiguousarray(mask[::st, ::st, ::st])
    # No padding: where the body is cut by the image edge (first/last slice) the
    # surface stays open instead of inventing skin on the cut plane. Cells beyond the
    # bounding box (+1 voxel) of the mask hold no surface: march only inside it.
    lo = []
    hi = []
    for ax in range(3):
        nz = np.flatnonzero(sub.any(axis=tuple(a for a in range(3) if a != ax)))
        if nz.size == 0:
            raise InputError("the body mask is empty: no skin to enter through")
        lo.append(max(0, int(nz[0]) - 1))
        hi.append(min(sub.shape[ax], int(nz[-1]) + 2))
    crop = sub[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    if min(crop.shape) < 2:
        # A one-voxel-thick mask at the array edge: march the whole subsample.
        crop, lo = sub, [0, 0, 0]
    if crop.all():
        raise InputError("the body mask fills the whole grid: the skin lies outside the "
                         "image, no entry surface inside it")
    sp_kji = np.asarray(grid.spacing_mm[::-1], dtype=float) * st
    verts, faces, _, _ = marching_cubes(crop.view(np.uint8), level=0.5,
                                        spacing=tuple(float(s) for s in sp_kji),
                                        allow_degenerate=False)
    if len(faces) == 0:
        raise InputError("the body mask has no surface inside the image: no skin to "
                         "enter through")
    verts = verts + np.asarray(lo, dtype=float) * sp_kji
    verts_q = (verts[:, ::-1] / grid.spacing_mm) * grid.spacing_mm  # scaled index mm
    pts_q, nrm_q, flat, done = _surface_points(
        np.ascontiguousarray(verts_q), np.ascontiguousarray(faces, dtype=np.int64),
        float(spacing_mm), 32_000_000)
    if not done:  # a very fine spacing on a large body: de-duplicate by sorting
        _, first = np.unique(flat, return_index=True)
        pts_q, nrm_q = pts_q[first], nrm_q[first]
    # Orient normals outward: the mask must be empty one cell-diagonal outside.
    _orient_normals(pts_q, nrm_q, mask, np.asarray(grid.spacing_mm, dtype=np.float64),
                    float(np.max(grid.spacing_mm)))
    # Facet normals of a voxelised surface are staircase-noisy (up to ~40° off): use the
    # direction away from the centroid of the body voxels within max(NORMAL_RADIUS_MM,
    # 2.5 voxels) (on a 2–2.5 mm cylinder: max error 41° → 15°, median 4–5°).
    _smooth_normals(pts_q, nrm_q, mask, np.asarray(grid.spacing_mm, dtype=np.float64),
                    max(NORMAL_RADIUS_MM, 2.5 * float(np.max(grid.spacing_mm))))
    pts_lps = pts_q @ grid.direction.T + grid.origin_lps
    nrm_lps = nrm_q @ grid.direction.T
    return pts_lps, nrm_lps


#: Values below this (Hounsfield units) are not air but scanner padding: the outside of
#: the reconstructed field of view (−2000, −2048, −3024 by vendor) or of a resampled image.
PADDING_BELOW_HU = -1100.0


def next_to_padding(points_lps: NDArray[np.float64], normals_lps: NDArray[np.float64],
                    image: ImageVolume, *, below: float = PADDING_BELOW_HU
                    ) -> NDArray[np.bool_]:
    """Which skin points border image padding (a CT value < ``below`` HU) outward.

    Such a "skin" is where the field of view cuts through the patient (a truncated
    reconstruction circle, a resampled image's fill): the real skin lies beyond, the
    tissue in between is unseen. The voxels at ½, 1 and 2 of the largest spacing along
    the outward normal are checked (nearest voxel; outside the grid counts as not
    padding: the grid edge is handled by the open surface).

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    pts = np.asarray(points_lps, dtype=np.float64).reshape(-1, 3)
    nrm = np.asarray(normals_lps, dtype=np.float64).reshape(-1, 3)
    arr = np.asarray(image.array)
    out = np.zeros(len(pts), dtype=bool)
    if not len(pts) or not float(np.min(arr)) < below:
        return out
    h = float(np.max(image.spacing_mm))
    shape = np.asarray(image.shape_ijk)
    for f in (0.5, 1.0, 2.0):
        ijk = np.rint(image.world_to_index(pts + f * h * nrm)).astype(np.int64)
        ok = np.all((ijk >= 0) & (ijk < shape), axis=1)
        v = np.full(len(pts), np.inf)
        v[ok] = arr[ijk[ok, 2], ijk[ok, 1], ijk[ok, 0]]
        out |= v < below
    return out
