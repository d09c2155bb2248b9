"""DICOM Segmentation (SEG) objects → :class:`~ir_planner.core.labels.LabelMap`.

Each segment becomes one structure; overlapping segments are kept (they go to
different layers). Binary and fractional SEGs are read; a fractional pixel
belongs to the segment when its value is at least half the maximum fractional
value. Names come from SegmentLabel; when the label is not a known structure
name, the SegmentedPropertyType and then SegmentedPropertyCategory code meanings
give the category; RecommendedDisplayCIELabValue gives the colour.

With an ``image`` the frames are matched to its slices by plane position (the
SEG must share the image's frame of reference); without one, the grid is built
from the SEG's own plane positions, orientation and pixel spacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ir_planner.core.catalog import lookup
from ir_planner.core.errors import GeometryError, SegmentationReadError
from ir_planner.core.labels import LabelMap
from ir_planner.core.progress import ProgressCallback, report
from ir_planner.core.volume import ImageVolume
from ir_planner.io.seg_common import LayerPacker, describe_grid, resample_labels, unique_name

__all__ = ["read_dicom_seg", "cielab_to_rgb"]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def cielab_to_rgb(value: Any) -> tuple[float, float, float]:
    """DICOM-encoded CIELab (three 0–65535 integers, D65) → sRGB in [0, 1].

    Examples
    --------
    >>> [round(c, 2) for c in cielab_to_rgb([65535, 32896, 32896])]
    [1.0, 1.0, 1.0]
    """
    v = [float(x) for x in value]
    lum = v[0] / 65535.0 * 100.0
    a = v[1] / 65535.0 * 255.0 - 128.0
    b = v[2] / 65535.0 * 255.0 - 128.0
    fy = (lum + 16.0) / 116.0
    fx, fz = fy + a / 500.0, fy - b / 200.0

    def finv(t: float) -> float:
        return t**3 if t > 6.0 / 29.0 else 3 * (6.0 / 29.0) ** 2 * (t - 4.0 / 29.0)

    xyz = np.array([0.950489 * finv(fx), finv(fy), 1.088840 * finv(fz)])
    m = np.array([[3.2404542, -1.5371385, -0.4985314],
                  [-0.9692660, 1.8760108, 0.0415560],
                  [0.0556434, -0.2040259, 1.0572252]])
    lin = np.clip(m @ xyz, 0.0, 1.0)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    out = np.clip(srgb, 0.0, 1.0)
    return (float(out[0]), float(out[1]), float(out[2]))


@dataclass
class _Frame:
    index: int
    segment: int
    ipp: NDArray[np.float64]
    row_cos: NDArray[np.float64]  # direction of increasing column index
    col_cos: NDArray[np.float64]  # direction of increasing row index
    spacing_rc: tuple[float, float]  # (between rows, between columns) mm


def _item(ds: Any, frame_item: Any, seq: str) -> Any:
    for src in (frame_item, ds.get("SharedFunctionalGroupsSequence", [None])[0]):
        if src is not None and seq in src and len(src[seq].value) > 0:
            return src[seq].value[0]
    return None


def _frames(ds: Any, p: Path) -> list[_Frame]:
    n_frames = int(ds.get("NumberOfFrames", 1))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    frames = []
    for n in range(n_frames):
        item = per_frame[n] if per_frame is not None and n < len(per_frame) else None
        pos = _item(ds, item, "PlanePositionSequence")
        ori = _item(ds, item, "PlaneOrientationSequence")
        meas = _item(ds, item, "PixelMeasuresSequence")
        ident = _item(ds, item, "SegmentIdentificationSequence")
        if pos is None or ori is None or meas is None or ident is None:
            raise SegmentationReadError(
                f"{p}: frame {n + 1} lacks plane position, orientation, pixel spacing or "
                "segment identification; only volumetric (patient-coordinate) SEGs are supported"
            )
        try:
            ipp = np.array([float(v) for v in pos.ImagePositionPatient])
            iop = np.array([float(v) for v in ori.ImageOrientationPatient])
            ps = [float(v) for v in meas.PixelSpacing]
            seg_no = int(ident.ReferencedSegmentNumber)
        except (AttributeError, TypeError, ValueError) as exc:
            raise SegmentationReadError(f"{p}: frame {n + 1} has malformed geometry ({exc})") from exc
        frames.append(_Frame(n, seg_no, ipp, iop[:3], iop[3:], (ps[0], ps[1])))
    return frames


def _own_grid(ds: Any, frames: list[_Frame], rows: int, cols: int, p: Path) -> ImageVolume:
    """The grid spanned by the SEG's own frames (regular slice step required)."""
    f0 = frames[0]
    for f in frames:
        if not (np.allclose(f.row_cos, f0.row_cos, atol=1e-4)
                and np.allclose(f.col_cos, f0.col_cos, atol=1e-4)
                and np.allclose(f.spacing_rc, f0.spacing_rc, rtol=1e-4)):
            raise SegmentationReadError(
                f"{p}: frames differ in orientation or pixel spacing; not supported yet "
                "without an image (give the image the SEG was made on)"
            )
    normal = np.cross(f0.row_cos, f0.col_cos)
    u = np.array([f.ipp @ f0.row_cos for f in frames])
    v = np.array([f.ipp @ f0.col_cos for f in frames])
    if np.ptp(u) > 1e-2 or np.ptp(v) > 1e-2:
        raise SegmentationReadError(
            f"{p}: frames have different in-plane origins; not supported yet without an "
            "image (give the image the SEG was made on)"
        )
    s = np.array([f.ipp @ normal for f in frames])
    uniq: list[float] = []
    for value in np.sort(s):
        if not uniq or value - uniq[-1] > 1e-3:
            uniq.append(float(value))
    meas = _item(ds, None, "PixelMeasuresSequence")
    if len(uniq) > 1:
        step = min(b - a for a, b in zip(uniq, uniq[1:]))
        ratios = (np.asarray(uniq) - uniq[0]) / step
        if np.any(np.abs(ratios - np.round(ratios)) > 0.01):
            raise SegmentationReadError(
                f"{p}: frame positions are irregular (slice steps "
                f"{sorted({round(b - a, 3) for a, b in zip(uniq, uniq[1:])})} mm); give the "
                "image the SEG was made on"
            )
        nk = int(round(ratios[-1])) + 1
    else:
        step = 0.0
        for key in ("SpacingBetweenSlices", "SliceThickness"):
            if meas is not None and meas.get(key) not in (None, ""):
                step = float(meas.get(key))
                break
        step = step if step > 0 else 1.0
        nk = 1
    origin = u[0] * f0.row_cos + v[0] * f0.col_cos + uniq[0] * normal
    affine = np.eye(4)
    affine[:3, 0] = f0.row_cos * f0.spacing_rc[1]
    affine[:3, 1] = f0.col_cos * f0.spacing_rc[0]
    affine[:3, 2] = normal * step
    affine[:3, 3] = origin
    return ImageVolume(
        np.zeros((nk, rows, cols), dtype=np.uint8), affine, modality="SEG",
        study_uid=str(ds.get("StudyInstanceUID", "")), series_uid=str(ds.get("SeriesInstanceUID", "")),
        metadata={"source": str(p), "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", ""))},
    )


