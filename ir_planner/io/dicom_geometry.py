"""Geometry of a DICOM series: slice order, spacing, tilt, and the output grid.

Slices are ordered by their position along the slice normal
``n = row_cos × col_cos`` (``dot(IPP, n)``), never by InstanceNumber. When the
positions are evenly spaced along ``n`` the series maps onto a regular grid
directly. Otherwise (missing slices, variable spacing, gantry tilt = IPP steps
not parallel to ``n``) the slices are resampled onto a regular orthogonal grid
(see :func:`resample_to_grid`), like dcm2niix's ``_Eq`` / ``_Tilt_Eq`` output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ir_planner.core.errors import ImageReadError
from ir_planner.io.dicom_scan import FrameHeader

__all__ = ["SeriesGeometry", "analyse_frames", "orientation_code", "resample_to_grid"]

_ORIENT_TOL = 1e-3  # direction cosine difference tolerated within a series
_SPACING_TOL_REL = 0.01
_SPACING_TOL_MM = 1e-3


@dataclass
class SeriesGeometry:
    """The placement of a series' frames and the grid the volume is built on."""

    frames: list[FrameHeader]  # sorted along the normal, odd frames removed
    dropped: list[FrameHeader]
    row_cos: NDArray[np.float64]
    col_cos: NDArray[np.float64]
    normal: NDArray[np.float64]
    depth_mm: NDArray[np.float64]  # dot(IPP, n) of the sorted frames
    offset_col_mm: NDArray[np.float64]  # in-plane offset of each IPP along row_cos
    offset_row_mm: NDArray[np.float64]  # along col_cos
    index_to_lps: NDArray[np.float64]
    nk: int
    needs_resampling: bool
    tilt_deg: float
    steps_mm: NDArray[np.float64]
    out_rows: int
    out_cols: int
    warnings: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows per source frame."""
        return self.frames[0].rows

    @property
    def cols(self) -> int:
        """Columns per source frame."""
        return self.frames[0].cols

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Output spacing along (i, j, k), mm."""
        s = np.linalg.norm(self.index_to_lps[:3, :3], axis=0)
        return (float(s[0]), float(s[1]), float(s[2]))


def orientation_code(direction: NDArray[np.float64]) -> str:
    """Letters (R/L, A/P, I/S) of the dominant LPS direction of each index axis."""
    letters = (("R", "L"), ("A", "P"), ("I", "S"))
    code = []
    for c in range(3):
        col = direction[:, c]
        axis = int(np.argmax(np.abs(col)))
        code.append(letters[axis][1 if col[axis] > 0 else 0])
    return "".join(code)


def _compatible(a: FrameHeader, b: FrameHeader) -> bool:
    """Same frame size, orientation (within 1e-3) and pixel spacing (within 0.1 %)."""
    if a.rows != b.rows or a.cols != b.cols:
        return False
    if np.max(np.abs(a.row_cos - b.row_cos)) > _ORIENT_TOL:
        return False
    if np.max(np.abs(a.col_cos - b.col_cos)) > _ORIENT_TOL:
        return False
    for sa, sb in ((a.row_spacing_mm, b.row_spacing_mm), (a.col_spacing_mm, b.col_spacing_mm)):
        if abs(sa - sb) > 1e-3 * max(abs(sa), abs(sb), 1e-6):
            return False
    return True


#: Largest number of slices of a resampled grid, and of the filled gap (in slices).
_MAX_SLICES = 16384
_MAX_GAP_SLICES = 200


def _check_gaps(
    frames: list[FrameHeader], steps: NDArray[np.float64], step_min: float, nk: int, label: str
) -> None:
    """Refuse slice positions so far apart that filling the gap would invent a volume.

    A slice 1e6 mm away would otherwise become a grid of millions of
    interpolated slices (gigabytes, minutes) before any other check fails.

    Raises
    ------
    ImageReadError
        Naming the two files on either side of the largest gap.
    """
    g = int(np.argmax(steps))
    gap_slices = float(steps[g]) / step_min
    if nk > _MAX_SLICES or gap_slices > _MAX_GAP_SLICES:
        raise ImageReadError(
            f"{label}: slice positions are far apart: {frames[g + 1].path.name} lies "
            f"{float(steps[g]):.6g} mm beyond {frames[g].path.name} (the other slices are "
            f"{step_min:.3g} mm apart); filling that gap would need {nk} slices. A position is "
            "damaged or the folder mixes two acquisitions; read the series with the right files"
        )


