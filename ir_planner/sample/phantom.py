"""A deterministic synthetic abdominal CT ("phantom") with its label map.

The anatomy is described analytically in DICOM patient coordinates (LPS, mm:
+x patient left, +y posterior, +z head) for a supine, head-first patient, and is
rasterised onto any axis-aligned grid. It is *synthetic*: plausible shapes,
positions and Hounsfield units, made for testing and demonstrating the planner,
not for any clinical conclusion.

Contents: air, CT table, skin, subcutaneous fat, abdominal wall and paraspinal
muscles, diaphragm, lung bases with pleura, heart, liver with tumours, hepatic
and portal veins, aorta and IVC with their iliac branches, spleen, kidneys,
stomach, colon and small bowel with gas/fluid levels, vertebrae with posterior
elements and spinal canal, and curved, oblique, separate ribs.

Rasterisation is vectorised per slab of slices, and each primitive is evaluated
only inside its bounding box, so a 512×512×300 grid fits in modest memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ir_planner.core.errors import InputError
from ir_planner.core.labels import LabelMap, Structure
from ir_planner.core.progress import ProgressCallback, report, subrange
from ir_planner.core.volume import ImageVolume, affine_from_geometry

__all__ = [
    "PHANTOM_VERSION",
    "TISSUE_HU",
    "LABEL_NAMES",
    "Anatomy",
    "Tumour",
    "make_anatomy",
    "finish_ct",
    "grid_axes",
    "make_phantom",
    "render_tissue",
    "tissue_to_hu",
]

#: Bumped whenever the rendered anatomy changes (cached sample cases are regenerated).
PHANTOM_VERSION = 1

# ---------------------------------------------------------------------------------------
# Tissues (what sets the Hounsfield value) — separate from structure labels.
# ---------------------------------------------------------------------------------------
_TISSUES: list[tuple[str, float]] = [
    ("air", -1000.0),
    ("fat", -100.0),
    ("skin", 40.0),
    ("muscle", 50.0),
    ("liver", 100.0),  # portal venous phase enhancement
    ("tumour", 38.0),  # hypodense to liver
    ("tumour_core", 25.0),
    ("artery", 190.0),
    ("ivc", 150.0),
    ("portal_vein", 175.0),
    ("hepatic_vein", 165.0),
    ("bone_cortex", 1100.0),
    ("bone_marrow", 420.0),
    ("lung", -850.0),
    ("pleura", 20.0),
    ("bowel_wall", 45.0),
    ("bowel_fluid", 12.0),
    ("gas", -1000.0),
    ("kidney", 170.0),
    ("spleen", 115.0),
    ("disc", 85.0),
    ("csf", 10.0),
    ("cord", 35.0),
    ("table_shell", 250.0),
    ("table_foam", -850.0),
    ("heart", 140.0),
    ("stool", -40.0),
    ("renal_sinus", -60.0),
    ("pancreas", 90.0),
    ("bile", 8.0),
]
_T = {name: n for n, (name, _) in enumerate(_TISSUES)}
#: Hounsfield value (noise-free) of every tissue, by tissue name.
TISSUE_HU: dict[str, float] = {name: hu for name, hu in _TISSUES}
_HU_LUT = np.array([hu for _, hu in _TISSUES], dtype=np.float32)

# ---------------------------------------------------------------------------------------
# Structure labels (names follow TotalSegmentator where one exists).
# ---------------------------------------------------------------------------------------
_VERTEBRA_LEVELS = (
    ["C7"] + [f"T{n}" for n in range(1, 13)] + [f"L{n}" for n in range(1, 6)] + ["S1"]
)
_FIXED_NAMES = [
    "skin", "subcutaneous_fat", "abdominal_wall_muscle", "visceral_fat", "diaphragm",
    "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right",
    "lung_left", "lung_right", "pleura", "heart",
    "liver", "tumour_1", "tumour_2", "hepatic_vein", "portal_vein", "splenic_vein",
    "superior_mesenteric_vein", "aorta", "inferior_vena_cava", "iliac_artery_left",
    "iliac_artery_right", "iliac_vena_left", "iliac_vena_right",
    "spleen", "kidney_left", "kidney_right", "stomach", "colon", "small_bowel",
    "spinal_cord", "intervertebral_discs", "pancreas", "gallbladder",
]
_ALL_NAMES = (
    _FIXED_NAMES
    + [f"vertebrae_{lv}" for lv in _VERTEBRA_LEVELS]
    + [f"rib_{side}_{n}" for side in ("left", "right") for n in range(1, 13)]
)
#: Label value → structure name for every structure the phantom can contain.
LABEL_NAMES: dict[int, str] = {n + 1: name for n, name in enumerate(_ALL_NAMES)}
_L = {name: label for label, name in LABEL_NAMES.items()}

# Body outline: elliptic cylinder centred at (0, _CY) with semi-axes (_A, _B) in mm.
_CY = -10.0
_A, _B = 150.0, 112.0
_SKIN_MM, _FAT_MM, _WALL_MM = 2.5, 20.0, 32.0  # depths from the skin surface
_RIB_DEPTH_MM = 26.0  # rib centre line depth below the skin
_TABLE_Y = (108.0, 124.0)  # table top and bottom (LPS y, mm)


@dataclass(frozen=True)
class Tumour:
    """A spherical-ish lesion: name, centre (LPS mm), radius (mm)."""

    name: str
    centre_lps: tuple[float, float, float]
    radius_mm: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (units in the keys)."""
        return {"name": self.name, "centre_lps_mm": [round(v, 4) for v in self.centre_lps],
                "radius_mm": round(self.radius_mm, 4)}