def _placement(f: _Frame, grid: ImageVolume) -> tuple[float, int, int] | None:
    """(continuous k, integer i0, j0) when the frame's pixels are grid voxels, else None."""
    c0 = grid.world_to_index(f.ipp)
    di = grid.world_to_index(f.ipp + f.row_cos * f.spacing_rc[1]) - c0
    dj = grid.world_to_index(f.ipp + f.col_cos * f.spacing_rc[0]) - c0
    if not (np.allclose(di, [1, 0, 0], atol=1e-3) and np.allclose(dj, [0, 1, 0], atol=1e-3)):
        return None
    if np.any(np.abs(c0[:2] - np.round(c0[:2])) > 0.01):
        return None
    return float(c0[2]), int(round(c0[0])), int(round(c0[1]))


def _segment_masks(
    pixels: NDArray[Any], frames: list[_Frame], grid: ImageVolume, warnings: list[str],
    threshold: float, p: Path,
) -> dict[int, dict[int, NDArray[np.bool_]]] | None:
    """Per segment, per grid slice k, the 2-D mask on the grid; None if not aligned."""
    nk, nj, ni = grid.shape
    out: dict[int, dict[int, NDArray[np.bool_]]] = {}
    off_plane = 0
    lost = 0
    for f in frames:
        place = _placement(f, grid)
        if place is None:
            return None
        kf, i0, j0 = place
        k = int(round(kf))
        frame = pixels[f.index] >= threshold
        if abs(kf - k) > 0.05:
            off_plane += 1
        if not frame.any():
            continue
        if not 0 <= k < nk:
            lost += 1
            continue
        rows, cols = frame.shape
        js, je = max(0, j0), min(nj, j0 + rows)
        is_, ie = max(0, i0), min(ni, i0 + cols)
        if je <= js or ie <= is_:
            lost += 1
            continue
        sub = frame[js - j0: je - j0, is_ - i0: ie - i0]
        if sub.sum() != frame.sum():
            lost += 1
        target = out.setdefault(f.segment, {}).setdefault(k, np.zeros((nj, ni), dtype=bool))
        target[js:je, is_:ie] |= sub
    if off_plane:
        warnings.append(
            f"{off_plane} SEG frame(s) lie between image slices; put on the nearest slice"
        )
    if lost and not out:
        raise GeometryError(
            f"{p}: none of the SEG's segmented frames falls inside the image grid "
            f"[{describe_grid(grid)}]; is it the segmentation of another scan?"
        )
    if lost:
        warnings.append(
            f"{lost} SEG frame(s) with segmented pixels fall (partly) outside the image grid; "
            "those pixels were dropped"
        )
    return out


