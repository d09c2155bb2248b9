"""Planar reslices of volumes in LPS: axial, coronal, sagittal and oblique planes.

A :class:`SlicePlane` is a rectangle in patient space with a screen orientation:
``u_lps`` points to the screen's right, ``v_lps`` to the screen's top. The
standard planes follow the radiological display convention (GEOMETRY.md):

* axial: viewed from the feet — patient's right on the screen's left, anterior up;
* coronal: viewed from the front — patient's right on the screen's left, head up;
* sagittal: anterior on the screen's left, head up.

Resampling maps every pixel centre through the volume's ``lps_to_index`` (any
grid: flipped, oblique or sheared), so a slice always shows what is at that place
in the patient, whatever the storage order of the scan.

Pixel convention: ``values[row, col]``, row 0 at the **top** of the screen; pixel
(row, col) is centred at ``centre + (col − (ncols−1)/2)·s·u + ((nrows−1)/2 − row)·s·v``
with ``s`` the pixel spacing in mm.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi

from ir_planner.core.errors import GeometryError, InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume
from ir_planner.scene.style import WindowLevel, apply_window, structure_color

__all__ = [
    "Orientation",
    "SlicePlane",
    "standard_plane",
    "needle_plane",
    "bullseye_plane",
    "reslice",
    "reslice_labels",
    "label_overlay",
    "windowed_rgb",
    "fuse",
    "FusionMode",
    "orientation_letters",
]


class Orientation(str, Enum):  # noqa: UP042
    """The three standard planes."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


#: (u = screen right, v = screen up) of each standard plane, LPS unit vectors.
_AXES: dict[Orientation, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    Orientation.AXIAL: ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    Orientation.CORONAL: ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    Orientation.SAGITTAL: ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
}

_LETTERS = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}


def _direction_letter(vec: NDArray[np.float64]) -> str:
    axis = int(np.argmax(np.abs(vec)))
    return _LETTERS[(axis, 1 if vec[axis] > 0 else -1)]


