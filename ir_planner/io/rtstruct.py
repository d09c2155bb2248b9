"""DICOM RTSTRUCT → :class:`~ir_planner.core.labels.LabelMap` by rasterising contours.

Rasterisation rules (``docs/segmentation_files.md``):

* Only CLOSED_PLANAR contours are filled; POINT and OPEN_* contours are skipped
  with a warning.
* Each contour is mapped into the image's index space; it must lie in one image
  slice plane. A contour between slices goes to the nearest slice (warning).
  Contours outside the image are dropped (warning).
* All contours of one ROI on one slice are combined with the **even–odd rule**
  (a contour inside another is a hole).
* A voxel belongs to the ROI when its centre is inside (even–odd) **or lies on a
  contour edge** (within 10⁻³ voxel). Contours traced through the centres of a
  mask's boundary voxels (what rt-utils, OpenCV and many TPS exports write) thus
  give back exactly that mask, and a contour on voxel edges gives the voxels inside.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ir_planner.core.catalog import Category, lookup
from ir_planner.core.errors import GeometryError, SegmentationReadError
from ir_planner.core.labels import LabelMap
from ir_planner.core.progress import ProgressCallback, report
from ir_planner.core.volume import ImageVolume
from ir_planner.io.seg_common import LayerPacker, unique_name

__all__ = ["read_rtstruct", "rasterise_polygons"]

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_EDGE_TOL = 1e-3  # voxel
_PLANE_TOL = 0.05  # slice index
_INTERPRETED: dict[str, Category] = {
    "GTV": Category.TARGET, "CTV": Category.TARGET, "PTV": Category.TARGET,
    "EXTERNAL": Category.BODY,
}


def rasterise_polygons(
    polygons: list[NDArray[np.float64]], shape_ji: tuple[int, int]
) -> NDArray[np.bool_]:
    """Fill closed polygons on a pixel grid with the even–odd rule plus their edges.

    Parameters
    ----------
    polygons : list of numpy.ndarray, each (N, 2)
        Vertices as continuous (i, j) = (column, row) pixel indices; pixel (i, j)
        has its centre at (i, j). The last vertex connects to the first.
    shape_ji : tuple of int
        (rows, columns) of the output.

    Returns
    -------
    numpy.ndarray of bool, shape ``shape_ji``
        True where the pixel centre is inside (even–odd over all polygons) or on an edge.

    Examples
    --------
    >>> sq = np.array([[1.0, 1.0], [3.0, 1.0], [3.0, 2.0], [1.0, 2.0]])
    >>> rasterise_polygons([sq], (4, 5)).astype(int).tolist()
    [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
    """
    nj, ni = shape_ji
    edge_pixels = np.zeros((nj, ni), dtype=bool)
    polys = [np.asarray(poly, dtype=float).reshape(-1, 2) for poly in polygons]
    polys = [pts for pts in polys if len(pts)]
    for pts in polys:
        _mark_edges(pts, edge_pixels)
    filled = [pts for pts in polys if len(pts) >= 3]
    if not filled:
        return edge_pixels
    every = np.concatenate(filled)
    # work inside the polygons' bounding box only
    j_lo = max(0, int(math.ceil(every[:, 1].min())))
    j_hi = min(nj - 1, int(math.floor(every[:, 1].max())))
    i_lo = max(0, int(math.ceil(every[:, 0].min())))
    i_hi = min(ni - 1, int(math.floor(every[:, 0].max())))
    if j_hi < j_lo or i_hi < i_lo:
        return edge_pixels
    width = i_hi - i_lo + 1
    toggles = np.zeros((j_hi - j_lo + 1, width + 1), dtype=np.int32)
    rows = np.arange(j_lo, j_hi + 1, dtype=float)[:, None]
    for pts in filled:
        x0, y0 = pts[:, 0], pts[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
        # half-open rule: an edge covers rows y with min ≤ y < max (vertices counted once)
        r_idx, e_idx = np.nonzero((rows >= lo[None, :]) & (rows < hi[None, :]))
        if r_idx.size == 0:
            continue
        y = rows[r_idx, 0]
        t = (y - y0[e_idx]) / (y1[e_idx] - y0[e_idx])
        x = x0[e_idx] + t * (x1[e_idx] - x0[e_idx])
        # a crossing left of the box toggles from the box's first column on
        col = np.clip(np.ceil(x) - i_lo, 0, width).astype(np.int64)
        np.add.at(toggles, (r_idx, col), 1)
    inside = (np.cumsum(toggles, axis=1)[:, :width] % 2) == 1
    edge_pixels[j_lo: j_hi + 1, i_lo: i_hi + 1] |= inside
    return edge_pixels


def _mark_edges(pts: NDArray[np.float64], out: NDArray[np.bool_]) -> None:
    """Set pixels whose centres lie on the polygon's edges (or on a lone vertex)."""
    nj, ni = out.shape
    if len(pts) == 1:
        i, j = np.round(pts[0]).astype(int)
        if 0 <= i < ni and 0 <= j < nj:
            out[j, i] = True
        return
    n_edges = 1 if len(pts) == 2 else len(pts)
    p = pts[:n_edges]
    q = np.roll(pts, -1, axis=0)[:n_edges]
    pr, qr = np.round(p), np.round(q)
    near_p = np.abs(p - pr) < _EDGE_TOL
    near_q = np.abs(q - qr) < _EDGE_TOL
    cells: list[NDArray[np.int64]] = []
    # edges between lattice points (pixel centres): every lattice point on them
    lattice = near_p.all(axis=1) & near_q.all(axis=1)
    if lattice.any():
        a = pr[lattice].astype(np.int64)
        d = qr[lattice].astype(np.int64) - a
        g = np.gcd(np.abs(d[:, 0]), np.abs(d[:, 1]))
        step = d // np.maximum(g, 1)[:, None]
        counts = g + 1
        edge = np.repeat(np.arange(len(a)), counts)
        t = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        cells.append(a[edge] + t[:, None] * step[edge])
    # other edges: only axis-parallel ones lying on a pixel row or column hit centres
    for e in np.flatnonzero(~lattice):
        a_pt, b_pt = p[e], q[e]
        if abs(b_pt[0] - a_pt[0]) < _EDGE_TOL and near_p[e, 0]:
            lo, hi = sorted((a_pt[1], b_pt[1]))
            js = np.arange(math.ceil(lo - _EDGE_TOL), math.floor(hi + _EDGE_TOL) + 1)
            cells.append(np.stack([np.full(js.shape, int(pr[e, 0])), js], axis=1))
        elif abs(b_pt[1] - a_pt[1]) < _EDGE_TOL and near_p[e, 1]:
            lo, hi = sorted((a_pt[0], b_pt[0]))
            is_ = np.arange(math.ceil(lo - _EDGE_TOL), math.floor(hi + _EDGE_TOL) + 1)
            cells.append(np.stack([is_, np.full(is_.shape, int(pr[e, 1]))], axis=1))
    if not cells:
        return
    all_cells = np.concatenate(cells).astype(np.int64)
    ok = ((all_cells[:, 0] >= 0) & (all_cells[:, 0] < ni)
          & (all_cells[:, 1] >= 0) & (all_cells[:, 1] < nj))
    out[all_cells[ok, 1], all_cells[ok, 0]] = True


#: Largest |coordinate| of a contour point (mm): 10 m, far beyond any patient.
_MAX_COORD_MM = 1e4


def _contour_points(contour: Any) -> NDArray[np.float64]:
    """ContourData as (N, 3) LPS mm, parsed from the raw bytes when possible (fast)."""
    raw = contour.get_item("ContourData")
    value = getattr(raw, "value", None)
    if isinstance(value, bytes):
        numbers = np.array(value.decode("ascii").replace("\\", " ").split(), dtype=float)
    else:
        numbers = np.asarray([float(v) for v in contour.ContourData], dtype=float)
    if numbers.size == 0 or numbers.size % 3:
        raise ValueError(f"{numbers.size} numbers is not a list of (x, y, z) points")
    return numbers.reshape(-1, 3)


def read_rtstruct(
    path: str | Path, *, image: ImageVolume, progress: ProgressCallback | None = None
) -> LabelMap:
    """Rasterise the ROIs of an RTSTRUCT onto ``image``'s grid.

    Parameters
    ----------
    path : str or Path
        The RTSTRUCT file.
    image : ImageVolume
        The image the contours were drawn on (same frame of reference).
    progress : ProgressCallback, optional
        Called with (fraction, message).

    Raises
    ------
    SegmentationReadError
        Not an RTSTRUCT, unreadable, or no ROI with a contour on the image.
    GeometryError
        The RTSTRUCT refers to another frame of reference than the image.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    try:
        ds = pydicom.dcmread(p)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise SegmentationReadError(f"{p}: cannot read DICOM file ({exc})") from exc
    if str(ds.get("Modality", "")) != "RTSTRUCT" and str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP_CLASS:
        raise SegmentationReadError(f"{p}: not an RTSTRUCT (Modality {ds.get('Modality', '?')})")
    warnings: list[str] = []
    rois: dict[int, dict[str, Any]] = {}
    for item in ds.get("StructureSetROISequence", []):
        rois[int(item.ROINumber)] = {
            "name": str(item.get("ROIName", "") or f"roi_{item.ROINumber}").strip(),
            "for": str(item.get("ReferencedFrameOfReferenceUID", "")),
        }
    for item in ds.get("RTROIObservationsSequence", []):
        number = int(item.get("ReferencedROINumber", -1))
        if number in rois:
            rois[number]["type"] = str(item.get("RTROIInterpretedType", "")).upper()
    img_for = str(image.metadata.get("frame_of_reference_uid", ""))
    rt_fors = {r["for"] for r in rois.values() if r["for"]} | {
        str(x.get("FrameOfReferenceUID", "")) for x in ds.get("ReferencedFrameOfReferenceSequence", [])
    }
    rt_fors.discard("")
    if img_for and rt_fors and img_for not in rt_fors:
        raise GeometryError(
            f"{p}: the RTSTRUCT's frame of reference ({', '.join(sorted(rt_fors))}) differs "
            f"from the image's ({img_for}); it was not drawn on this scan"
        )
    if not img_for:
        warnings.append(
            "the image has no frame of reference UID: contours placed by patient coordinates "
            "only (cannot check they belong to this scan)"
        )
    contours_seq = list(ds.get("ROIContourSequence", []))
    if not contours_seq:
        raise SegmentationReadError(f"{p}: the RTSTRUCT has no ROIContourSequence (no contours)")
    nk, nj, ni = image.shape
    packer = LayerPacker(image.shape)
    taken: set[str] = set()
    skipped_types: dict[str, int] = {}
    between = 0
    off_grid = 0
    non_planar = 0
    empty: list[str] = []
    for n, roi_item in enumerate(contours_seq):
        number = int(roi_item.get("ReferencedROINumber", -1))
        info = rois.get(number, {"name": f"roi_{number}"})
        name = info["name"]
        by_slice: dict[int, list[NDArray[np.float64]]] = {}
        for contour in roi_item.get("ContourSequence", []):
            kind = str(contour.get("ContourGeometricType", "")).upper()
            if kind != "CLOSED_PLANAR":
                skipped_types[kind or "untyped"] = skipped_types.get(kind or "untyped", 0) + 1
                continue
            try:
                pts = _contour_points(contour)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise SegmentationReadError(
                    f"{p}: ROI {name!r} has malformed ContourData ({exc})"
                ) from exc
            if not np.all(np.isfinite(pts)) or np.abs(pts).max() > _MAX_COORD_MM:
                bad = pts[~np.isfinite(pts) | (np.abs(pts) > _MAX_COORD_MM)]
                raise SegmentationReadError(
                    f"{p}: ROI {name!r} has ContourData that is not a position in the patient "
                    f"({bad.flat[0]!r} mm; coordinates must be finite and within "
                    f"±{_MAX_COORD_MM:g} mm)"
                )
            ijk = image.world_to_index(pts)
            if np.ptp(ijk[:, 2]) > 2 * _PLANE_TOL:
                non_planar += 1
                continue
            kf = float(ijk[:, 2].mean())
            k = int(round(kf))
            if not -0.5 <= kf <= nk - 0.5:
                off_grid += 1
                continue
            k = min(max(k, 0), nk - 1)
            if abs(kf - k) > _PLANE_TOL:
                between += 1
            if (ijk[:, 0].min() < -0.5 or ijk[:, 0].max() > ni - 0.5
                    or ijk[:, 1].min() < -0.5 or ijk[:, 1].max() > nj - 0.5):
                off_grid += 1
            by_slice.setdefault(k, []).append(ijk[:, :2])
        report(progress, (n + 1) / len(contours_seq), f"ROI {name}")
        if not by_slice:
            empty.append(name)
            continue
        ks = sorted(by_slice)
        stack = np.zeros((ks[-1] - ks[0] + 1, nj, ni), dtype=bool)
        for k, polys in by_slice.items():
            stack[k - ks[0]] = rasterise_polygons(polys, (nj, ni))
        if not stack.any():
            empty.append(name)
            continue
        jj = np.flatnonzero(stack.any(axis=(0, 2)))
        ii = np.flatnonzero(stack.any(axis=(0, 1)))
        kk = np.flatnonzero(stack.any(axis=(1, 2)))
        box = (slice(ks[0] + int(kk[0]), ks[0] + int(kk[-1]) + 1),
               slice(int(jj[0]), int(jj[-1]) + 1), slice(int(ii[0]), int(ii[-1]) + 1))
        crop = stack[int(kk[0]): int(kk[-1]) + 1, box[1], box[2]]
        attrs: dict[str, Any] = {}
        color = roi_item.get("ROIDisplayColor")
        if color is not None and len(color) == 3:
            attrs["color"] = tuple(min(1.0, max(0.0, float(c) / 255.0)) for c in color)
        hint = _INTERPRETED.get(info.get("type", ""))
        if hint is not None and not lookup(name).known:
            attrs["category"] = hint
        unique = unique_name(name, taken)
        if unique != name:
            warnings.append(f"duplicate ROI name {name!r} renamed to {unique!r}")
        packer.add(unique, box, crop, **attrs)
    if between:
        warnings.append(
            f"{between} contour(s) lie between image slices; each was put on the nearest slice"
        )
    if off_grid:
        warnings.append(
            f"{off_grid} contour(s) lie (partly) outside the image grid; the parts outside "
            "were dropped"
        )
    if non_planar:
        warnings.append(
            f"{non_planar} contour(s) are not in an image slice plane (oblique to the image) "
            "and were skipped"
        )
    if skipped_types:
        warnings.append(
            "contours that are not CLOSED_PLANAR were skipped: "
            + ", ".join(f"{v} {k}" for k, v in sorted(skipped_types.items()))
        )
    if empty:
        warnings.append(f"{len(empty)} ROI(s) without contours on the image dropped: "
                        + ", ".join(empty))
    if not packer.structures:
        raise SegmentationReadError(
            f"{p}: no ROI of the RTSTRUCT has a closed contour on this image's slices"
        )
    return packer.label_map(image, warnings)
