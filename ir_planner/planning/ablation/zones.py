"""Ablation zones on needle trajectories (LPS, mm).

A :class:`Probe` is a device at a setting with its tip at a point and its shaft along a
direction (entry → tip). :func:`zone_for` turns one or more probes into a zone:

* **Heat (microwave, RF)**: each probe gives an ellipsoid of revolution aligned with
  the needle axis (``length_mm`` along it, ``diameter_mm`` across), its centre placed
  from the tip by the device geometry (``distal_edge_beyond_tip_mm`` or
  ``tip_to_centre_mm``). Several probes combine as the **union** of their ellipsoids.
  The calibration factor scales length and diameter about the centre (the tip-to-centre
  distance is kept).
* **Cryo**: each probe gives a radial temperature profile ``T_i(d)`` (piecewise linear
  through the cited isotherm radii, extended linearly, capped at body temperature),
  ``d`` = distance to the probe's freezing centre. Several probes combine by adding
  their *cooling* ``ΔT_i = T_body − T_i`` in a p-norm::

      ΔT = (Σ ΔT_iᵖ)^(1/p),  T = T_body − ΔT,  p = 8

  Linear superposition (p = 1, exact for steady linear conduction) merges the −40 °C
  cores of needles up to ~3 cm apart, more than the gel study in the catalog reports
  (cores merge at 1.5–2 cm, but at 2.5 cm show a core > −40 °C or an hourglass).
  p = 8 reproduces that: two needles of the catalog's 17G model merge their −40 °C
  zones up to 23 mm apart and not at 25 mm; p → ∞ would be the plain union. The
  zone is the region colder than the lethal isotherm (−40 °C by default).
  Calibration scales the isotherm radii.

Signed distances are positive **inside** the zone, in mm. For ellipsoids they are exact
(point-to-ellipse distance by bisection, Eberly 2013, in the plane through the axis);
for a union, points inside get the largest single-zone depth (a lower bound of the true
distance to the union boundary, i.e. conservative for margins); cryo distances are the
first-order estimate ``(T_iso − T)/|∇T|`` (exact for a single probe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ir_planner.core.errors import InputError
from ir_planner.core.volume import ImageVolume
from ir_planner.planning.ablation.devices import Device, DeviceSetting

__all__ = [
    "CRYO_COMBINE_P",
    "Probe",
    "EllipsoidZone",
    "CryoZone",
    "HeatZone",
    "Zone",
    "zone_for",
    "ellipse_signed_distance",
    "voxelise",
]

CRYO_COMBINE_P = 8.0
_BISECT_ITERS = 40


def _unit(v: ArrayLike, what: str) -> NDArray[np.float64]:
    arr = np.asarray(v, dtype=float).reshape(3)
    n = float(np.linalg.norm(arr))
    if not np.isfinite(n) or n < 1e-9:
        raise InputError(f"{what} must be a non-zero direction; got {arr.tolist()}")
    return arr / n


@dataclass(frozen=True)
class Probe:
    """An ablation device at a setting, placed with its tip at ``tip_lps``.

    Attributes
    ----------
    device : Device
    setting : DeviceSetting
    tip_lps : numpy.ndarray, shape (3,)
        Needle tip (LPS, mm).
    direction_lps : numpy.ndarray, shape (3,)
        Unit vector of insertion (entry → tip).
    calibration : float
        Zone size factor (1.0 = as charted; measured zones are often smaller).
    name : str
        Usually the trajectory's name.
    """

    device: Device
    setting: DeviceSetting
    tip_lps: NDArray[np.float64]
    direction_lps: NDArray[np.float64]
    calibration: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        if self.device.kind == "biopsy":
            raise InputError(f"device {self.device.id!r} is a biopsy needle; it has no "
                             "ablation zone")
        tip = np.asarray(self.tip_lps, dtype=float).reshape(3)
        if not np.all(np.isfinite(tip)):
            raise InputError(f"probe tip must be finite LPS mm; got {tip.tolist()}")
        if not (np.isfinite(self.calibration) and 0.2 <= self.calibration <= 3.0):
            raise InputError(f"calibration factor must be within 0.2–3.0; got {self.calibration}")
        object.__setattr__(self, "tip_lps", tip)
        object.__setattr__(self, "direction_lps", _unit(self.direction_lps, "probe direction"))

    @classmethod
    def on_trajectory(cls, device: Device, setting: DeviceSetting | str | None,
                      entry_lps: ArrayLike, target_lps: ArrayLike, *,
                      depth_offset_mm: float = 0.0, calibration: float = 1.0,
                      name: str = "") -> "Probe":
        """A probe on the path entry → target, its tip ``depth_offset_mm`` beyond the target.

        Negative offsets pull the tip back towards the entry.
        """
        entry = np.asarray(entry_lps, dtype=float).reshape(3)
        target = np.asarray(target_lps, dtype=float).reshape(3)
        direction = target - entry
        if np.linalg.norm(direction) < 1e-6:
            raise InputError("trajectory entry and target coincide (zero-length path)")
        u = _unit(direction, "trajectory")
        st = setting if isinstance(setting, DeviceSetting) else device.setting(setting)
        return cls(device, st, target + float(depth_offset_mm) * u, u, float(calibration), name)

    # -- geometry --------------------------------------------------------------------------
    def heat_geometry(self) -> tuple[NDArray[np.float64], float, float]:
        """Centre (LPS), half-length and radius (mm) of this heat probe's calibrated ellipsoid."""
        z = self.setting.zone
        length, diameter = float(z["length_mm"]), float(z["diameter_mm"])
        if "tip_to_centre_mm" in z:
            back = float(z["tip_to_centre_mm"])
        else:
            back = length / 2.0 - float(z["distal_edge_beyond_tip_mm"])
        centre = self.tip_lps - back * self.direction_lps
        c = self.calibration
        return centre, c * length / 2.0, c * diameter / 2.0

    def cryo_centre(self) -> NDArray[np.float64]:
        """Freezing centre (LPS, mm) of a cryo probe."""
        back = float(self.setting.zone.get("tip_to_centre_mm", 0.0))
        return self.tip_lps - back * self.direction_lps


