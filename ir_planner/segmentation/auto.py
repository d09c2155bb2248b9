"""Automatic structures from CT (and the body contour from MR) by classic methods.

No model, no download: thresholds, connected components, morphology and a
multi-scale Hessian vesselness filter, run with SimpleITK (multi-threaded) and
SciPy on a *working grid*: the image binned (averaged) to about
``working_spacing_mm`` per axis, never finer than the input. The masks are then
mapped back onto the full grid (linear interpolation of each mask, cut at 0.5).

CT pipeline (Hounsfield units):

* **body** – ``HU > -300``, a 2-D opening (radius ``table_radius_mm``) that
  detaches the table and blankets, the largest 3-D component, re-grown into the
  threshold within the opening radius, holes filled slice by slice (axial).
* **bone** – hysteresis: voxels ``> 100 HU`` connected to seeds ``> 300 HU``,
  then axial holes smaller than 15 cm² with mean ``> 0 HU`` filled (cancellous
  bone). No closing: ribs stay ribs. Where a vertebral ring encloses the
  spinal canal in an axial slice, the canal (CSF 10–40 HU, not separable from
  fatty marrow by intensity) is filled into the bone.
* **lungs / airways** – air (``< -400 HU``) inside the body; a component is
  lung when it is larger than 20 ml, its median is above -930 HU and less
  than 20 % of it is below -950 HU (lung parenchyma with vessels, unlike the
  pure gas of bowel; severe emphysema can fail this test). The trachea is found as a round,
  near-midline, pure-air blob in the top slices and grown (``< -900 HU``) with a
  leak check; the airway is removed from the lungs.
* **bowel gas** – remaining air (``< -500 HU``) inside the body, components
  over 0.5 ml.
* **contrast** – detected from *lumens*: homogeneous (local SD < 35 HU), thick
  150–500 HU regions inside the body, at least ``contrast_min_ml`` (10 ml) of
  them; the report says whether the scan is enhanced. In an enhanced scan the
  bone is split from lumens it touches (watershed on the gradient from cortex
  and lumen markers), so the aorta on the spine stays a vessel.
* **vessels** – only if contrast-enhanced: multi-scale Frangi objectness
  (sigmas 1, 2, 4, 8 mm, for 2–25 mm vessels) seeds plus the lumens, grown into
  the enhanced (> 130 HU) non-bone tissue they touch (an enhancing organ fed by
  a vessel comes with it: over- rather than under-inclusive).

MR: the body contour only (intensity above half an Otsu threshold of the
foreground), with a warning that bone, lung, airway, bowel gas and vessels are
not available from MR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from scipy import ndimage as ndi

from ir_planner.bridge.sitk import to_sitk
from ir_planner.core.catalog import Category
from ir_planner.core.errors import InputError
from ir_planner.core.labels import LabelMap, Structure
from ir_planner.core.progress import ProgressCallback, report
from ir_planner.core.volume import ImageVolume
from ir_planner.segmentation._sitk import superior_array_axis

__all__ = ["AutoSegmentationReport", "segment_auto", "segment_ct", "segment_mr",
           "segment_for_planning", "is_contrast_enhanced", "contrast_lumens"]

#: Structure names written by the automatic segmenter, with their categories.
STRUCTURE_CATEGORIES: dict[str, Category] = {
    "body": Category.BODY,
    "bone": Category.BONE,
    "lung": Category.LUNG,
    "airway": Category.AIRWAY,
    "bowel_gas": Category.BOWEL,
    "vessels_contrast": Category.VESSEL,
}


@dataclass
class AutoSegmentationReport:
    """What the automatic segmentation found.

    Attributes
    ----------
    modality : str
        Modality the pipeline ran for ("CT" or "MR").
    structures : list of dict
        Per structure: name, category, voxels, volume_ml.
    timings_s : dict
        Seconds per step (keys name the step).
    warnings : list of str
        What was not found or not available, and why.
    contrast_enhanced : bool or None
        CT only: whether contrast enhancement was detected (None for MR).
    contrast_ml : float
        CT only: volume (ml) of contrast-filled lumens found (homogeneous 150–500 HU).
    working_spacing_mm : tuple of float
        Spacing (i, j, k) of the grid the pipeline ran on.
    """

    modality: str
    structures: list[dict[str, Any]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    contrast_enhanced: bool | None = None
    contrast_ml: float = 0.0
    working_spacing_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "modality": self.modality, "structures": self.structures,
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
            "warnings": list(self.warnings), "contrast_enhanced": self.contrast_enhanced,
            "contrast_ml": round(self.contrast_ml, 2),
            "working_spacing_mm": [round(v, 3) for v in self.working_spacing_mm],
        }


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
class _Timer:
    def __init__(self, rep: AutoSegmentationReport) -> None:
        self.rep = rep
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.rep.timings_s[name] = self.rep.timings_s.get(name, 0.0) + now - self.t
        self.t = now


def _shrink_factors(spacing_mm: NDArray[np.float64], target_mm: float) -> list[int]:
    return [max(1, int(np.floor(target_mm / s + 0.5))) for s in spacing_mm]


def _plane_structure(axis: int, connectivity: int = 1) -> NDArray[np.bool_]:
    """A 3-D structuring element connecting voxels only within planes normal to ``axis``."""
    st = np.zeros((3, 3, 3), dtype=bool)
    plane = ndi.generate_binary_structure(2, connectivity)
    index: list[Any] = [slice(None)] * 3
    index[axis] = 1
    st[tuple(index)] = plane
    return st


def _fill_holes_2d(mask: NDArray[np.bool_], axis: int) -> NDArray[np.bool_]:
    """Fill holes in every slice normal to ``axis`` (background not reaching the slice edge)."""
    background = ~mask
    lab, n = ndi.label(background, structure=_plane_structure(axis))
    if n == 0:
        return mask.copy()
    edge = np.zeros(n + 1, dtype=bool)
    for ax in range(3):
        if ax == axis:
            continue
        for idx in (0, -1):
            sl: list[Any] = [slice(None)] * 3
            sl[ax] = idx
            edge[np.unique(lab[tuple(sl)])] = True
    edge[0] = True
    return mask | ~edge[lab]


def _largest_component(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask.copy()
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return lab == int(np.argmax(counts))


def _radius_vox(radius_mm: float, spacing_ijk: NDArray[np.float64],
                skip_axis_ijk: int | None = None) -> list[int]:
    r = [max(0, int(round(radius_mm / s))) for s in spacing_ijk]
    if skip_axis_ijk is not None:
        r[skip_axis_ijk] = 0
    return r


def _sitk_mask(arr: NDArray[np.bool_], ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.view(np.uint8) if arr.dtype == np.bool_ else arr)
    img.CopyInformation(ref)
    return img


def _opening(mask: NDArray[np.bool_], ref: sitk.Image, radius: list[int]) -> NDArray[np.bool_]:
    if max(radius) == 0:
        return mask.copy()
    out = sitk.BinaryMorphologicalOpening(_sitk_mask(mask, ref), radius, sitk.sitkBall)
    return sitk.GetArrayFromImage(out).astype(bool)


def _dilate(mask: NDArray[np.bool_], ref: sitk.Image, radius: list[int]) -> NDArray[np.bool_]:
    if max(radius) == 0:
        return mask.copy()
    out = sitk.BinaryDilate(_sitk_mask(mask, ref), radius, sitk.sitkBall)
    return sitk.GetArrayFromImage(out).astype(bool)


def _to_full(mask: NDArray[np.bool_], work: sitk.Image, full: sitk.Image,
             factors: list[int]) -> NDArray[np.bool_]:
    """Map a working-grid mask onto the full grid (linear interpolation, cut at half).

    The working grid is ``BinShrink(full, factors)``: coarse voxel ``c`` covers full
    voxels ``f·c … f·c + f - 1``. ``sitk.Expand`` (linear) inverts that exactly on the
    mask's bounding box; full voxels past the last whole bin copy their neighbour.
    """
    full_shape = sitk.GetArrayViewFromImage(full).shape
    if all(f == 1 for f in factors):
        return mask
    out = np.zeros(full_shape, dtype=bool)
    if not mask.any():
        return out
    f_kji = np.asarray(factors[::-1])
    nz = np.nonzero(mask)
    lo = np.array([max(0, int(v.min()) - 2) for v in nz])
    hi = np.array([min(sz, int(v.max()) + 3) for v, sz in zip(nz, mask.shape)])
    sub = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.uint8) * np.uint8(254)
    # 0/254 in 8 bits (4× less memory than float); linear interpolation, cut at half
    up = sitk.GetArrayFromImage(sitk.Expand(sitk.GetImageFromArray(sub), factors,
                                            sitk.sitkLinear)) >= 127
    start = lo * f_kji
    stop = np.minimum(start + np.asarray(up.shape), full_shape)
    out[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]] = \
        up[:stop[0] - start[0], :stop[1] - start[1], :stop[2] - start[2]]
    # full voxels beyond the last whole bin (n not a multiple of f): copy the edge
    for ax in range(3):
        edge = int(mask.shape[ax] * f_kji[ax])
        if hi[ax] == mask.shape[ax] and edge < full_shape[ax]:
            idx: list[Any] = [slice(None)] * 3
            idx[ax] = slice(edge - 1, edge)
            src = out[tuple(idx)]
            idx[ax] = slice(edge, full_shape[ax])
            out[tuple(idx)] = src
    return out


# ---------------------------------------------------------------------------------------
# CT steps (all on the working grid; arrays [k, j, i])
# ---------------------------------------------------------------------------------------
def _body_ct(hu: NDArray[np.float32], ref: sitk.Image, axis: int,
             table_radius_mm: float) -> NDArray[np.bool_]:
    spacing = np.asarray(ref.GetSpacing())
    thr = hu > -300.0
    radius = _radius_vox(table_radius_mm, spacing, skip_axis_ijk=2 - axis)
    core = _largest_component(_opening(thr, ref, radius))
    if not core.any():
        return core
    body = _dilate(core, ref, [r + 1 if r else 0 for r in radius]) & thr
    body = _largest_component(body)
    return _fill_holes_2d(body, axis)


def _bone_ct(hu: NDArray[np.float32], body: NDArray[np.bool_], axis: int,
             spacing: NDArray[np.float64], reach_mm: float | None = None) -> NDArray[np.bool_]:
    seeds = (hu > 300.0) & body
    cand = (hu > 100.0) & body
    if reach_mm is not None:
        # optionally only spongy bone within reach_mm of cortex (limits contrast vessels
        # touching bone, but loses deep spongy bone: off by default)
        cand &= ndi.distance_transform_edt(~seeds, sampling=spacing[::-1]) <= reach_mm
    lab, n = ndi.label(cand)
    if n == 0:
        return cand
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(lab[seeds])] = True
    keep[0] = False
    bone = keep[lab]
    # cancellous bone: small axial holes of soft-tissue-or-brighter density
    holes = _fill_holes_2d(bone, axis) & ~bone
    hl, hn = ndi.label(holes, structure=_plane_structure(axis))
    if hn:
        pixel_cm2 = float(np.prod(np.delete(spacing[::-1], axis))) / 100.0
        area_cm2 = np.bincount(hl.ravel(), minlength=hn + 1) * pixel_cm2
        mean_hu = np.asarray(ndi.mean(hu, hl, np.arange(hn + 1)))
        fill = (area_cm2 < 15.0) & (mean_hu > 0.0)
        fill[0] = False
        bone = bone | fill[hl]
    return bone


def _air_components(air: NDArray[np.bool_]) -> tuple[NDArray[np.int32], int]:
    lab, n = ndi.label(air)
    return lab.astype(np.int32, copy=False), int(n)


def _lungs_airway_ct(hu: NDArray[np.float32], body: NDArray[np.bool_], axis: int,
                     spacing: NDArray[np.float64], warnings: list[str], sup_last: bool
                     ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    air = (hu < -400.0) & body
    lab, n = _air_components(air)
    lung = np.zeros(hu.shape, dtype=bool)
    if n:
        counts = np.bincount(lab.ravel(), minlength=n + 1)
        big = [int(v) for v in np.nonzero(counts * voxel_ml >= 20.0)[0] if v != 0]
        if big:
            medians = np.atleast_1d(ndi.median(hu, lab, big))
            pure_gas = np.bincount(lab[hu < -950.0], minlength=n + 1)[big] / counts[big]
            for v, med, gas in zip(big, medians, pure_gas):
                # lung parenchyma: little pure gas (< -950 HU, the emphysema index) and a
                # median well above gas; bowel gas is mostly pure gas
                if med > -930.0 and gas < 0.2:
                    lung |= lab == v
    airway = _airway(hu, body, lung, axis, spacing, warnings, sup_last)
    if airway.any():
        lung &= ~airway
        lung = _drop_small(lung, 20.0 / voxel_ml)
    if not lung.any():
        warnings.append("no lung found (no large air region with lung density inside the "
                        "body): the scan may not include the chest")
    return lung, airway


def _drop_small(mask: NDArray[np.bool_], min_voxels: float) -> NDArray[np.bool_]:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    counts = np.bincount(lab.ravel())
    ok = counts >= min_voxels
    ok[0] = False
    return ok[lab]


def _airway(hu: NDArray[np.float32], body: NDArray[np.bool_], lung: NDArray[np.bool_],
            axis: int, spacing: NDArray[np.float64], warnings: list[str],
            sup_last: bool) -> NDArray[np.bool_]:
    """Trachea and bronchi: a round, near-midline pure-air tube entering the chest from above.

    Candidates are round air blobs of 1–8 cm² near the body's left–right middle
    in the top slices (down to 4 cm below the top of the lungs), between the two
    lungs when the slice shows lung. Each is grown in ``< -900 HU`` (then -950,
    -980 if it leaks) and accepted only if it looks like a tube: at least 3 cm
    long, under 250 ml, 90 % of its slices under 6 cm² and none over 15 cm².
    """
    sp = spacing[::-1]  # array-axis order
    pixel_mm2 = float(np.prod(np.delete(sp, axis)))
    voxel_ml = float(np.prod(sp)) / 1000.0
    strict = (hu < -900.0) & body
    n_slices = hu.shape[axis]
    order = list(range(n_slices - 1, -1, -1) if sup_last else range(n_slices))
    lung_per_slice = np.take(lung, order, axis=axis).reshape(n_slices, -1).any(axis=1) \
        if axis == 0 else np.array([np.take(lung, s, axis=axis).any() for s in order])
    if not lung_per_slice.any():
        return np.zeros(hu.shape, dtype=bool)
    first_lung = int(np.argmax(lung_per_slice))
    depth = int(round(40.0 / sp[axis]))
    others = [ax for ax in range(3) if ax != axis]
    lr_axis_2d = 1 if others[1] == 2 else 0  # in-slice axis that is array axis i (left-right)
    candidates: list[tuple[int, tuple[int, int]]] = []
    for s in order[: first_lung + depth + 1]:
        sl = np.take(strict, s, axis=axis)
        b = np.take(body, s, axis=axis)
        if not b.any() or not sl.any():
            continue
        lab2, n2 = ndi.label(sl)
        areas = np.bincount(lab2.ravel()) * pixel_mm2
        cols = np.nonzero(b)[lr_axis_2d]
        mid, width = float(cols.mean()), max(float(np.ptp(cols)), 1.0)
        lung_lr = np.nonzero(np.take(lung, s, axis=axis))[lr_axis_2d]
        for v in np.nonzero((areas >= 100.0) & (areas <= 800.0))[0]:
            if v == 0:
                continue
            pts = np.nonzero(lab2 == v)
            extent = [float(np.ptp(p)) * d + d for p, d in zip(pts, np.delete(sp, axis))]
            if max(extent) > 2.2 * min(extent):
                continue  # not round
            c_lr = float(pts[lr_axis_2d].mean())
            if abs(c_lr - mid) / width > 0.15:
                continue
            if lung_lr.size and not ((lung_lr < c_lr).any() and (lung_lr > c_lr).any()):
                continue  # not between the lungs
            candidates.append((s, (int(pts[0][0]), int(pts[1][0]))))
        if len(candidates) >= 6:
            break
    for s, (a0, a1) in candidates[:6]:
        seed: list[int] = [0, 0, 0]
        seed[axis], seed[others[0]], seed[others[1]] = s, a0, a1
        for thr in (-900.0, -950.0, -980.0):
            lab3, _ = ndi.label((hu < thr) & body)
            v = lab3[tuple(seed)]
            if v == 0:
                break
            grown = lab3 == v
            if grown.sum() * voxel_ml > 250.0:
                continue  # leaked into lung or bowel: try a stricter threshold
            per_slice = np.array([np.take(grown, k, axis=axis).sum() for k in range(n_slices)])
            per_slice_mm2 = per_slice[per_slice > 0] * pixel_mm2
            length_mm = per_slice_mm2.size * sp[axis]
            if (length_mm >= 30.0 and np.percentile(per_slice_mm2, 90) <= 600.0
                    and per_slice_mm2.max() <= 1500.0):
                return grown
            break
    warnings.append("no trachea found in the field of view (or it could not be separated "
                    "from the lungs): airways not segmented")
    return np.zeros(hu.shape, dtype=bool)


def _bowel_gas_ct(hu: NDArray[np.float32], body: NDArray[np.bool_], lung: NDArray[np.bool_],
                  airway: NDArray[np.bool_], ref: sitk.Image,
                  spacing: NDArray[np.float64]) -> NDArray[np.bool_]:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    near = _dilate(lung | airway, ref, [1, 1, 1])
    gas = (hu < -500.0) & body & ~near
    return _drop_small(gas, 0.5 / voxel_ml)


def contrast_lumens(hu: NDArray[Any], body: NDArray[np.bool_], voxel_ml: float
                    ) -> NDArray[np.bool_]:
    """Homogeneous, thick 150–500 HU regions: contrast-filled vessel lumens (or enhanced organs).

    Voxels whose 3×3×3 mean is in 150–500 HU with a local standard deviation
    under 35 HU (cancellous bone is heterogeneous, a filled lumen is not), opened
    by one voxel (thick regions only), components of at least 1 ml, lying in soft
    tissue (median of a 2-voxel shell around them below 120 HU; marrow is
    surrounded by more bone).
    """
    h = hu.astype(np.float32, copy=False)
    mean = ndi.uniform_filter(h, 3)
    sq = ndi.uniform_filter(h * h, 3)
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    cand = (mean > 150.0) & (mean < 500.0) & (std < 35.0) & body
    cand = ndi.binary_dilation(ndi.binary_erosion(cand)) & (h > 100.0)
    cand = _drop_small(cand, 1.0 / voxel_ml)
    # marrow continues into bone around it, a vessel lies in soft tissue and fat:
    # keep components whose surrounding 2-voxel shell has a median below 120 HU
    lab, n = ndi.label(cand)
    if n == 0:
        return cand
    grown = ndi.grey_dilation(lab, size=(5, 5, 5))
    shell = (grown > 0) & (lab == 0)
    medians = np.atleast_1d(ndi.median(h, grown * shell, np.arange(1, n + 1)))
    keep = np.concatenate([[False], medians < 120.0])
    return keep[lab]


def is_contrast_enhanced(hu: NDArray[Any], body: NDArray[np.bool_], voxel_ml: float, *,
                         min_ml: float = 10.0) -> tuple[bool, float]:
    """Whether a CT shows iodinated contrast in its vessels (aorta-range lumens in the body).

    Parameters
    ----------
    hu : numpy.ndarray
        Intensities (HU) ``[k, j, i]``.
    body : numpy.ndarray of bool
        Body mask on the same grid.
    voxel_ml : float
        Volume of one voxel in ml.
    min_ml : float
        Lumen volume (ml) needed to call the scan contrast-enhanced.

    Returns
    -------
    enhanced : bool
    lumen_ml : float
        Volume (ml) of homogeneous 150–500 HU lumens found (:func:`contrast_lumens`).
    """
    ml = float(contrast_lumens(hu, body, voxel_ml).sum() * voxel_ml)
    return ml >= min_ml, ml


def _split_bone_from_lumens(hu: NDArray[np.float32], bone: NDArray[np.bool_],
                            lumens: NDArray[np.bool_], ref: sitk.Image,
                            reach_mm: float | None = None) -> NDArray[np.bool_]:
    """Give back to the vessels what the bone hysteresis took from contrast-filled lumens.

    Watershed on the gradient magnitude from two marker sets: cortex (above
    400 HU and above the lumens' 95th percentile + 50 HU, two voxels away from
    any lumen) and the lumens; voxels reached by neither stay bone.
    """
    from skimage.segmentation import watershed

    cortex_hu = max(400.0, float(np.percentile(hu[lumens], 95)) + 50.0)
    # bone connected to a lumen can be contested (a vessel tree can run far along bone)
    region = bone | lumens
    if reach_mm is not None:
        region = (bone & _dilate(lumens, ref, _radius_vox(reach_mm,
                                                          np.asarray(ref.GetSpacing())))) | lumens
    nz = np.nonzero(region)
    box = tuple(slice(max(0, int(v.min()) - 2), min(sz, int(v.max()) + 3))
                for v, sz in zip(nz, hu.shape))
    h, b, lu, reg = hu[box], bone[box], lumens[box], region[box]
    markers = np.zeros(h.shape, dtype=np.int32)
    markers[(h > cortex_hu) & b & ~ndi.binary_dilation(lu, iterations=2)] = 1
    markers[lu] = 2
    grad = ndi.gaussian_gradient_magnitude(h.astype(np.float32, copy=False), 0.7)
    ws = watershed(grad, markers, mask=reg)
    out = bone.copy()
    out[box] = np.where(reg, (ws == 1) | (b & (ws == 0)), b)
    return out


def _vessels_ct(hu: NDArray[np.float32], body: NDArray[np.bool_], bone: NDArray[np.bool_],
                lumens: NDArray[np.bool_], ref: sitk.Image,
                spacing: NDArray[np.float64], max_voxels: int = 600_000) -> NDArray[np.bool_]:
    """Contrast-filled vessels: enhanced components holding a lumen or a tubular seed.

    Enhanced tissue (> 130 HU, in the body, not bone) is split in connected
    components. Those touching a lumen (:func:`contrast_lumens`: the thick
    vessels, about 6–25 mm) are kept. The others (small vessels, noise) are kept
    only if the multi-scale Frangi objectness (sigmas 1, 2, 4 mm: vessels of about
    2–12 mm; scale-normalised, bright tubes) is high in them; it is computed on
    their bounding box only, binned so that at most ``max_voxels`` voxels are
    filtered (ITK's filter is slow).
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    enhanced = ((hu > 130.0) & body & ~_dilate(bone, ref, [1, 1, 1])) | lumens
    if not enhanced.any():
        return enhanced
    lab, n = ndi.label(enhanced)
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(lab[lumens])] = True
    keep[0] = False
    counts = np.bincount(lab.ravel(), minlength=n + 1)
    other = ~keep & (counts * voxel_ml >= 0.2)
    other[0] = False
    cands = other[lab]
    if cands.any():
        nz = np.nonzero(cands)
        lo = [max(0, int(v.min()) - 3) for v in nz]
        hi = [min(sz, int(v.max()) + 4) for v, sz in zip(nz, hu.shape)]
        crop = tuple(slice(a, b) for a, b in zip(lo, hi))
        sub = np.clip(hu[crop], -200.0, 600.0).astype(np.float32)
        img = sitk.GetImageFromArray(sub)
        img.SetSpacing(ref.GetSpacing())
        f = max(1, int(np.ceil((sub.size / max_voxels) ** (1 / 3))))
        work = sitk.BinShrink(img, [f, f, f]) if f > 1 else img
        min_sp = float(min(work.GetSpacing()))
        sigmas = [sg for sg in (1.0, 2.0, 4.0) if sg >= 0.5 * min_sp] or [min_sp]
        best: NDArray[np.float32] | None = None
        for sigma in sigmas:
            sm = sitk.SmoothingRecursiveGaussian(work, sigma)
            obj = sitk.ObjectnessMeasure(sm, objectDimension=1, brightObject=True,
                                         scaleObjectnessMeasure=False, alpha=0.5, beta=0.5,
                                         gamma=5.0)
            if f > 1:
                obj = sitk.Resample(obj, img, sitk.Transform(), sitk.sitkLinear, 0.0,
                                    sitk.sitkFloat32, True)
            arr = sitk.GetArrayFromImage(obj) * np.float32(sigma ** 2)
            best = arr if best is None else np.maximum(best, arr)
        assert best is not None
        inside = best[cands[crop]]
        if inside.size and float(inside.max()) > 0:
            tube = np.zeros(hu.shape, dtype=bool)
            tube[crop] = cands[crop] & (best > 0.2 * float(np.percentile(inside, 99.5)))
            keep[np.unique(lab[tube])] = True
            keep[0] = False
    return _drop_small(keep[lab], 0.2 / voxel_ml)