def analyse_frames(frames: list[FrameHeader], *, label: str) -> SeriesGeometry:
    """Sort frames along the normal and derive the output grid.

    Parameters
    ----------
    frames : list of FrameHeader
        All image frames of one series.
    label : str
        How to name the series in messages (UID and/or path).

    Raises
    ------
    ImageReadError
        Inconsistent series: several orientations or frame sizes with more than a
        stray frame or two, duplicated slice positions, degenerate orientation.
    """
    if not frames:
        raise ImageReadError(f"{label}: no image frames")
    groups: list[list[FrameHeader]] = []
    for f in frames:
        for group in groups:
            if _compatible(group[0], f):
                group.append(f)
                break
        else:
            groups.append([f])
    ordered = sorted(groups, key=len, reverse=True)
    main = ordered[0]
    dropped = [f for g in ordered[1:] for f in g]
    warnings: list[str] = []
    if dropped:
        if len(dropped) > max(2, len(frames) // 10) or len(main) < 2:
            sizes = ", ".join(
                f"{len(g)} frame(s) {g[0].cols}×{g[0].rows}" for g in ordered[:4]
            )
            raise ImageReadError(
                f"{label}: inconsistent series: frames have different orientations, sizes "
                f"or pixel spacings ({sizes}); it cannot form one volume. Split the series "
                "or choose another one."
            )
        names = ", ".join(sorted({f.path.name for f in dropped})[:3])
        warnings.append(
            f"ignored {len(dropped)} frame(s) with a different orientation or size "
            f"(probably localizer images): {names}"
        )
    ref = main[0]
    row_cos = ref.row_cos / np.linalg.norm(ref.row_cos)
    col_cos = ref.col_cos / np.linalg.norm(ref.col_cos)
    if abs(float(np.dot(row_cos, col_cos))) > 1e-3 or not np.all(np.isfinite(row_cos)):
        raise ImageReadError(
            f"{label}: ImageOrientationPatient row and column cosines are not orthogonal "
            f"({ref.row_cos.tolist()}, {ref.col_cos.tolist()}); the file geometry is corrupt"
        )
    # Re-orthogonalise tiny rounding errors of DS strings.
    col_cos = col_cos - np.dot(col_cos, row_cos) * row_cos
    col_cos /= np.linalg.norm(col_cos)
    normal = np.cross(row_cos, col_cos)
    positions = np.array([f.position_lps for f in main])
    depth = positions @ normal
    order = np.argsort(depth, kind="stable")
    main = [main[i] for i in order]
    positions = positions[order]
    depth = depth[order]
    sx, sy = ref.col_spacing_mm, ref.row_spacing_mm
    if sx <= 0 or sy <= 0:
        raise ImageReadError(f"{label}: PixelSpacing must be > 0 mm; got {[sy, sx]}")
    n = len(main)
    steps = np.diff(depth)
    if n > 1:
        median_step = float(np.median(steps))
        dup = np.flatnonzero(steps < max(_SPACING_TOL_MM, 1e-3 * abs(median_step)))
        if dup.size:
            a, b = main[dup[0]], main[dup[0] + 1]
            detail = (
                f"{a.path.name}" + (f" frame {a.frame + 1}" if a.frame else "")
                + f" and {b.path.name}" + (f" frame {b.frame + 1}" if b.frame else "")
            )
            extra = ""
            if n % (n - dup.size) == 0 and n // (n - dup.size) > 1:
                extra = (
                    f" ({n // (n - dup.size)} images per position: a multi-phase, multi-echo "
                    "or repeated acquisition stored as one series, not supported yet)"
                )
            raise ImageReadError(
                f"{label}: {dup.size} duplicated slice position(s), e.g. {detail} at "
                f"{depth[dup[0]]:.3f} mm along the slice normal{extra}; the series does not "
                "form one volume"
            )
    rel = positions - positions[0]
    off_c = rel @ row_cos
    off_r = rel @ col_cos
    tol_inplane = max(1e-3, 0.01 * min(sx, sy))
    tilt_deg = 0.0
    tilted = False
    if n > 1:
        span = depth[-1] - depth[0]
        shear = np.hypot(off_c[-1], off_r[-1])
        tilt_deg = math.degrees(math.atan2(shear, span))
        tilted = bool(np.max(np.hypot(off_c, off_r)) > tol_inplane)
        if tilted:
            # Offsets linear in depth? (a true gantry tilt)
            line_c = off_c[-1] * (depth - depth[0]) / span
            line_r = off_r[-1] * (depth - depth[0]) / span
            resid = float(np.max(np.hypot(off_c - line_c, off_r - line_r)))
            note = ""
            if resid > max(tol_inplane, 0.05 * min(sx, sy)):
                note = (
                    f"; slice positions do not lie on one line (up to {resid:.2f} mm off), "
                    "each slice was placed at its own position"
                )
            warnings.append(
                f"gantry tilt: slice positions step {tilt_deg:.2f}° off the slice normal; "
                "resampled onto an orthogonal grid (trilinear, slices placed at their "
                f"true positions){note}"
            )
    uneven = False
    if n > 2:
        median_step = float(np.median(steps))
        tol = max(_SPACING_TOL_MM, _SPACING_TOL_REL * median_step)
        uneven = bool(np.max(np.abs(steps - median_step)) > tol)
    if n > 1:
        step_min = float(steps.min())
        step_max = float(steps.max())
        if uneven:
            ratios = steps / step_min
            near_int = np.all(np.abs(ratios - np.round(ratios)) < 0.05)
            out_step = step_min
            nk = int(round((depth[-1] - depth[0]) / out_step)) + 1
            _check_gaps(main, steps, step_min, nk, label)
            out_step = (depth[-1] - depth[0]) / (nk - 1)
            if near_int:
                missing = int(np.sum(np.round(ratios) - 1))
                gaps = np.flatnonzero(np.round(ratios) > 1)
                where = ", ".join(
                    f"between {main[g].path.name} and {main[g + 1].path.name}" for g in gaps[:3]
                )
                warnings.append(
                    f"missing slices: about {missing} slice(s) missing ({where}; steps "
                    f"{step_min:.3f}–{step_max:.3f} mm); the gap(s) were filled by linear "
                    f"interpolation onto a regular {out_step:.3f} mm grid — do not plan "
                    "inside the gap(s)"
                )
            else:
                warnings.append(
                    f"uneven slice spacing: steps {step_min:.3f}–{step_max:.3f} mm; resampled "
                    f"onto a regular {out_step:.3f} mm grid ({nk} slices, linear interpolation)"
                )
        else:
            nk = n
            out_step = (depth[-1] - depth[0]) / (n - 1)
    else:
        nk = 1
        out_step = ref.thickness_mm if ref.thickness_mm and ref.thickness_mm > 0 else 1.0
        warnings.append(
            f"single slice: slice spacing taken from SliceThickness ({out_step:.3f} mm)"
        )
    needs = bool(tilted or uneven)
    affine = np.eye(4)
    affine[:3, 0] = row_cos * sx
    affine[:3, 1] = col_cos * sy
    out_rows, out_cols = ref.rows, ref.cols
    if needs:
        # In-plane grid covering every slice's field of view (like dcm2niix: no data lost).
        c_lo, c_hi = float(off_c.min()), float(off_c.max())
        r_lo, r_hi = float(off_r.min()), float(off_r.max())
        out_cols = ref.cols + int(math.ceil((c_hi - c_lo) / sx - 1e-6))
        out_rows = ref.rows + int(math.ceil((r_hi - r_lo) / sy - 1e-6))
        origin = positions[0] + c_lo * row_cos + r_lo * col_cos
        affine[:3, 2] = normal * out_step
        affine[:3, 3] = origin
        if (out_rows, out_cols) != (ref.rows, ref.cols):
            warnings.append(
                f"in-plane grid enlarged from {ref.cols}×{ref.rows} to {out_cols}×{out_rows} "
                "voxels so that every tilted slice fits"
            )
    else:
        affine[:3, 2] = normal * out_step
        affine[:3, 3] = positions[0]
    return SeriesGeometry(
        frames=main,
        dropped=dropped,
        row_cos=row_cos,
        col_cos=col_cos,
        normal=normal,
        depth_mm=depth,
        offset_col_mm=off_c,
        offset_row_mm=off_r,
        index_to_lps=affine,
        nk=nk,
        needs_resampling=needs,
        tilt_deg=tilt_deg if tilted else 0.0,
        steps_mm=steps,
        out_rows=out_rows,
        out_cols=out_cols,
        warnings=warnings,
    )


def _place_bilinear(
    image: NDArray[np.float32],
    shift_cols: float,
    shift_rows: float,
    out_shape: tuple[int, int],
    fill: float,
) -> NDArray[np.float32]:
    """``out[r, c] = image[r + shift_rows, c + shift_cols]`` (bilinear, ``fill`` outside)."""
    if abs(shift_cols) < 1e-6 and abs(shift_rows) < 1e-6 and out_shape == image.shape:
        return image
    from scipy import ndimage

    return ndimage.affine_transform(
        image,
        np.ones(2),
        offset=(shift_rows, shift_cols),
        output_shape=out_shape,
        order=1,
        mode="constant",
        cval=fill,
        prefilter=False,
        output=np.float32,
    )


def resample_to_grid(
    stack: NDArray[np.floating], geometry: SeriesGeometry, *, fill: float
) -> NDArray[np.float32]:
    """Resample sorted slices onto the regular orthogonal grid of ``geometry``.

    Each output voxel centre ``X`` lies between two source slice planes (along the
    normal). It is projected along the normal onto both planes, each plane is
    sampled bilinearly at that in-plane position (each slice at its own
    ImagePositionPatient, so a gantry tilt is undone), and the two values are
    interpolated linearly by depth: trilinear interpolation in world space.
    Points outside a slice's field of view get ``fill``.
    """
    nk = geometry.nk
    depth = geometry.depth_mm
    origin = geometry.index_to_lps[:3, 3]
    step = geometry.index_to_lps[:3, 2] @ geometry.normal
    d0 = float(origin @ geometry.normal)
    ref_c = float((origin - geometry.frames[0].position_lps) @ geometry.row_cos)
    ref_r = float((origin - geometry.frames[0].position_lps) @ geometry.col_cos)
    sx = geometry.frames[0].col_spacing_mm
    sy = geometry.frames[0].row_spacing_mm
    out_shape = (geometry.out_rows, geometry.out_cols)
    out = np.empty((nk, *out_shape), dtype=np.float32)
    cache: dict[int, NDArray[np.float32]] = {}

    def shifted(s: int) -> NDArray[np.float32]:
        if s not in cache:
            for key in list(cache):
                if key < s - 1:
                    del cache[key]
            cache[s] = _place_bilinear(
                np.asarray(stack[s], dtype=np.float32),
                (ref_c - geometry.offset_col_mm[s]) / sx,
                (ref_r - geometry.offset_row_mm[s]) / sy,
                out_shape,
                fill,
            )
        return cache[s]

    n = len(depth)
    for k in range(nk):
        t = d0 + k * step
        if n == 1:
            out[k] = shifted(0)
            continue
        s = int(np.clip(np.searchsorted(depth, t, side="right") - 1, 0, n - 2))
        w = float(np.clip((t - depth[s]) / (depth[s + 1] - depth[s]), 0.0, 1.0))
        if w <= 1e-6:
            out[k] = shifted(s)
        elif w >= 1 - 1e-6:
            out[k] = shifted(s + 1)
        else:
            np.multiply(shifted(s), 1.0 - w, out=out[k])
            out[k] += w * shifted(s + 1)
    return out