def read_dicom_seg(
    path: str | Path, *, image: ImageVolume | None = None,
    progress: ProgressCallback | None = None,
) -> LabelMap:
    """Read a DICOM SEG file.

    Parameters
    ----------
    path : str or Path
        The SEG file.
    image : ImageVolume, optional
        Image to map the segments onto (same frame of reference required).
    progress : ProgressCallback, optional
        Called with (fraction, message).

    Raises
    ------
    SegmentationReadError
        Not a SEG, unreadable, unsupported geometry.
    GeometryError
        SEG and image belong to different frames of reference, or do not overlap.
    """
    import highdicom as hd
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    try:
        ds = pydicom.dcmread(p)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise SegmentationReadError(f"{p}: cannot read DICOM file ({exc})") from exc
    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS:
        raise SegmentationReadError(
            f"{p}: not a DICOM SEG (Modality {ds.get('Modality', '?')}, SOP class "
            f"{ds.get('SOPClassUID', '?')})"
        )
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        pixels = np.asarray(seg.pixel_array)
    except Exception as exc:  # highdicom/pydicom raise many types for bad SEGs
        raise SegmentationReadError(f"{p}: invalid DICOM SEG ({exc})") from exc
    report(progress, 0.3, "decoded SEG frames")
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    warnings: list[str] = []
    frames = _frames(ds, p)
    if len(frames) != pixels.shape[0]:
        raise SegmentationReadError(
            f"{p}: {len(frames)} frame descriptions but {pixels.shape[0]} frames of pixels"
        )
    if str(ds.SegmentationType).upper() == "FRACTIONAL":
        threshold = 0.5 * float(ds.get("MaximumFractionalValue", 255))
        warnings.append("fractional SEG: voxels with fraction ≥ 0.5 belong to the segment")
    else:
        threshold = 0.5
    seg_for = str(ds.get("FrameOfReferenceUID", ""))
    grid: ImageVolume
    masks = None
    if image is not None:
        img_for = str(image.metadata.get("frame_of_reference_uid", ""))
        if img_for and seg_for and img_for != seg_for:
            raise GeometryError(
                f"{p}: the SEG's frame of reference ({seg_for}) differs from the image's "
                f"({img_for}); it was not made on this scan"
            )
        if not img_for:
            warnings.append(
                "the image has no frame of reference UID: SEG placed by patient coordinates "
                "only (cannot check it belongs to this scan)"
            )
        ref_series = {str(item.get("SeriesInstanceUID", ""))
                      for item in ds.get("ReferencedSeriesSequence", [])}
        if image.series_uid and ref_series and image.series_uid not in ref_series:
            warnings.append(
                f"the SEG references series {', '.join(sorted(ref_series))}, not the image's "
                f"series {image.series_uid} (same frame of reference)"
            )
        masks = _segment_masks(pixels, frames, image, warnings, threshold, p)
        grid = image
    if masks is None:
        try:
            grid = _own_grid(ds, frames, int(ds.Rows), int(ds.Columns), p)
        except SegmentationReadError as exc:
            if image is None:
                raise
            raise SegmentationReadError(
                f"{p}: the SEG frames do not coincide with the image's voxels and do not form "
                f"a regular grid to resample from; not supported yet ({exc})"
            ) from exc
        masks = _segment_masks(pixels, frames, grid, warnings, threshold, p)
        if masks is None:  # pragma: no cover - the own grid always fits its frames
            raise SegmentationReadError(f"{p}: cannot place frames on their own grid")
    report(progress, 0.6, "packing segments")
    packer = LayerPacker(grid.shape)
    taken: set[str] = set()
    empty: list[str] = []
    for number in seg.segment_numbers:
        desc = seg.get_segment_description(number)
        prop_type = desc.segmented_property_type
        prop_cat = desc.segmented_property_category
        label = str(desc.segment_label or "").strip()
        name = label or str(prop_type.meaning) or f"segment_{number}"
        attrs: dict[str, Any] = {}
        if not lookup(name).known:
            for hint in (str(prop_type.meaning), str(prop_cat.meaning)):
                info = lookup(hint)
                if info.known:
                    attrs.update(category=info.category, color=info.color,
                                 margin_mm=info.margin_mm, forbidden=info.forbidden)
                    break
        lab = desc.get("RecommendedDisplayCIELabValue")
        if lab is not None:
            attrs["color"] = cielab_to_rgb(lab)
        per_slice = masks.get(int(number), {})
        if not per_slice:
            empty.append(name)
            continue
        ks = sorted(per_slice)
        stack = np.zeros((ks[-1] - ks[0] + 1, grid.shape[1], grid.shape[2]), dtype=bool)
        for k, m in per_slice.items():
            stack[k - ks[0]] = m
        jj = np.flatnonzero(stack.any(axis=(0, 2)))
        ii = np.flatnonzero(stack.any(axis=(0, 1)))
        box = (slice(ks[0], ks[-1] + 1), slice(int(jj[0]), int(jj[-1]) + 1),
               slice(int(ii[0]), int(ii[-1]) + 1))
        crop = stack[:, box[1], box[2]]
        unique = unique_name(name, taken)
        if unique != name:
            warnings.append(f"duplicate segment label {name!r} renamed to {unique!r}")
        packer.add(unique, box, crop, **attrs)
    if empty:
        warnings.append(f"{len(empty)} empty segment(s) dropped: {', '.join(empty)}")
    if not packer.structures:
        raise SegmentationReadError(f"{p}: the SEG contains no segmented pixel")
    result = packer.label_map(grid.with_array(packer.layers[0]) if grid is not image else image,
                              warnings)
    if image is not None and grid is not image:
        warnings_note = (
            "SEG frames do not coincide with the image's voxels "
            f"(SEG grid {describe_grid(grid)}); resampled"
        )
        result = resample_labels(result, image)
        result.warnings.insert(0, warnings_note)
    report(progress, 1.0, f"{len(packer.structures)} segments")
    return result