# ---------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------
def _prepare(image: ImageVolume, working_spacing_mm: float
             ) -> tuple[sitk.Image, sitk.Image, list[int], NDArray[np.float32]]:
    if image.array.size == 0:
        raise InputError("the image is empty")
    factors = _shrink_factors(image.spacing_mm, working_spacing_mm)
    arr = image.array
    if arr.dtype not in (np.int16, np.uint8, np.uint16, np.int32, np.float32, np.float64):
        arr = arr.astype(np.float32)
    full = to_sitk(image, arr)  # native type: no 4-byte copy of the whole volume
    if any(f > 1 for f in factors):
        # bin-average in float so small HU differences are not rounded away
        work = sitk.BinShrink(sitk.Cast(full, sitk.sitkFloat32), factors)
    else:
        work = sitk.Cast(full, sitk.sitkFloat32)
    hu = sitk.GetArrayFromImage(work)
    return full, work, factors, hu


def segment_ct(
    image: ImageVolume,
    *,
    working_spacing_mm: float = 2.0,
    table_radius_mm: float = 6.0,
    vessels: bool | None = None,
    contrast_min_ml: float = 10.0,
    progress: ProgressCallback | None = None,
) -> tuple[LabelMap, AutoSegmentationReport]:
    """Automatic structures of a CT: body, bone, lung, airway, bowel gas, contrast vessels.

    Parameters
    ----------
    image : ImageVolume
        CT in Hounsfield units (orthogonal grid).
    working_spacing_mm : float
        Approximate spacing (mm) of the grid the pipeline runs on; the image is
        binned by integer factors to reach it (never upsampled).
    table_radius_mm : float
        Radius (mm) of the 2-D opening that detaches the table and blankets.
    vessels : bool or None
        Segment contrast vessels: None = only if the scan is contrast-enhanced,
        False = never, True = always try (a warning says if no contrast is seen).
    contrast_min_ml : float
        Volume (ml) of enhanced soft tissue that marks a scan as contrast-enhanced.
    progress : ProgressCallback, optional
        Receives fractions and step names.

    Returns
    -------
    labels : LabelMap
        Structures "body", "bone", "lung", "airway", "bowel_gas",
        "vessels_contrast" (those found) on the image's grid.
    report : AutoSegmentationReport
        Volumes, timings and warnings.
    """
    rep = AutoSegmentationReport(modality="CT")
    timer = _Timer(rep)
    report(progress, 0.0, "preparing working grid")
    full, work, factors, hu = _prepare(image, working_spacing_mm)
    spacing = np.asarray(work.GetSpacing(), dtype=float)
    rep.working_spacing_mm = tuple(float(s) for s in spacing)  # type: ignore[assignment]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    axis = superior_array_axis(image)
    index_axis = 2 - axis
    sup_last = bool(image.direction[2, index_axis] > 0)  # superior = higher array index
    if float(np.percentile(hu, 1)) > -500.0:
        rep.warnings.append("this CT has almost no air (1st percentile above -500 HU): check "
                            "that it is a CT in Hounsfield units")
    timer.lap("prepare")

    report(progress, 0.1, "body contour")
    body = _body_ct(hu, work, axis, table_radius_mm)
    if not body.any():
        raise InputError("no body found in the CT (nothing above -300 HU): is it a CT in HU?")
    timer.lap("body")

    report(progress, 0.25, "bone")
    bone = _bone_ct(hu, body, axis, spacing)
    timer.lap("bone")

    report(progress, 0.35, "contrast detection")
    lumens = contrast_lumens(hu, body, voxel_ml)
    ml = float(lumens.sum() * voxel_ml)
    enhanced = ml >= contrast_min_ml
    rep.contrast_enhanced, rep.contrast_ml = enhanced, ml
    if enhanced:
        bone = _split_bone_from_lumens(hu, bone, lumens, work)
    timer.lap("contrast")

    report(progress, 0.4, "lungs and airways")
    lung, airway = _lungs_airway_ct(hu, body, axis, spacing, rep.warnings, sup_last)
    timer.lap("lung_airway")

    report(progress, 0.5, "bowel gas")
    gas = _bowel_gas_ct(hu, body, lung, airway, work, spacing)
    timer.lap("bowel_gas")

    vessel_mask = np.zeros(hu.shape, dtype=bool)
    if vessels is False:
        pass
    elif enhanced or vessels:
        report(progress, 0.6, "vesselness (contrast-enhanced scan)")
        vessel_mask = _vessels_ct(hu, body, bone, lumens, work, spacing)
        if not enhanced:
            rep.warnings.append(f"vessels requested but the scan does not look contrast-"
                                f"enhanced ({ml:.1f} ml of homogeneous 150–500 HU lumens)")
    else:
        rep.warnings.append(
            f"scan is not contrast-enhanced ({ml:.1f} ml of homogeneous 150–500 HU lumens, "
            f"< {contrast_min_ml:g} ml): vessels not segmented; add them from another "
            f"segmentation or draw them"
        )
    timer.lap("vessels")

    report(progress, 0.8, "mapping to the full grid")
    named = [("body", body), ("bone", bone), ("lung", lung), ("airway", airway),
             ("bowel_gas", gas), ("vessels_contrast", vessel_mask)]
    masks: list[tuple[str, NDArray[np.bool_]]] = []
    for name, m in named:
        if not m.any():
            continue
        masks.append((name, _to_full(m, work, full, factors)))
    # keep the inner structures inside the body and disjoint from each other
    if masks:
        body_full = masks[0][1] if masks[0][0] == "body" else None
        taken = np.zeros(image.shape, dtype=bool)
        for n, (name, m) in enumerate(masks):
            if name == "body":
                continue
            if body_full is not None:
                m &= body_full
            m &= ~taken
            taken |= m
            masks[n] = (name, m)
    timer.lap("to_full_grid")
    report(progress, 0.95, "packing labels")
    labels = _pack(masks, image)
    labels.warnings.extend(rep.warnings)
    rep.structures = _rows(labels)
    timer.lap("pack")
    report(progress, 1.0, "done")
    return labels, rep