@dataclass(frozen=True)
class Anatomy:
    """The seed-dependent parameters of the phantom (everything else is fixed)."""

    tumours: tuple[Tumour, ...]
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def make_anatomy(*, seed: int = 0, tumours: int = 2) -> Anatomy:
    """The phantom's anatomy for a seed: tumour positions and sizes vary a little.

    Parameters
    ----------
    seed : int
        Seed of the numpy random generator.
    tumours : int
        Number of liver tumours, 0, 1 or 2.
    """
    if tumours not in (0, 1, 2):
        raise InputError(f"tumours must be 0, 1 or 2; got {tumours}")
    rng = np.random.default_rng([int(seed), 7])
    jitter = rng.uniform(-3.0, 3.0, size=(2, 3))
    radius = (11.0 + rng.uniform(-1.0, 1.5), 8.0 + rng.uniform(-0.5, 1.0))
    centres = (np.array([-98.0, -22.0, 12.0]) + jitter[0],
               np.array([-28.0, -52.0, 52.0]) + jitter[1])
    found = tuple(
        Tumour(f"tumour_{n + 1}", tuple(float(v) for v in centres[n]), float(radius[n]))
        for n in range(tumours)
    )
    return Anatomy(tumours=found, seed=int(seed))


# ---------------------------------------------------------------------------------------
# Rasterisation machinery
# ---------------------------------------------------------------------------------------
class _Block:
    """A slab of an axis-aligned grid: coordinate vectors plus tissue/label arrays."""

    def __init__(self, x: NDArray[np.float64], y: NDArray[np.float64], z: NDArray[np.float64],
                 tissue: NDArray[np.uint8], labels: NDArray[np.uint8]) -> None:
        self.x, self.y, self.z = x, y, z
        self.tissue, self.labels = tissue, labels

    def _range(self, axis: int, lo: float, hi: float) -> slice | None:
        v = (self.x, self.y, self.z)[axis]
        inside = np.nonzero((v >= lo) & (v <= hi))[0]
        if inside.size == 0:
            return None
        return slice(int(inside.min()), int(inside.max()) + 1)

    def view(self, lo: tuple[float, float, float], hi: tuple[float, float, float]) -> Any:
        si = self._range(0, lo[0], hi[0])
        sj = self._range(1, lo[1], hi[1])
        sk = self._range(2, lo[2], hi[2])
        if si is None or sj is None or sk is None:
            return None
        xs = self.x[si].astype(np.float32)[np.newaxis, np.newaxis, :]
        ys = self.y[sj].astype(np.float32)[np.newaxis, :, np.newaxis]
        zs = self.z[sk].astype(np.float32)[:, np.newaxis, np.newaxis]
        return (sk, sj, si), xs, ys, zs

    def paint(self, lo: Any, hi: Any, fn: Callable[..., Any], label: int, tissue: int | None,
              only: tuple[int, ...] | None = None) -> None:
        """Set label/tissue where ``fn(X, Y, Z)`` is true inside the box.

        ``fn`` returns a bool mask, or ``(mask, tissue_codes)`` to vary the tissue.
        ``only`` restricts painting to voxels whose current label is in the tuple.
        """
        v = self.view(lo, hi)
        if v is None:
            return
        sl, xs, ys, zs = v
        out = fn(xs, ys, zs)
        codes = None
        if isinstance(out, tuple):
            out, codes = out
        lab = self.labels[sl]
        mask = np.broadcast_to(out, lab.shape)
        if only is not None:
            allowed = np.isin(lab, np.asarray(only, dtype=np.uint8))
            mask = mask & allowed
        if not mask.any():
            return
        lab[mask] = label
        tis = self.tissue[sl]
        if codes is None:
            tis[mask] = tissue
        else:
            tis[mask] = np.broadcast_to(codes, lab.shape)[mask]