# -- ellipse distance ----------------------------------------------------------------------
def ellipse_signed_distance(z: NDArray[np.float64], rho: NDArray[np.float64], a: float,
                            b: float) -> NDArray[np.float64]:
    """Exact signed distance (mm, positive inside) from points (z, ρ) to the ellipse.

    The ellipse has semi-axis ``a`` along z and ``b`` along ρ ≥ 0 (the meridian of an
    ellipsoid of revolution). Robust bisection after Eberly, "Distance from a point to an
    ellipse, an ellipsoid, or a hyperellipsoid" (Geometric Tools, 2013).
    """
    z = np.abs(np.asarray(z, dtype=float))
    rho = np.abs(np.asarray(rho, dtype=float))
    if a >= b:
        y0, y1, e0, e1 = z, rho, float(a), float(b)
    else:
        y0, y1, e0, e1 = rho, z, float(b), float(a)
    tiny = 1e-9 * e0
    y0 = np.maximum(y0, tiny)
    y1 = np.maximum(y1, tiny)
    z0, z1 = y0 / e0, y1 / e1
    g = z0 * z0 + z1 * z1 - 1.0
    r0 = (e0 / e1) ** 2
    n0 = r0 * z0
    s0 = z1 - 1.0
    s1 = np.where(g < 0, 0.0, np.hypot(n0, z1) - 1.0)
    for _ in range(_BISECT_ITERS):
        s = 0.5 * (s0 + s1)
        ratio0 = n0 / (s + r0)
        ratio1 = z1 / (s + 1.0)
        gs = ratio0 * ratio0 + ratio1 * ratio1 - 1.0
        pos = gs > 0
        s0 = np.where(pos, s, s0)
        s1 = np.where(pos, s1, s)
    s = 0.5 * (s0 + s1)
    x0 = r0 * y0 / (s + r0)
    x1 = y1 / (s + 1.0)
    dist = np.hypot(x0 - y0, x1 - y1)
    return np.where(g <= 0, dist, -dist)