def _pack(masks: list[tuple[str, NDArray[np.bool_]]], image: ImageVolume) -> LabelMap:
    grid = image
    if not masks:
        return LabelMap([np.zeros(image.shape, dtype=np.uint8)], grid, [])
    # body alone in layer 0, inner structures together in layer 1 (they are disjoint)
    layers: list[NDArray[np.uint8]] = []
    structures = []
    body = [m for n, m in masks if n == "body"]
    inner = [(n, m) for n, m in masks if n != "body"]
    if body:
        layers.append(body[0].astype(np.uint8))
        structures.append(Structure.from_name("body", 1, 0,
                                              category=STRUCTURE_CATEGORIES["body"]))
    if inner:
        layer = np.zeros(image.shape, dtype=np.uint8)
        idx = len(layers)
        for label, (name, m) in enumerate(inner, start=1):
            layer[m] = label
            structures.append(Structure.from_name(name, label, idx,
                                                  category=STRUCTURE_CATEGORIES[name]))
        layers.append(layer)
    return LabelMap(layers, image, structures)


def _rows(labels: LabelMap) -> list[dict[str, Any]]:
    return [{"name": r["name"], "category": r["category"], "voxels": r["voxels"],
             "volume_ml": r["volume_ml"]} for r in labels.summary()]