def _ellipsoid(c: Any, r: Any, angle_deg: float = 0.0) -> tuple[Any, Any, Callable[..., Any]]:
    """Box and membership function of an ellipsoid rotated ``angle_deg`` about z."""
    cx, cy, cz = c
    rx, ry, rz = r
    ext = max(rx, ry)
    lo = (cx - ext, cy - ext, cz - rz)
    hi = (cx + ext, cy + ext, cz + rz)
    ca, sa = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))

    def fn(x: Any, y: Any, z: Any) -> Any:
        dx, dy = x - cx, y - cy
        u = ca * dx + sa * dy
        w = -sa * dx + ca * dy
        return (u / rx) ** 2 + (w / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0

    return lo, hi, fn


def _tube(p0: Any, p1: Any, r0: float, r1: float | None = None
          ) -> tuple[Any, Any, Callable[..., Any]]:
    """Box and function for a capsule between p0 and p1, radius r0 → r1 (mm).

    The function returns ``(inside, dist, t)`` with the distance to the axis and
    the axis parameter of the closest point.
    """
    p0a, p1a = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    r1 = r0 if r1 is None else r1
    rmax = max(r0, r1)
    lo = tuple(float(v) for v in np.minimum(p0a, p1a) - rmax)
    hi = tuple(float(v) for v in np.maximum(p0a, p1a) + rmax)
    d = p1a - p0a
    dd = float(d @ d)

    def fn(x: Any, y: Any, z: Any) -> Any:
        px, py, pz = x - p0a[0], y - p0a[1], z - p0a[2]
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / dd, 0.0, 1.0)
        dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
        radius = r0 + (r1 - r0) * t
        return dist <= radius, dist, t

    return lo, hi, fn


def _diaphragm_z(x: Any, y: Any) -> Any:
    """Height (LPS z, mm) of the diaphragm surface: domes high anteriorly, low posteriorly."""
    return 88.0 - 0.42 * (y - _CY) - 0.004 * (np.abs(x) - 70.0) ** 2


def _ellipse_r(x: Any, y: Any, inset_mm: float) -> Any:
    """Normalised radius of (x, y) in the body ellipse shrunk by ``inset_mm``."""
    return np.sqrt((x / (_A - inset_mm)) ** 2 + ((y - _CY) / (_B - inset_mm)) ** 2)


# Hepatic veins: from the IVC at the liver dome outwards (start, end, r_start, r_end).
_HEPATIC_VEINS = [
    ((-24.0, 8.0, 86.0), (-118.0, 8.0, 48.0), 5.0, 2.5),
    ((-24.0, 8.0, 86.0), (-62.0, -58.0, 40.0), 4.5, 2.5),
    ((-24.0, 8.0, 86.0), (-4.0, -62.0, 66.0), 4.0, 2.5),
]
_PORTAL_VEINS = [
    ((10.0, -5.0, -15.0), (-40.0, 0.0, 25.0), 7.0, 6.5),
    ((-40.0, 0.0, 25.0), (-82.0, 6.0, 28.0), 5.5, 5.0),
    ((-82.0, 6.0, 28.0), (-108.0, -20.0, 40.0), 3.5, 2.5),
    ((-82.0, 6.0, 28.0), (-112.0, 40.0, 22.0), 3.5, 2.5),
    ((-40.0, 0.0, 25.0), (-8.0, -32.0, 48.0), 4.5, 4.0),
    ((-8.0, -32.0, 48.0), (18.0, -55.0, 58.0), 3.0, 2.5),
]
_COLON = [
    ((-92.0, 0.0, -130.0), (-92.0, -5.0, -30.0), 20.0),
    ((-92.0, -5.0, -30.0), (-60.0, -62.0, -35.0), 18.0),
    ((-60.0, -62.0, -35.0), (60.0, -62.0, -25.0), 18.0),
    ((60.0, -62.0, -25.0), (92.0, 0.0, -5.0), 18.0),
    ((92.0, 0.0, -5.0), (92.0, 5.0, -130.0), 16.0),
]
_SMALL_BOWEL_PATH = [
    (-55.0, -45.0, -110.0), (50.0, -45.0, -110.0), (50.0, -22.0, -88.0),
    (-55.0, -22.0, -88.0), (-55.0, -50.0, -66.0), (50.0, -50.0, -66.0),
    (45.0, -25.0, -46.0), (-45.0, -25.0, -46.0),
]