def _approx_ellipse_sd(z: NDArray[np.float64], rho: NDArray[np.float64], a: float,
                       b: float) -> NDArray[np.float64]:
    """First-order signed distance (positive inside), accurate near the boundary."""
    q = np.sqrt((z / a) ** 2 + (rho / b) ** 2)
    grad = np.sqrt((z / (a * a)) ** 2 + (rho / (b * b)) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (1.0 - q) * q / grad
    return np.where(grad > 1e-12, s, min(a, b))


# -- zones ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EllipsoidZone:
    """Ellipsoid of revolution: centre, unit axis, half-length ``a`` and radius ``b`` (mm)."""

    centre_lps: NDArray[np.float64]
    axis_lps: NDArray[np.float64]
    half_length_mm: float
    radius_mm: float

    def axial(self, points_lps: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Axial coordinate z and radial distance ρ (mm) of points relative to the zone."""
        d = np.asarray(points_lps, dtype=float).reshape(-1, 3) - self.centre_lps
        zc = d @ self.axis_lps
        rho = np.sqrt(np.maximum(np.einsum("ij,ij->i", d, d) - zc * zc, 0.0))
        return zc, rho

    def signed_distance(self, points_lps: ArrayLike, *, exact: bool = True
                        ) -> NDArray[np.float64]:
        """Signed distance in mm (positive inside)."""
        zc, rho = self.axial(points_lps)
        fn = ellipse_signed_distance if exact else _approx_ellipse_sd
        return fn(zc, rho, self.half_length_mm, self.radius_mm)

    def bounds_lps(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Axis-aligned bounding box (min, max) in LPS mm."""
        u = self.axis_lps
        a, b = self.half_length_mm, self.radius_mm
        ext = np.sqrt(a * a * u * u + b * b * (1.0 - u * u))
        return self.centre_lps - ext, self.centre_lps + ext

    @property
    def volume_ml(self) -> float:
        """Analytic volume in ml."""
        return float(4.0 / 3.0 * np.pi * self.half_length_mm * self.radius_mm ** 2 / 1000.0)


@dataclass(frozen=True)
class HeatZone:
    """Union of the ellipsoids of one or more heat probes."""

    probes: tuple[Probe, ...]
    ellipsoids: tuple[EllipsoidZone, ...]
    kind: str = "heat"

    @classmethod
    def from_probes(cls, probes: Sequence[Probe]) -> "HeatZone":
        """Ellipsoids aligned with each probe's axis at its tip."""
        ells = []
        for p in probes:
            centre, a, b = p.heat_geometry()
            ells.append(EllipsoidZone(centre, p.direction_lps, a, b))
        return cls(tuple(probes), tuple(ells))

    def signed_distance(self, points_lps: ArrayLike, *, exact: bool = True
                        ) -> NDArray[np.float64]:
        """Signed distance in mm (positive inside; union rule in the module docstring)."""
        pts = np.asarray(points_lps, dtype=float).reshape(-1, 3)
        out = self.ellipsoids[0].signed_distance(pts, exact=exact)
        for e in self.ellipsoids[1:]:
            out = np.maximum(out, e.signed_distance(pts, exact=exact))
        return out

    def bounds_lps(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Axis-aligned bounding box (min, max) in LPS mm."""
        bs = [e.bounds_lps() for e in self.ellipsoids]
        return np.min([b[0] for b in bs], axis=0), np.max([b[1] for b in bs], axis=0)


def _profile(setting: DeviceSetting, calibration: float) -> tuple[NDArray[np.float64],
                                                                    NDArray[np.float64], float]:
    radii = setting.zone["isotherm_radii_mm"]
    pts = sorted((float(t), float(r) * calibration) for t, r in radii.items())
    temps = np.array([p[0] for p in pts])
    rs = np.array([p[1] for p in pts])
    return rs, temps, float(setting.zone["body_temperature_c"])


@dataclass(frozen=True)
class CryoZone:
    """Region colder than ``isotherm_c`` of the combined field of cryo probes."""

    probes: tuple[Probe, ...]
    isotherm_c: float
    p: float = CRYO_COMBINE_P
    kind: str = "cryo"
    _centres: NDArray[np.float64] = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_centres", np.array([pr.cryo_centre() for pr in self.probes]))
        body = {_profile(pr.setting, pr.calibration)[2] for pr in self.probes}
        if len(body) != 1:
            raise InputError("cryo probes of one zone must share the body temperature")
        if not self.isotherm_c < body.pop():
            raise InputError(f"isotherm {self.isotherm_c} °C must be below body temperature")

    def _single(self, pr: Probe, d: NDArray[np.float64]) -> tuple[NDArray[np.float64],
                                                                   NDArray[np.float64]]:
        """Cooling ΔT_i(d) (≥ 0, °C) and its derivative d(ΔT_i)/dd."""
        rs, temps, body = _profile(pr.setting, pr.calibration)
        slopes = np.diff(temps) / np.diff(rs)
        # piecewise linear in d; linear extrapolation below the first and above the last radius
        idx = np.clip(np.searchsorted(rs, d) - 1, 0, len(rs) - 2)
        t = temps[idx] + slopes[idx] * (d - rs[idx])
        dt = slopes[idx].copy()
        warm = t >= body
        t = np.where(warm, body, t)
        dt = np.where(warm, 0.0, dt)
        return body - t, -dt

    def temperature(self, points_lps: ArrayLike) -> NDArray[np.float64]:
        """Modelled temperature (°C) at points."""
        return self._field(np.asarray(points_lps, dtype=float).reshape(-1, 3))[0]

    def _field(self, pts: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        body = _profile(self.probes[0].setting, self.probes[0].calibration)[2]
        acc = np.zeros(len(pts))
        grad = np.zeros((len(pts), 3))
        parts = []
        for pr, c in zip(self.probes, self._centres):
            v = pts - c
            d = np.sqrt(np.einsum("ij,ij->i", v, v))
            cool, dcool = self._single(pr, d)
            with np.errstate(divide="ignore", invalid="ignore"):
                unit = np.where(d[:, None] > 1e-9, v / d[:, None], 0.0)
            parts.append((cool, dcool, unit))
            acc += cool ** self.p
        total = acc ** (1.0 / self.p)
        with np.errstate(divide="ignore", invalid="ignore"):
            for cool, dcool, unit in parts:
                w = np.where(total > 0, (cool / np.where(total > 0, total, 1.0)) ** (self.p - 1),
                             0.0)
                grad += (w * dcool)[:, None] * unit
        # T = body − ΔT, so ∇T = −∇ΔT
        return body - total, -grad

    def signed_distance(self, points_lps: ArrayLike, *, exact: bool = True
                        ) -> NDArray[np.float64]:
        """First-order signed distance to the isotherm (mm, positive inside / colder)."""
        pts = np.asarray(points_lps, dtype=float).reshape(-1, 3)
        temp, grad = self._field(pts)
        gnorm = np.linalg.norm(grad, axis=1)
        # far outside the field is flat (body temperature): use the distance to the
        # nearest single-probe isotherm sphere there
        r_iso = np.array([self._iso_radius(pr) for pr in self.probes])
        dist = np.linalg.norm(pts[:, None, :] - self._centres[None], axis=2)
        fallback = np.max(r_iso[None, :] - dist, axis=1)
        # where the field is cold but flat (the saddle between probes) the first-order
        # estimate breaks down: bound the gradient from below by half a single probe's slope
        rs, temps, body = _profile(self.probes[0].setting, self.probes[0].calibration)
        slope_floor = 0.5 * float(np.min(np.abs(np.diff(temps) / np.diff(rs))))
        cold = temp < body - 1e-6
        s = (self.isotherm_c - temp) / np.maximum(gnorm, slope_floor)
        return np.where(cold, s, fallback)

    def _iso_radius(self, pr: Probe, cooling_needed: float | None = None) -> float:
        rs, temps, body = _profile(pr.setting, pr.calibration)
        target = self.isotherm_c if cooling_needed is None else body - cooling_needed
        slopes = np.diff(temps) / np.diff(rs)
        for i in range(len(rs) - 1):
            if temps[i] <= target <= temps[i + 1]:
                return float(rs[i] + (target - temps[i]) / slopes[i])
        if target < temps[0]:
            return float(max(rs[0] + (target - temps[0]) / slopes[0], 0.0))
        return float(rs[-1] + (target - temps[-1]) / slopes[-1])

    def bounds_lps(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Axis-aligned bounding box (min, max) in LPS mm (conservative for merging)."""
        body = _profile(self.probes[0].setting, self.probes[0].calibration)[2]
        need = (body - self.isotherm_c) / len(self.probes) ** (1.0 / self.p)
        r = max(self._iso_radius(pr, need) for pr in self.probes)
        return self._centres.min(axis=0) - r, self._centres.max(axis=0) + r

    def isotherm(self, temperature_c: float) -> "CryoZone":
        """The same probes' region colder than ``temperature_c``."""
        return CryoZone(self.probes, float(temperature_c), self.p)


Zone = HeatZone | CryoZone


def zone_for(probes: Probe | Sequence[Probe], *, isotherm_c: float | None = None) -> Zone:
    """The combined zone of one or more probes (all heat or all cryo).

    Parameters
    ----------
    probes : Probe or sequence of Probe
    isotherm_c : float, optional
        Cryo only: the isotherm bounding the zone (default: the setting's lethal isotherm).
    """
    plist = [probes] if isinstance(probes, Probe) else list(probes)
    if not plist:
        raise InputError("an ablation zone needs at least one probe")
    kinds = {("heat" if p.device.is_heat else "cryo") for p in plist}
    if len(kinds) != 1:
        raise InputError("cannot combine heat-based and cryo probes in one zone")
    if kinds.pop() == "heat":
        return HeatZone.from_probes(plist)
    iso = float(plist[0].setting.zone["lethal_isotherm_c"]) if isotherm_c is None else isotherm_c
    return CryoZone(tuple(plist), iso)


def voxelise(zone: Zone, *, spacing_mm: float = 0.5, pad_mm: float = 1.0) -> ImageVolume:
    """The zone as a uint8 mask on a local LPS-aligned grid (1 = inside).

    Parameters
    ----------
    zone : HeatZone or CryoZone
    spacing_mm : float
        Isotropic grid spacing (≤ 0.5 mm recommended).
    pad_mm : float
        Extra border around the zone's bounding box.
    """
    if not spacing_mm > 0:
        raise InputError(f"spacing_mm must be > 0; got {spacing_mm}")
    lo, hi = zone.bounds_lps()
    lo = lo - pad_mm
    n = np.ceil((hi + pad_mm - lo) / spacing_mm).astype(int) + 1
    if np.prod(n) > 200_000_000:
        raise InputError(f"zone grid of {n.tolist()} voxels is too large; use a larger spacing")
    ii, jj, kk = (np.arange(n[0]), np.arange(n[1]), np.arange(n[2]))
    mask = np.zeros((n[2], n[1], n[0]), dtype=np.uint8)
    xs = lo[0] + ii * spacing_mm
    ys = lo[1] + jj * spacing_mm
    for k in kk:
        z = lo[2] + k * spacing_mm
        gx, gy = np.meshgrid(xs, ys)
        pts = np.column_stack([gx.ravel(), gy.ravel(), np.full(gx.size, z)])
        mask[k] = (zone.signed_distance(pts, exact=False) >= 0).reshape(n[1], n[0])
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = lo
    return ImageVolume(mask, affine, metadata={"description": "ablation zone"})