@dataclass(frozen=True)
class SlicePlane:
    """A rectangle in patient space (LPS mm) with a screen orientation.

    Attributes
    ----------
    centre_lps : tuple of float
        Centre of the rectangle.
    u_lps, v_lps : tuple of float
        Orthonormal screen-right and screen-up directions.
    width_mm, height_mm : float
        Size along u and v.
    spacing_mm : float
        Pixel size.
    name : str
        "axial", "coronal", "sagittal", "along-needle", "bullseye" or custom.
    """

    centre_lps: tuple[float, float, float]
    u_lps: tuple[float, float, float]
    v_lps: tuple[float, float, float]
    width_mm: float
    height_mm: float
    spacing_mm: float
    name: str = "custom"

    def __post_init__(self) -> None:
        u, v = np.asarray(self.u_lps, float), np.asarray(self.v_lps, float)
        if abs(np.linalg.norm(u) - 1) > 1e-6 or abs(np.linalg.norm(v) - 1) > 1e-6 \
                or abs(float(u @ v)) > 1e-6:
            raise GeometryError("slice plane axes u, v must be orthonormal")
        if not (self.width_mm > 0 and self.height_mm > 0 and self.spacing_mm > 0):
            raise GeometryError("slice plane size and spacing must be > 0 mm")

    @property
    def normal_lps(self) -> NDArray[np.float64]:
        """u × v (points toward the viewer)."""
        return np.cross(np.asarray(self.u_lps, float), np.asarray(self.v_lps, float))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the resampled image."""
        return (max(1, int(round(self.height_mm / self.spacing_mm))),
                max(1, int(round(self.width_mm / self.spacing_mm))))

    def pixel_to_lps(self, rows: ArrayLike, cols: ArrayLike) -> NDArray[np.float64]:
        """LPS mm of (possibly fractional) pixel positions; shape (..., 3)."""
        nr, nc = self.shape
        r = np.asarray(rows, dtype=float)
        c = np.asarray(cols, dtype=float)
        du = (c - (nc - 1) / 2.0) * self.spacing_mm
        dv = ((nr - 1) / 2.0 - r) * self.spacing_mm
        return (np.asarray(self.centre_lps, float) + du[..., None] * np.asarray(self.u_lps)
                + dv[..., None] * np.asarray(self.v_lps))

    def lps_to_pixel(self, points_lps: ArrayLike) -> NDArray[np.float64]:
        """(row, col, distance_mm) of LPS points: pixel position and signed distance
        from the plane along its normal; shape (..., 3)."""
        p = np.asarray(points_lps, dtype=float) - np.asarray(self.centre_lps, float)
        nr, nc = self.shape
        cu = p @ np.asarray(self.u_lps) / self.spacing_mm + (nc - 1) / 2.0
        rv = (nr - 1) / 2.0 - p @ np.asarray(self.v_lps) / self.spacing_mm
        return np.stack([rv, cu, p @ self.normal_lps], axis=-1)

    def corners_lps(self) -> NDArray[np.float64]:
        """Outer corners (4, 3): bottom-left, bottom-right, top-right, top-left."""
        c = np.asarray(self.centre_lps, float)
        hu = np.asarray(self.u_lps) * self.width_mm / 2.0
        hv = np.asarray(self.v_lps) * self.height_mm / 2.0
        return np.array([c - hu - hv, c + hu - hv, c + hu + hv, c - hu + hv])

    def moved_to(self, point_lps: ArrayLike) -> "SlicePlane":
        """The same plane shifted along its normal to pass through ``point_lps``."""
        c = np.asarray(self.centre_lps, float)
        n = self.normal_lps
        shift = float((np.asarray(point_lps, float) - c) @ n)
        return replace(self, centre_lps=tuple(float(x) for x in c + shift * n))  # type: ignore[arg-type]

    def scrolled(self, distance_mm: float) -> "SlicePlane":
        """The plane moved by ``distance_mm`` along its normal."""
        c = np.asarray(self.centre_lps, float) + float(distance_mm) * self.normal_lps
        return replace(self, centre_lps=tuple(float(x) for x in c))  # type: ignore[arg-type]


def orientation_letters(plane: SlicePlane) -> dict[str, str]:
    """Patient-direction letters at the screen edges: keys left, right, top, bottom."""
    u, v = np.asarray(plane.u_lps), np.asarray(plane.v_lps)
    return {"right": _direction_letter(u), "left": _direction_letter(-u),
            "top": _direction_letter(v), "bottom": _direction_letter(-v)}


def _extent_on(volume: ImageVolume, u: NDArray[np.float64], v: NDArray[np.float64]
               ) -> tuple[NDArray[np.float64], float, float]:
    corners = volume.extent_lps()
    centre = corners.mean(axis=0)
    du = (corners - centre) @ u
    dv = (corners - centre) @ v
    return centre, float(np.ptp(du)), float(np.ptp(dv))


def _default_spacing(volume: ImageVolume, width: float, height: float,
                     max_pixels: int) -> float:
    s = float(volume.spacing_mm.min())
    return max(s, max(width, height) / max_pixels)


def standard_plane(volume: ImageVolume, orientation: str | Orientation,
                   through_lps: ArrayLike | None = None, *, spacing_mm: float | None = None,
                   max_pixels: int = 512) -> SlicePlane:
    """An axial, coronal or sagittal plane covering ``volume``, through a point.

    Parameters
    ----------
    volume : ImageVolume
        Sets the plane's extent (the whole scan) and default pixel size.
    orientation : {"axial", "coronal", "sagittal"}
    through_lps : array_like (3,), optional
        A point on the plane (the cursor); default the volume's centre.
    spacing_mm : float, optional
        Pixel size; default the finest voxel spacing, coarser if the image would
        exceed ``max_pixels`` along a side.
    """
    try:
        o = Orientation(str(getattr(orientation, "value", orientation)).lower())
    except ValueError as exc:
        raise InputError(f"unknown orientation {orientation!r}; use axial, coronal or "
                         "sagittal") from exc
    u, v = (np.asarray(a) for a in _AXES[o])
    centre, width, height = _extent_on(volume, u, v)
    sp = spacing_mm or _default_spacing(volume, width, height, max_pixels)
    plane = SlicePlane(tuple(centre), tuple(u), tuple(v), width, height, sp, o.value)  # type: ignore[arg-type]
    return plane if through_lps is None else plane.moved_to(through_lps)


def _unit(v: ArrayLike, what: str) -> NDArray[np.float64]:
    a = np.asarray(v, dtype=float).reshape(3)
    n = float(np.linalg.norm(a))
    if not np.isfinite(n) or n < 1e-9:
        raise GeometryError(f"{what} has zero length")
    return a / n


def needle_plane(entry_lps: ArrayLike, target_lps: ArrayLike, *, spacing_mm: float = 0.75,
                 margin_mm: float = 40.0, rotation_deg: float = 0.0) -> SlicePlane:
    """The oblique plane containing the needle, entry at the top, target below.

    The plane is the one through the needle closest to axial (the in-plane view an
    IR sets on the CT console), rotated about the needle by ``rotation_deg``.
    Screen-up is the direction from target to entry.
    """
    entry = np.asarray(entry_lps, float).reshape(3)
    target = np.asarray(target_lps, float).reshape(3)
    v = _unit(entry - target, "needle (entry − target)")
    head = np.array([0.0, 0.0, 1.0])
    normal = head - (head @ v) * v
    if np.linalg.norm(normal) < 1e-6:  # needle along the body axis: use a coronal plane
        ant = np.array([0.0, -1.0, 0.0])
        normal = ant - (ant @ v) * v
    normal = _unit(normal, "plane normal")
    u = np.cross(v, normal)
    if rotation_deg:
        a = np.deg2rad(rotation_deg)
        u = np.cos(a) * u + np.sin(a) * np.cross(v, u)
    if u[int(np.argmax(np.abs(u)))] < 0:  # keep patient left/posterior/head to the right
        u = -u
    length = float(np.linalg.norm(entry - target))
    centre = (entry + target) / 2.0
    size = length + 2 * margin_mm
    return SlicePlane(tuple(centre), tuple(_unit(u, "u")), tuple(v), size, size,  # type: ignore[arg-type]
                      spacing_mm, "along-needle")


def bullseye_plane(entry_lps: ArrayLike, target_lps: ArrayLike, *, spacing_mm: float = 0.5,
                   size_mm: float = 80.0, depth_mm: float = 0.0) -> SlicePlane:
    """The plane perpendicular to the needle ("bull's-eye" / probe's-eye view).

    Centred on the needle axis at ``depth_mm`` before the target (0 = at the
    target), seen from the entry looking down the needle.
    """
    entry = np.asarray(entry_lps, float).reshape(3)
    target = np.asarray(target_lps, float).reshape(3)
    d = _unit(target - entry, "needle (target − entry)")
    ref = np.array([0.0, -1.0, 0.0]) if abs(d[1]) < 0.9 else np.array([0.0, 0.0, 1.0])
    v = _unit(ref - (ref @ d) * d, "up")
    u = np.cross(d, v)  # viewer looks along d: u × v = −d points toward the viewer
    centre = target - depth_mm * d
    return SlicePlane(tuple(centre), tuple(_unit(u, "u")), tuple(v), size_mm, size_mm,  # type: ignore[arg-type]
                      spacing_mm, "bullseye")


def _sample(array: NDArray[Any], ijk: NDArray[np.float64], order: int, cval: float
            ) -> NDArray[Any]:
    coords = np.stack([ijk[..., 2], ijk[..., 1], ijk[..., 0]])  # (k, j, i) array order
    return ndi.map_coordinates(array, coords, order=order, mode="constant", cval=cval,
                               prefilter=False)


def reslice(volume: ImageVolume, plane: SlicePlane, *, order: int = 1,
            fill: float | None = None, volume_to_plane: ArrayLike | None = None
            ) -> NDArray[np.float32]:
    """Resample ``volume`` on ``plane`` (float32, shape ``plane.shape``).

    Parameters
    ----------
    volume : ImageVolume
    plane : SlicePlane
    order : int
        Interpolation order (1 = trilinear, 0 = nearest).
    fill : float, optional
        Value outside the volume; default the volume's minimum.
    volume_to_plane : array_like (4, 4), optional
        Rigid transform from the volume's LPS frame to the plane's (an intra-op
        scan registered to the planning CT: ``intraop_to_plan``).
    """
    nr, nc = plane.shape
    rows, cols = np.mgrid[0:nr, 0:nc]
    pts = plane.pixel_to_lps(rows, cols)
    if volume_to_plane is not None:
        m = np.linalg.inv(np.asarray(volume_to_plane, dtype=float))
        pts = pts @ m[:3, :3].T + m[:3, 3]
    ijk = volume.world_to_index(pts)
    arr = volume.array
    if fill is None:
        fill = float(arr.min()) if arr.size else 0.0
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "u" and arr.dtype.itemsize > 2:
        arr = arr.astype(np.float32)
    return _sample(arr, ijk, order, fill).astype(np.float32, copy=False)


def reslice_labels(labels: LabelMap, plane: SlicePlane) -> list[NDArray[np.integer[Any]]]:
    """Nearest-neighbour reslice of every label layer on ``plane``."""
    nr, nc = plane.shape
    rows, cols = np.mgrid[0:nr, 0:nc]
    ijk = labels.grid.world_to_index(plane.pixel_to_lps(rows, cols))
    return [_sample(layer, ijk, 0, 0) for layer in labels.layers]


def label_overlay(labels: LabelMap, plane: SlicePlane, *,
                  visible: set[str] | None = None, opacity: float = 0.35,
                  outline: bool = True, colors: dict[str, tuple[float, float, float]] | None
                  = None) -> NDArray[np.uint8]:
    """RGBA (rows, cols, 4) overlay of the structures on ``plane``.

    Filled with ``opacity``, outlines opaque; structures not in ``visible`` left out.
    """
    nr, nc = plane.shape
    out = np.zeros((nr, nc, 4), dtype=np.float32)
    layers = reslice_labels(labels, plane)
    for s in labels.structures:
        if visible is not None and s.name not in visible:
            continue
        m = layers[s.layer] == s.label
        if not m.any():
            continue
        rgb = np.asarray((colors or {}).get(s.name, structure_color(s)), dtype=np.float32)
        out[m, :3] = rgb
        out[m, 3] = np.maximum(out[m, 3], opacity)
        if outline:
            edge = m & ~ndi.binary_erosion(m)
            out[edge, :3] = rgb
            out[edge, 3] = 1.0
    return (out * 255).astype(np.uint8)


def windowed_rgb(values: NDArray[np.floating[Any]], window: WindowLevel,
                 overlay_rgba: NDArray[np.uint8] | None = None) -> NDArray[np.uint8]:
    """Grey-level RGB (rows, cols, 3) of a slice, with an RGBA overlay blended on top."""
    grey = apply_window(values, window)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if overlay_rgba is not None:
        a = overlay_rgba[..., 3:4].astype(np.float32) / 255.0
        rgb = rgb * (1 - a) + overlay_rgba[..., :3].astype(np.float32) * a
    return np.clip(rgb, 0, 255).astype(np.uint8)


class FusionMode(str, Enum):  # noqa: UP042
    """How an intra-procedural volume is shown on the planning CT."""

    BLEND = "blend"
    CHECKERBOARD = "checkerboard"


def fuse(base_rgb: NDArray[np.uint8], overlay_rgb: NDArray[np.uint8],
         overlay_valid: NDArray[np.bool_] | None = None, *,
         mode: str | FusionMode = FusionMode.BLEND, opacity: float = 0.5,
         checker_px: int = 32) -> NDArray[np.uint8]:
    """Fuse two RGB slices of the same plane (intra-op over planning).

    ``blend`` mixes with ``opacity``; ``checkerboard`` alternates squares of
    ``checker_px`` pixels. Pixels where the overlay has no data keep the base.
    """
    if base_rgb.shape != overlay_rgb.shape:
        raise InputError(f"fusion images differ in shape: {base_rgb.shape} vs {overlay_rgb.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise InputError(f"fusion opacity must be between 0 and 1; got {opacity}")
    m = FusionMode(str(getattr(mode, "value", mode)))
    nr, nc = base_rgb.shape[:2]
    valid = np.ones((nr, nc), bool) if overlay_valid is None else overlay_valid
    if m is FusionMode.CHECKERBOARD:
        if checker_px < 1:
            raise InputError(f"checkerboard square must be ≥ 1 pixel; got {checker_px}")
        rr, cc = np.mgrid[0:nr, 0:nc]
        use = (((rr // checker_px) + (cc // checker_px)) % 2 == 1) & valid
        return np.where(use[..., None], overlay_rgb, base_rgb)
    a = np.where(valid, np.float32(opacity), np.float32(0.0))[..., None]
    out = base_rgb.astype(np.float32) * (1 - a) + overlay_rgb.astype(np.float32) * a
    return np.clip(out, 0, 255).astype(np.uint8)