def _render_block(b: _Block, anatomy: Anatomy, *, table: bool) -> None:
    """Rasterise the whole anatomy into one slab (in place)."""
    T, L = _T, _L
    # In-plane quantities do not depend on z: compute them once on the slab's (y, x).
    x2 = b.x.astype(np.float32)[np.newaxis, :]
    y2 = b.y.astype(np.float32)[:, np.newaxis]

    def plane(mask2d: NDArray[np.bool_], label: int, tissue: int) -> None:
        m = np.broadcast_to(mask2d, b.labels.shape)
        b.labels[m] = label
        b.tissue[m] = tissue

    # --- table (fixed to the scanner, not part of the patient) -------------------------
    if table:
        tab = (y2 >= _TABLE_Y[0]) & (y2 <= _TABLE_Y[1]) & (np.abs(x2) <= 175.0)
        shell = tab & ((y2 <= _TABLE_Y[0] + 2.5) | (y2 >= _TABLE_Y[1] - 2.5)
                       | (np.abs(x2) >= 172.5))
        b.tissue[np.broadcast_to(tab, b.tissue.shape)] = T["table_foam"]
        b.tissue[np.broadcast_to(shell, b.tissue.shape)] = T["table_shell"]

    # --- body layers ------------------------------------------------------------------
    plane(_ellipse_r(x2, y2, 0.0) <= 1.0, L["skin"], T["skin"])
    plane(_ellipse_r(x2, y2, _SKIN_MM) <= 1.0, L["subcutaneous_fat"], T["fat"])
    plane(_ellipse_r(x2, y2, _FAT_MM) <= 1.0, L["abdominal_wall_muscle"], T["muscle"])
    cavity2 = _ellipse_r(x2, y2, _WALL_MM) <= 1.0
    plane(cavity2, L["visceral_fat"], T["fat"])
    body_labels = (L["subcutaneous_fat"], L["abdominal_wall_muscle"], L["visceral_fat"])

    zmin, zmax = float(b.z.min()), float(b.z.max())
    big = 1e4
    # paraspinal muscles and psoas
    for side, s in (("left", 1.0), ("right", -1.0)):
        lo, hi, fn = _ellipsoid((s * 26.0, 80.0, 0.0), (21.0, 16.0, big))
        b.paint(lo, hi, fn, L[f"autochthon_{side}"], T["muscle"], only=body_labels)

        def psoas(x: Any, y: Any, z: Any, s: float = s) -> Any:
            grow = np.clip((-z + 10.0) / 90.0, 0.0, 1.0)  # widens caudally
            r = 6.0 + 10.0 * grow
            return ((x - s * (32.0 + 12.0 * grow)) ** 2 + (y - 42.0) ** 2 <= r ** 2) & (z < 10.0)

        b.paint((s * 32.0 - 35.0, 20.0, -big), (s * 32.0 + 35.0, 65.0, 10.0), psoas,
                L[f"iliopsoas_{side}"], T["muscle"], only=body_labels)

    # --- diaphragm, lungs, pleura, heart ------------------------------------------------
    dz2 = _diaphragm_z(x2, y2)
    if zmax > float(dz2.min()) - 3.0:
        z3 = b.z.astype(np.float32)[:, np.newaxis, np.newaxis]
        h = z3 - dz2  # height above the diaphragm surface
        cav = np.broadcast_to(cavity2, b.labels.shape)
        near_wall = np.broadcast_to(_ellipse_r(x2, y2, _WALL_MM + 2.5) > 1.0, b.labels.shape)
        is_fat = b.labels == L["visceral_fat"]
        diaphragm = cav & is_fat & (np.abs(h) <= 2.0)
        b.labels[diaphragm] = L["diaphragm"]
        b.tissue[diaphragm] = T["muscle"]
        mediastinum = np.broadcast_to((np.abs(x2) < 14.0) & (y2 < 35.0), b.labels.shape)
        thorax = cav & is_fat & (h > 2.0) & ~mediastinum
        pleura = thorax & ((h <= 4.5) | near_wall)
        for side, sel in (("left", x2 > 0), ("right", x2 <= 0)):
            lung = thorax & ~pleura & np.broadcast_to(sel, b.labels.shape)
            b.labels[lung] = L[f"lung_{side}"]
            b.tissue[lung] = T["lung"]
        b.labels[pleura] = L["pleura"]
        b.tissue[pleura] = T["pleura"]
        lo, hi, fn = _ellipsoid((12.0, -30.0, 150.0), (65.0, 50.0, 62.0), 20.0)

        def heart(x: Any, y: Any, z: Any) -> Any:
            return fn(x, y, z) & (z > _diaphragm_z(x, y) + 2.0)

        b.paint(lo, hi, heart, L["heart"], T["heart"],
                only=(L["lung_left"], L["lung_right"], L["pleura"], L["visceral_fat"]))

    below = (L["visceral_fat"],)
    # --- solid organs -----------------------------------------------------------------
    for c, r, a in (((-68.0, -5.0, 35.0), (62.0, 72.0, 68.0), 0.0),
                    ((5.0, -45.0, 55.0), (50.0, 30.0, 35.0), -10.0)):
        lo, hi, fn = _ellipsoid(c, r, a)
        b.paint(lo, hi, fn, L["liver"], T["liver"], only=below)
    lo, hi, fn = _ellipsoid((78.0, 38.0, 50.0), (22.0, 45.0, 48.0), 30.0)
    b.paint(lo, hi, fn, L["spleen"], T["spleen"], only=below)
    for side, c, a in (("right", (-62.0, 48.0, -30.0), -20.0), ("left", (62.0, 48.0, -15.0), 20.0)):
        lo, hi, fn = _ellipsoid(c, (24.0, 20.0, 52.0), a)
        sinus_fn = _ellipsoid((c[0] * 0.85, c[1] - 2.0, c[2]), (9.0, 8.0, 25.0), a)[2]

        def kidney(x: Any, y: Any, z: Any, fn: Any = fn, sinus_fn: Any = sinus_fn) -> Any:
            inside = fn(x, y, z)
            codes = np.where(sinus_fn(x, y, z), T["renal_sinus"], T["kidney"]).astype(np.uint8)
            return inside, codes

        b.paint(lo, hi, kidney, L[f"kidney_{side}"], None,
                only=(L["visceral_fat"], L["liver"], L["spleen"]))

    # stomach with an air-fluid level (gas anterior, i.e. smaller y, in a supine patient)
    lo, hi, fn = _ellipsoid((45.0, -40.0, 55.0), (33.0, 27.0, 38.0), 25.0)
    inner = _ellipsoid((45.0, -40.0, 55.0), (30.5, 24.5, 35.5), 25.0)[2]

    def stomach(x: Any, y: Any, z: Any) -> Any:
        wall = fn(x, y, z)
        lumen = inner(x, y, z)
        codes = np.where(lumen, np.where(y < -52.0, T["gas"], T["bowel_fluid"]),
                         T["bowel_wall"]).astype(np.uint8)
        return wall, codes

    b.paint(lo, hi, stomach, L["stomach"], None, only=below)

    # pancreas (head by the duodenal sweep, body across the aorta, tail at the splenic hilum)
    for p0, p1, r in (((-25.0, -12.0, -25.0), (5.0, -22.0, -5.0), 13.0),
                      ((5.0, -22.0, -5.0), (45.0, -5.0, 12.0), 10.0),
                      ((45.0, -5.0, 12.0), (70.0, 18.0, 25.0), 8.0)):
        lo, hi, fn = _tube(p0, p1, r)
        b.paint(lo, hi, lambda x, y, z, fn=fn: fn(x, y, z)[0], L["pancreas"], T["pancreas"],
                only=below)
    # gallbladder in its fossa on the liver's undersurface
    lo, hi, fn = _ellipsoid((-45.0, -55.0, 0.0), (14.0, 14.0, 28.0), 0.0)
    b.paint(lo, hi, fn, L["gallbladder"], T["bile"], only=(L["liver"], L["visceral_fat"]))

    # --- vessels ------------------------------------------------------------------------
    def paint_tube(p0: Any, p1: Any, r0: float, r1: float | None, label: int, tissue: int,
                   only: tuple[int, ...] | None = None) -> None:
        lo, hi, fn = _tube(p0, p1, r0, r1)
        b.paint(lo, hi, lambda x, y, z: fn(x, y, z)[0], label, tissue, only=only)

    paint_tube((18.0, 10.0, -95.0), (18.0, 10.0, big), 11.0, 11.0, L["aorta"], T["artery"])
    for side, s in (("left", 1.0), ("right", -1.0)):
        paint_tube((18.0, 10.0, -95.0), (s * 62.0, 20.0, -220.0), 6.0, 5.0,
                   L[f"iliac_artery_{side}"], T["artery"])
    lo, hi, fn = _ellipsoid((-24.0, 8.0, 0.0), (13.0, 10.0, big))
    b.paint((lo[0], lo[1], -100.0), (hi[0], hi[1], big), fn, L["inferior_vena_cava"], T["ivc"])
    for side, end in (("right", (-62.0, 28.0, -220.0)), ("left", (55.0, 28.0, -220.0))):
        paint_tube((-24.0, 8.0, -100.0), end, 7.0, 6.0, L[f"iliac_vena_{side}"], T["ivc"])
    for p0, p1, r0, r1 in _HEPATIC_VEINS:
        paint_tube(p0, p1, r0, r1, L["hepatic_vein"], T["hepatic_vein"],
                   only=(L["liver"], L["visceral_fat"]))
    for p0, p1, r0, r1 in _PORTAL_VEINS:
        paint_tube(p0, p1, r0, r1, L["portal_vein"], T["portal_vein"])
    paint_tube((10.0, -5.0, -15.0), (70.0, 25.0, 28.0), 4.5, 4.0, L["splenic_vein"],
               T["portal_vein"])
    paint_tube((10.0, -5.0, -15.0), (15.0, -18.0, -100.0), 5.5, 4.5,
               L["superior_mesenteric_vein"], T["portal_vein"])

    # --- tumours (inside the liver only) -----------------------------------------------
    for tum in anatomy.tumours:
        cx, cy, cz = tum.centre_lps
        r = tum.radius_mm
        rr = r * 1.12

        def lesion(x: Any, y: Any, z: Any, cx: float = cx, cy: float = cy, cz: float = cz,
                   r: float = r) -> Any:
            dx, dy, dz = x - cx, y - cy, z - cz
            dist = np.sqrt(dx * dx + dy * dy + dz * dz)
            # gentle lobulation (±8 %), deterministic
            lob = 1.0 + 0.08 * np.sin(3.0 * np.arctan2(dy, dx)) * np.cos(
                2.0 * np.arctan2(dz, np.sqrt(dx * dx + dy * dy) + 1e-6))
            inside = dist <= r * lob
            codes = np.where(dist <= 0.35 * r, T["tumour_core"], T["tumour"]).astype(np.uint8)
            return inside, codes

        b.paint((cx - rr, cy - rr, cz - rr), (cx + rr, cy + rr, cz + rr), lesion,
                L[tum.name], None, only=(L["liver"],))

    # --- bowel (fills remaining visceral fat only) --------------------------------------
    def bowel(segments: list[tuple[Any, Any, float]], label: int, gas_above: float,
              content: int) -> None:
        for p0, p1, r in segments:
            lo, hi, fn = _tube(p0, p1, r)
            y0, y1 = p0[1], p1[1]

            def seg(x: Any, y: Any, z: Any, fn: Any = fn, r: float = r, y0: float = y0,
                    y1: float = y1) -> Any:
                inside, dist, t = fn(x, y, z)
                y_axis = y0 + (y1 - y0) * t
                lumen = dist <= r - 2.5
                gas = (y - y_axis) < gas_above * r
                codes = np.where(lumen, np.where(gas, T["gas"], content),
                                 T["bowel_wall"]).astype(np.uint8)
                return inside, codes

            b.paint(lo, hi, seg, label, None, only=below)

    bowel(_COLON, L["colon"], 0.25, T["stool"])
    path = _SMALL_BOWEL_PATH
    bowel([(path[n], path[n + 1], 11.0) for n in range(len(path) - 1)], L["small_bowel"],
          -0.55, T["bowel_fluid"])

    # --- spine ---------------------------------------------------------------------------
    for n, level in enumerate(_VERTEBRA_LEVELS):
        zc = 30.0 + 35.0 * (_VERTEBRA_LEVELS.index("T12") - n)
        if zc + 17.5 < zmin or zc - 17.5 > zmax:
            continue
        label = L[f"vertebrae_{level}"]

        def vbody(x: Any, y: Any, z: Any, zc: float = zc) -> Any:
            q = ((x / 20.0) ** 2 + ((y - 42.0) / 16.0) ** 2)
            inside = (q <= 1.0) & (np.abs(z - zc) <= 13.5)
            marrow = (((x / 17.5) ** 2 + ((y - 42.0) / 13.5) ** 2) <= 1.0) & (
                np.abs(z - zc) <= 11.5)
            return inside, np.where(marrow, T["bone_marrow"], T["bone_cortex"]).astype(np.uint8)

        b.paint((-21.0, 25.0, zc - 14.0), (21.0, 59.0, zc + 14.0), vbody, label, None)

        def posterior(x: Any, y: Any, z: Any, zc: float = zc) -> Any:
            rho = np.sqrt(x * x + (y - 68.0) ** 2)
            ring = (rho >= 8.5) & (rho <= 13.5) & (y >= 62.0)
            pedicle = (np.abs(x) >= 6.0) & (np.abs(x) <= 12.0) & (y >= 55.0) & (y <= 66.0)
            spinous = (np.abs(x) <= 4.0) & (y >= 76.0) & (y <= 94.0)
            transverse = (np.abs(x) <= 38.0) & (np.abs(x) >= 9.0) & (y >= 60.0) & (y <= 67.0)
            inside = (ring | pedicle | spinous | transverse) & (np.abs(z - zc) <= 11.0)
            core = (rho >= 10.0) & (rho <= 12.0) | (np.abs(x) <= 2.5) & (y >= 78.0) & (y <= 92.0)
            return inside, np.where(core, T["bone_marrow"], T["bone_cortex"]).astype(np.uint8)

        b.paint((-39.0, 54.0, zc - 12.0), (39.0, 95.0, zc + 12.0), posterior, label, None)

        def disc(x: Any, y: Any, z: Any, zc: float = zc) -> Any:
            q = ((x / 20.0) ** 2 + ((y - 42.0) / 16.0) ** 2)
            return (q <= 1.0) & (np.abs(z - zc) > 13.5)

        b.paint((-21.0, 25.0, zc - 17.5), (21.0, 59.0, zc + 17.5), disc,
                L["intervertebral_discs"], T["disc"])

    def canal(x: Any, y: Any, z: Any) -> Any:
        rho2 = x * x + (y - 68.0) ** 2
        inside = np.broadcast_to(rho2 <= 8.5 ** 2, np.broadcast_shapes(rho2.shape, z.shape))
        return inside, np.where(rho2 <= 5.0 ** 2, T["cord"], T["csf"]).astype(np.uint8)

    b.paint((-9.0, 59.0, -big), (9.0, 77.0, big), canal, L["spinal_cord"], None)

    # --- ribs: curved tubes in the wall, descending anteriorly (oblique to the slices) -
    ar, br = _A - _RIB_DEPTH_MM, _B - _RIB_DEPTH_MM
    rr2 = np.sqrt(x2 ** 2 + (y2 - _CY) ** 2)
    re2 = np.sqrt((x2 / ar) ** 2 + ((y2 - _CY) / br) ** 2)
    d_in = rr2 * (1.0 - 1.0 / np.maximum(re2, 1e-6))  # in-plane distance to the rib ellipse
    band_j, band_i = np.nonzero(np.abs(d_in) <= 5.0)
    if band_j.size:
        d_b = d_in[band_j, band_i]
        xb = x2[0, band_i]
        yb = y2[band_j, 0]
        theta = np.arctan2(np.abs(xb), yb - _CY)  # 0 posterior, π/2 lateral, π anterior
        left = xb > 0
        theta0, slope = 0.45, 35.0  # rad, mm of descent per rad
        zs = b.z.astype(np.float32)
        for n in range(1, 13):
            z_post = 20.0 + (12 - n) * 24.0
            theta1 = {12: 1.5, 11: 1.9}.get(n, 2.6)
            z_low = z_post - slope * (theta1 - theta0) - 7.0
            if z_low > zmax or z_post + 7.0 < zmin:
                continue
            on_arc = (theta >= theta0) & (theta <= theta1)
            zc = z_post - slope * (theta - theta0)
            for side, sel in (("left", left), ("right", ~left)):
                cols = on_arc & sel
                if not cols.any():
                    continue
                dz = zs[:, np.newaxis] - zc[np.newaxis, cols]
                q = (d_b[cols] / 4.5) ** 2 + (dz / 6.5) ** 2
                inside = q <= 1.0
                marrow = (d_b[cols] / 2.8) ** 2 + (dz / 4.8) ** 2 <= 1.0
                kk, cc = np.nonzero(inside)
                jj, ii = band_j[cols][cc], band_i[cols][cc]
                b.labels[kk, jj, ii] = L[f"rib_{side}_{n}"]
                b.tissue[kk, jj, ii] = np.where(marrow[kk, cc], T["bone_marrow"],
                                                T["bone_cortex"])