def segment_mr(
    image: ImageVolume,
    *,
    working_spacing_mm: float = 2.0,
    progress: ProgressCallback | None = None,
) -> tuple[LabelMap, AutoSegmentationReport]:
    """Body contour of an MR image (other structures are not available from MR).

    The foreground is the intensity above an Otsu threshold of the (non-zero)
    image, opened, the largest component kept and holes filled slice by slice.
    """
    rep = AutoSegmentationReport(modality="MR")
    timer = _Timer(rep)
    report(progress, 0.0, "preparing working grid")
    full, work, factors, arr = _prepare(image, working_spacing_mm)
    axis = superior_array_axis(image)
    spacing = np.asarray(work.GetSpacing(), dtype=float)
    rep.working_spacing_mm = tuple(float(s) for s in spacing)  # type: ignore[assignment]
    timer.lap("prepare")
    report(progress, 0.2, "body contour")
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(work, float(max(spacing))))
    positive = smooth[smooth > 0]
    if positive.size == 0:
        raise InputError("the MR image has no positive intensities: no body to find")
    from skimage.filters import threshold_otsu

    thr = float(threshold_otsu(positive)) * 0.5
    fg = smooth > thr
    fg = _largest_component(_opening(fg, work, _radius_vox(4.0, spacing, 2 - axis)))
    body = _fill_holes_2d(fg, axis)
    timer.lap("body")
    masks = [("body", _to_full(body, work, full, factors))] if body.any() else []
    labels = _pack(masks, image)
    rep.warnings.append("MR: only the body contour is segmented automatically; bone, lung, "
                        "airway, bowel gas and vessels are not available from MR intensities "
                        "(load a segmentation or use an external segmenter such as "
                        "TotalSegmentator's total_mr task)")
    labels.warnings.extend(rep.warnings)
    rep.structures = _rows(labels)
    timer.lap("pack")
    report(progress, 1.0, "done")
    return labels, rep


