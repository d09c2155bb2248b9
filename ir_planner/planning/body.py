"""The patient's body and skin surface: where needles can enter.

The body comes from a segmented body/skin structure when the label map has one
(category ``BODY``), otherwise from thresholding the CT (default −300 HU): the
largest connected component after a small opening (which cuts the thin contact
with the table), with holes filled slice by slice. Candidate entries are points
on that surface at ≤ 2 mm spacing with their outward normals.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from ir_planner.core.catalog import Category
from ir_planner.core.errors import InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume

__all__ = ["body_mask", "skin_points"]


def body_mask(image: ImageVolume | None, labels: LabelMap, *,
              threshold_hu: float = -300.0) -> tuple[NDArray[np.bool_], str]:
    """Boolean body mask ``[k, j, i]`` on the label grid and how it was obtained.

    Parameters
    ----------
    image : ImageVolume or None
        The CT on the label grid (needed only when no body structure exists).
    labels : LabelMap
        Its BODY-category structures (e.g. ``body``, ``skin``) are used if present.
    threshold_hu : float
        CT threshold for the fallback.

    Returns
    -------
    mask, source : ndarray of bool, str
        ``source`` is ``"structure NAME"`` or ``"CT threshold -300 HU"``.
    """
    body = labels.by_category(Category.BODY)
    if body:
        mask = labels.union_mask(body)
        if mask.any():
            return _fill_slices(mask), "structure " + "+".join(s.name for s in body)
    if image is None:
        raise InputError("no body/skin structure in the labels and no image to threshold; "
                         "pass the CT image or add a 'body' structure")
    if image.shape != labels.grid.shape:
        raise InputError(f"image grid {image.shape} differs from label grid "
                         f"{labels.grid.shape}; resample the labels onto the image")
    # On large fine grids (> 16 M voxels, in-plane spacing < 1 mm) the outline is found
    # on every other row and column and replicated back: the skin moves < 1 voxel.
    arr = np.asarray(image.array)
    step = 2 if arr.size > 16_000_000 and float(np.min(image.spacing_mm[:2])) < 1.0 else 1
    small = arr[:, ::step, ::step] > threshold_hu
    small = ndi.binary_opening(small, structure=ndi.generate_binary_structure(3, 1),
                               iterations=2)
    lab, n = ndi.label(small)
    if n == 0:
        raise InputError(f"no voxel above {threshold_hu} HU: cannot find the body outline; "
                         "is this a CT in Hounsfield units?")
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    small = _fill_slices(lab == int(np.argmax(sizes)))
    if step > 1:
        mask = np.repeat(np.repeat(small, step, axis=1), step, axis=2)[:, :arr.shape[1],
                                                                        :arr.shape[2]]
        source = f"CT threshold {threshold_hu:g} HU (outline on a {step}x coarser in-plane grid)"
    else:
        mask = small
        source = f"CT threshold {threshold_hu:g} HU"
    # Everything segmented is inside the body too.
    mask = mask | labels.any_mask()
    return mask, source


def _fill_slices(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    out = ndi.binary_fill_holes(mask)
    for k in range(out.shape[0]):
        out[k] = ndi.binary_fill_holes(out[k])
    return out


def skin_points(mask: NDArray[np.bool_], grid: ImageVolume, *, spacing_mm: float = 2.0
                ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Points on the body surface (LPS mm) at ≤ ``spacing_mm`` with outward unit normals.

    The surface is the boundary of the union of body cells (iso-level ½ between
    inside and outside voxel centres), triangulated by marching cubes; triangles
    are subdivided until their edges are ≤ ``spacing_mm`` and the points thinned
    to one per ``0.75·spacing_mm`` cube.
    """
    from skimage.measure import marching_cubes

    if not mask.any():
        raise InputError("the body mask is empty: no skin to enter through")
    # No padding: where the body is cut by the image edge (first/last slice) the
    # surface stays open instead of inventing skin on the cut plane.
    # On fine grids march on every other voxel: the surface moves < 1 voxel.
    step_size = 2 if float(np.min(grid.spacing_mm)) < 1.0 else 1
    padded = mask.astype(np.uint8)
    sp_kji = tuple(float(s) for s in grid.spacing_mm[::-1])
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=sp_kji,
                                        step_size=step_size, allow_degenerate=False)
    verts_ijk = verts[:, ::-1] / grid.spacing_mm
    tri = verts_ijk[faces] * grid.spacing_mm  # scaled index mm, (m, 3, 3)
    edge = np.max(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2), axis=1)
    nsub = np.maximum(1, np.ceil(edge / spacing_mm)).astype(int)
    pts_list = []
    nrm_list = []
    tri_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    for n in np.unique(nsub):
        sel = tri[nsub == n]
        nn = tri_n[nsub == n]
        ab = [(a / n, b / n) for a in range(n + 1) for b in range(n + 1 - a)]
        w = np.array([[1 - u - v, u, v] for u, v in ab])
        p = np.einsum("bw,mwc->mbc", w, sel).reshape(-1, 3)
        pts_list.append(p)
        nrm_list.append(np.repeat(nn, len(ab), axis=0))
    pts_q = np.concatenate(pts_list)
    nrm_q = np.concatenate(nrm_list)
    key = np.floor(pts_q / (0.75 * spacing_mm)).astype(np.int64)
    key -= key.min(axis=0)
    flat = np.ravel_multi_index(key.T, tuple(int(x) + 1 for x in key.max(axis=0)))
    _, first = np.unique(flat, return_index=True)
    pts_q, nrm_q = pts_q[first], nrm_q[first]
    # Orient normals outward: the mask must be empty one cell-diagonal outside.
    nrm_q /= np.maximum(np.linalg.norm(nrm_q, axis=1, keepdims=True), 1e-12)
    step = float(np.max(grid.spacing_mm))
    shp = np.array(mask.shape[::-1])

    def inside(q: NDArray[np.float64]) -> NDArray[np.bool_]:
        ijk = np.rint(q / grid.spacing_mm).astype(int)
        ok = np.all((ijk >= 0) & (ijk < shp), axis=1)
        ijk = np.clip(ijk, 0, shp - 1)
        return ok & mask[ijk[:, 2], ijk[:, 1], ijk[:, 0]]

    flip = inside(pts_q + step * nrm_q) & ~inside(pts_q - step * nrm_q)
    nrm_q[flip] *= -1.0
    g = nrm_q
    pts_lps = pts_q @ grid.direction.T + grid.origin_lps
    nrm_lps = g @ grid.direction.T
    return pts_lps, nrm_lps