def render_tissue(x_mm: NDArray[Any], y_mm: NDArray[Any], z_mm: NDArray[Any],
                  anatomy: Anatomy, *, table: bool = True,
                  progress: ProgressCallback | None = None, slab_voxels: int = 4_000_000,
                  ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Rasterise the anatomy on the axis-aligned grid ``x_mm × y_mm × z_mm`` (LPS).

    Parameters
    ----------
    x_mm, y_mm, z_mm : array_like
        Voxel-centre coordinates along LPS x (columns), y (rows), z (slices) in mm.
    anatomy : Anatomy
        The seed-dependent anatomy.
    table : bool
        Whether to draw the CT table (it belongs to the scanner, not the patient).
    progress : callable, optional
        Progress callback.
    slab_voxels : int
        Work per slab (memory bound).

    Returns
    -------
    tissue, labels : numpy.ndarray of uint8, shape (nz, ny, nx)
        Tissue codes (see :func:`tissue_to_hu`) and structure labels (see :data:`LABEL_NAMES`).
    """
    x = np.asarray(x_mm, dtype=np.float64)
    y = np.asarray(y_mm, dtype=np.float64)
    z = np.asarray(z_mm, dtype=np.float64)
    shape = (z.size, y.size, x.size)
    tissue = np.zeros(shape, dtype=np.uint8)
    labels = np.zeros(shape, dtype=np.uint8)
    step = max(1, slab_voxels // max(1, x.size * y.size))
    for k0 in range(0, z.size, step):
        k1 = min(z.size, k0 + step)
        block = _Block(x, y, z[k0:k1], tissue[k0:k1], labels[k0:k1])
        _render_block(block, anatomy, table=table)
        report(progress, k1 / z.size, "drawing anatomy")
    return tissue, labels


def tissue_to_hu(tissue: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Noise-free Hounsfield units of tissue codes (float32)."""
    return _HU_LUT[tissue]


def finish_ct(tissue: NDArray[np.uint8], rng: np.random.Generator, *, spacing_mm: Any,
              noise_hu: float, blur_mm: float = 0.6) -> NDArray[np.int16]:
    """Tissue codes → HU, in-plane blur (scanner PSF), Gaussian noise, clip to [−1024, 3071].

    Works slab by slab so that no full-size float array is ever allocated.
    """
    sx, sy = float(spacing_mm[0]), float(spacing_mm[1])
    sigma = (0.0, blur_mm / sy, blur_mm / sx)
    out = np.empty(tissue.shape, dtype=np.int16)
    step = max(1, 4_000_000 // max(1, tissue.shape[1] * tissue.shape[2]))
    for k0 in range(0, tissue.shape[0], step):
        k1 = min(tissue.shape[0], k0 + step)
        slab = ndimage.gaussian_filter(_HU_LUT[tissue[k0:k1]], sigma=sigma, mode="nearest")
        slab += rng.standard_normal(slab.shape, dtype=np.float32) * np.float32(noise_hu)
        np.clip(np.rint(slab), -1024, 3071, out=slab)
        out[k0:k1] = slab.astype(np.int16)
    return out


def grid_axes(size_ijk: Any, spacing_mm: Any) -> tuple[NDArray[np.float64], ...]:
    """Voxel-centre coordinate vectors (x, y, z in mm) of the phantom grid, centred on 0."""
    axes = []
    for n, s in zip(size_ijk, spacing_mm):
        axes.append((np.arange(int(n)) - (int(n) - 1) / 2.0) * float(s))
    return tuple(axes)


def make_phantom(*, size_ijk: tuple[int, int, int] = (256, 256, 96),
                 spacing_mm: tuple[float, float, float] = (1.4, 1.4, 2.5), seed: int = 0,
                 tumours: int = 2, noise_hu: float = 12.0,
                 progress: ProgressCallback | None = None,
                 ) -> tuple[ImageVolume, LabelMap, dict[str, Any]]:
    """A synthetic contrast-enhanced (portal venous) abdominal CT with its label map.

    The patient is supine, head first (HFS); the grid is axial with identity
    direction cosines (i → patient left, j → posterior, k → head) and is centred on
    LPS (0, 0, 0). Anatomy is fixed except tumour positions/sizes (a few mm); the
    noise (Gaussian, ``noise_hu``) depends on ``seed``. Same arguments give
    identical arrays.

    Parameters
    ----------
    size_ijk : tuple of int
        Grid size (columns, rows, slices).
    spacing_mm : tuple of float
        Voxel spacing along i, j, k in mm.
    seed : int
        Seed of the numpy random generator (tumour placement, noise).
    tumours : int
        Number of liver tumours (0, 1 or 2).
    noise_hu : float
        Standard deviation of the image noise in HU.
    progress : callable, optional
        Progress callback ``progress(fraction, message)``.

    Returns
    -------
    image : ImageVolume
        CT in HU, int16, modality "CT".
    labels : LabelMap
        One layer, structures named as in TotalSegmentator where possible
        (``liver``, ``tumour_1``, ``aorta``, ``rib_left_10``, ...).
    info : dict
        Ground truth: ``tumours`` (centre in LPS mm, radius in mm), ``seed``,
        ``size_ijk``, ``spacing_mm``, ``tissue_hu``, ``phantom_version``, ``synthetic``.

    Examples
    --------
    >>> image, labels, info = make_phantom(size_ijk=(64, 64, 24), spacing_mm=(5.6, 5.6, 10))
    >>> image.shape_ijk
    (64, 64, 24)
    """
    size = tuple(int(n) for n in size_ijk)
    spacing = tuple(float(s) for s in spacing_mm)
    if len(size) != 3 or min(size) < 1:
        raise InputError(f"size_ijk must be three positive integers; got {size_ijk}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"spacing_mm must be three positive numbers; got {spacing_mm}")
    anatomy = make_anatomy(seed=seed, tumours=tumours)
    x, y, z = grid_axes(size, spacing)
    tissue, labels = render_tissue(x, y, z, anatomy, progress=subrange(progress, 0.0, 0.6))
    report(progress, 0.6, "adding scanner blur and noise")
    rng = np.random.default_rng([int(seed), 1])
    ct = finish_ct(tissue, rng, spacing_mm=spacing, noise_hu=noise_hu)
    del tissue
    affine = affine_from_geometry((x[0], y[0], z[0]), spacing, np.eye(3))
    image = ImageVolume(
        ct, affine, modality="CT",
        metadata={"description": "IR Planner synthetic abdominal CT (not patient data)",
                  "patient_position": "HFS", "synthetic": True},
    )
    counts = np.zeros(256, dtype=np.int64)
    for k in range(labels.shape[0]):  # per slice: bincount widens to intp
        counts += np.bincount(labels[k].ravel(), minlength=256)
    names = {int(v): LABEL_NAMES[int(v)] for v in np.nonzero(counts)[0] if v != 0}
    label_map = LabelMap([labels], ImageVolume(labels, affine.copy()),
                         [Structure.from_name(name, v) for v, name in names.items()])
    info: dict[str, Any] = {
        "synthetic": True,
        "phantom_version": PHANTOM_VERSION,
        "seed": int(seed),
        "size_ijk": list(size),
        "spacing_mm": list(spacing),
        "noise_hu": float(noise_hu),
        "patient_position": "HFS",
        "tumours": [t.to_dict() for t in anatomy.tumours],
        "tissue_hu": dict(TISSUE_HU),
        "label_names": {str(k): v for k, v in names.items()},
    }
    report(progress, 1.0, "phantom ready")
    return image, label_map, info