def segment_auto(
    image: ImageVolume,
    *,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> tuple[LabelMap, AutoSegmentationReport]:
    """Dispatch on modality: :func:`segment_ct` for CT, :func:`segment_mr` for MR.

    An image with no modality is treated as CT when it has HU-like values
    (below -500 somewhere), else as MR; a warning says so.
    """
    modality = (image.modality or "").upper()
    guessed = ""
    if modality not in ("CT", "MR"):
        low = float(np.percentile(image.array[::4, ::4, ::4], 1))
        modality = "CT" if low < -500.0 else "MR"
        guessed = (f"modality {image.modality or '(unknown)'!r}: treated as {modality} "
                   f"from its intensities")
    if modality == "CT":
        labels, rep = segment_ct(image, progress=progress, **options)
    else:
        labels, rep = segment_mr(image, progress=progress,
                                 **{k: v for k, v in options.items()
                                    if k == "working_spacing_mm"})
    if guessed:
        rep.warnings.insert(0, guessed)
        labels.warnings.insert(0, guessed)
    return labels, rep


#: Name of the safety-net structure for gas no automatic structure claims.
UNCLASSIFIED_GAS = "gas_unclassified"
#: Below this (HU) a voxel inside the body is gas.
GAS_THRESHOLD_HU = -400.0
#: Margin (mm) kept from unclassified gas (as from lung).
UNCLASSIFIED_GAS_MARGIN_MM = 5.0
_GAS_STRUCTURES = ("lung", "airway", "bowel_gas")


def add_unclassified_gas(image: ImageVolume, labels: LabelMap) -> tuple[LabelMap, float, int]:
    """Add gas inside the body that no automatic structure claimed, as forbidden.

    A safety net behind the classic segmentation: voxels below
    :data:`GAS_THRESHOLD_HU` inside the ``body`` structure that are neither in nor
    next to (26-neighbourhood) ``lung``/``airway``/``bowel_gas`` (the next voxel is
    those structures' partial-volume rim, already within their margins; leaving it
    out keeps lung biopsies possible). They become structure :data:`UNCLASSIFIED_GAS`
    (forbidden, margin :data:`UNCLASSIFIED_GAS_MARGIN_MM`). On MR (no HU scale)
    nothing is added.

    Returns
    -------
    labels : LabelMap
    volume_ml : float
        Volume added (ml).
    components : int
        Number of gas pockets added.
    """
    if str(image.modality).upper() == "MR" or "body" not in labels.names:
        return labels, 0.0, 0
    body = labels.mask("body")
    known = np.zeros(body.shape, dtype=bool)
    for name in _GAS_STRUCTURES:
        if name in labels.names:
            known |= labels.mask(name)
    cube = np.ones((3, 3, 3), dtype=bool)
    near_known = ndi.binary_dilation(known, structure=cube) if known.any() else known
    mask = body & (np.asarray(image.array) < GAS_THRESHOLD_HU) & ~near_known
    if not mask.any():
        return labels, 0.0, 0
    parts = int(ndi.label(mask, structure=cube)[1])
    out = labels.with_structure(UNCLASSIFIED_GAS, mask, category=Category.OTHER, forbidden=True,
                                margin_mm=UNCLASSIFIED_GAS_MARGIN_MM)
    return out, float(mask.sum() * image.voxel_volume_ml), parts


def segment_for_planning(
    image: ImageVolume,
    *,
    lesion_seed_lps: Any = None,
    lesion_radius_mm: float | None = None,
    lesion_required: bool = True,
    progress: ProgressCallback | None = None,
) -> tuple[LabelMap, dict[str, Any]]:
    """Everything a plan needs from an image with no segmentation, in one call.

    Runs :func:`segment_auto`; then, if ``lesion_seed_lps`` is given,
    :func:`~ir_planner.segmentation.lesion.segment_lesion`, adding the result as
    structure ``"lesion"`` (category target); then the unclassified-gas safety net
    (:func:`add_unclassified_gas`). Used by ``ir-planner plan`` without ``--labels``
    (and by any other front end that plans on an unsegmented image).

    Parameters
    ----------
    lesion_required : bool
        If False, a seed that is not in a lesion is recorded in the report
        (``lesion_error``) instead of raising, and the plan can aim at the point.

    Returns
    -------
    labels : LabelMap
    report : dict
        The automatic report (:meth:`AutoSegmentationReport.to_dict`) plus
        ``lesion`` (volume, diameters, ... or None), ``lesion_error``,
        ``unclassified_gas`` (components, volume_ml, threshold_hu, margin_mm),
        ``vessels_avoided`` and ``airway_avoided`` (whether those were segmented).

    Raises
    ------
    InputError
        If ``lesion_required`` and the seed is not in a lesion (reason in the message).
    """
    from ir_planner.core.progress import subrange
    from ir_planner.segmentation.lesion import segment_lesion

    labels, rep = segment_auto(image, progress=subrange(progress, 0.0, 0.95))
    out = rep.to_dict()
    out["lesion"], out["lesion_error"] = None, ""
    if lesion_seed_lps is not None:
        try:
            lesion = segment_lesion(image, lesion_seed_lps, radius_mm=lesion_radius_mm)
        except InputError as exc:
            if lesion_required:
                raise
            out["lesion_error"] = str(exc)
        else:
            name = "lesion" if "lesion" not in labels.names else "lesion_click"
            labels = labels.with_structure(name, lesion.mask, category=Category.TARGET)
            out["lesion"] = {"name": name, **lesion.to_dict()}
    labels, gas_ml, gas_parts = add_unclassified_gas(image, labels)
    out["unclassified_gas"] = {"components": gas_parts, "volume_ml": round(gas_ml, 3),
                               "threshold_hu": GAS_THRESHOLD_HU,
                               "margin_mm": UNCLASSIFIED_GAS_MARGIN_MM}
    out["vessels_avoided"] = any(
        s.category is Category.VESSEL and labels.voxel_count(s) > 0 for s in labels)
    out["airway_avoided"] = any(
        s.category is Category.AIRWAY and labels.voxel_count(s) > 0 for s in labels)
    report(progress, 1.0, "segmentation done")
    return labels, out
