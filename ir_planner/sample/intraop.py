"""The matching intra-procedural scan of the synthetic phantom, with a needle in place.

The same synthetic patient has moved on the table (a rigid shift of 5–15 mm and a
rotation of 2–5°), and a thin axial slab is scanned around the target with a
metal biopsy/ablation needle inserted along a safe path. The ground truth
(transform, needle tip/entry/axis in both frames) is returned with the scan.

Frames and conventions
----------------------
* ``plan``: DICOM patient coordinates (LPS, mm) of the planning CT.
* ``intraop``: DICOM patient coordinates (LPS, mm) of the intra-op scan. The
  table and the scanner do not move; the patient does.
* ``intraop_to_plan`` is a 4×4 rigid matrix acting on homogeneous column
  vectors: ``p_plan = intraop_to_plan @ [x, y, z, 1]`` maps a point of the
  intra-op image to the same anatomical point in the planning image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ir_planner.core.errors import DatasetError, InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.progress import ProgressCallback, report, subrange
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.sample.phantom import (
    _TABLE_Y,
    LABEL_NAMES,
    TISSUE_HU,
    Anatomy,
    Tumour,
    render_tissue,
    tissue_to_hu,
)

__all__ = ["IntraopScan", "NEEDLE_GAUGE_MM", "make_intraop_scan", "rotation_matrix",
           "find_safe_path"]

#: Outer diameter (mm) of common needle gauges.
NEEDLE_GAUGE_MM: dict[int, float] = {14: 2.11, 15: 1.83, 16: 1.65, 17: 1.47, 18: 1.27,
                                     19: 1.07, 20: 0.91, 21: 0.82, 22: 0.72}

_SCANNER_MAX_HU = 3071.0
_SAFE_NAMES = ("skin", "subcutaneous_fat", "abdominal_wall_muscle", "visceral_fat",
               "diaphragm", "liver", "autochthon_left", "autochthon_right")


@dataclass
class IntraopScan:
    """An intra-op scan with its ground truth.

    Attributes
    ----------
    image : ImageVolume
        The intra-op CT slab (HU, int16), in the intra-op frame.
    labels : LabelMap
        The phantom's structures resampled into the intra-op scan (ground truth,
        no needle).
    truth : dict
        JSON-ready ground truth; see :func:`make_intraop_scan`.
    """

    image: ImageVolume
    labels: LabelMap
    truth: dict[str, Any]


def rotation_matrix(axis: Any, angle_deg: float) -> NDArray[np.float64]:
    """3×3 rotation by ``angle_deg`` about the unit vector ``axis`` (right-hand rule)."""
    u = np.asarray(axis, dtype=float)
    u = u / np.linalg.norm(u)
    a = math.radians(angle_deg)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)


def _lookup(labels: LabelMap, points_lps: NDArray[np.float64]) -> NDArray[np.int64]:
    """Label value (layer 0) at LPS points by nearest voxel; 0 outside the grid."""
    grid = labels.grid
    ijk = np.rint(grid.world_to_index(points_lps)).astype(np.int64)
    ni, nj, nk = grid.shape_ijk
    ok = ((ijk[..., 0] >= 0) & (ijk[..., 0] < ni) & (ijk[..., 1] >= 0) & (ijk[..., 1] < nj)
          & (ijk[..., 2] >= 0) & (ijk[..., 2] < nk))
    out = np.zeros(points_lps.shape[:-1], dtype=np.int64)
    layer = labels.layers[0]
    out[ok] = layer[ijk[..., 2][ok], ijk[..., 1][ok], ijk[..., 0][ok]]
    return out


def find_safe_path(labels: LabelMap, target: str, centre_lps: Any, *,
                   needle_radius_mm: float = 0.75, max_tilt_deg: float = 30.0,
                   max_dz_mm: float = 60.0, max_entry_y_mm: float = 40.0,
                   ) -> tuple[NDArray[np.float64], float]:
    """The shortest straight path from the skin to ``centre_lps`` that keeps its margins.

    A brute-force search over in-plane angles (5° steps) and craniocaudal tilts
    (10° steps). The needle axis may only cross skin, fat, wall muscle, diaphragm,
    liver and the target; around it, rings of probe points at 1, 2.5, 3.5 and 5.5 mm
    must keep every other structure farther than its ``margin_mm`` (catalog default:
    bone 2, vessels and bowel 3, lung 5 mm) plus the needle radius. Entries through
    the back (on the table) are excluded.

    Returns
    -------
    direction, length_mm
        Unit vector from the target towards the entry (LPS) and the
        target-to-skin distance in mm.
    """
    centre = np.asarray(centre_lps, dtype=float)
    allowed = {labels.get(n).label for n in _SAFE_NAMES if n in labels.names}
    allowed.add(labels.get(target).label)
    clearance = np.full(256, needle_radius_mm)  # mm a probe must be from this label
    clearance[0] = 0.0
    for s in labels.structures:
        if s.layer == 0 and s.label < 256:
            clearance[s.label] = 0.0 if s.label in allowed else (
                needle_radius_mm + (s.margin_mm if s.forbidden else 0.0))
    radii = np.array([1.0, 2.5, 3.5, 5.5])
    angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
    best: tuple[float, NDArray[np.float64], float] | None = None
    steps = np.arange(0.0, 300.0, 1.0)
    tilts = np.arange(-max_tilt_deg, max_tilt_deg + 1e-6, 10.0)
    for tilt in sorted(tilts, key=abs):
        for phi in np.arange(0.0, 360.0, 5.0):
            t, p = math.radians(tilt), math.radians(phi)
            d = np.array([math.cos(t) * math.cos(p), math.cos(t) * math.sin(p), math.sin(t)])
            pts = centre + steps[:, None] * d
            lab = _lookup(labels, pts)
            outside = np.nonzero(lab == 0)[0]
            if outside.size == 0:
                continue
            s_exit = float(steps[outside[0]])
            entry = centre + s_exit * d
            if entry[1] > max_entry_y_mm or abs(entry[2] - centre[2]) > max_dz_mm:
                continue
            inner = pts[: outside[0]]
            if np.any(clearance[np.minimum(lab[: outside[0]], 255)] > 0):
                continue
            e1 = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
            e1 /= np.linalg.norm(e1)
            e2 = np.cross(d, e1)
            unit = np.cos(angles)[:, None] * e1 + np.sin(angles)[:, None] * e2  # (16, 3)
            ring = (radii[:, None, None] * unit[None]).reshape(-1, 3)  # (64, 3)
            rho = np.repeat(radii, angles.size)
            plab = _lookup(labels, inner[:, None, :] + ring[None])  # (n, 64)
            if np.any(clearance[np.minimum(plab, 255)] > rho[None, :]):
                continue
            score = s_exit + 0.3 * abs(tilt)
            if best is None or score < best[0]:
                best = (score, d, s_exit)
    if best is None:
        raise DatasetError(f"no safe needle path to {target} found in the phantom")
    return best[1], best[2]


def make_intraop_scan(plan_labels: LabelMap, info: dict[str, Any], *, seed: int = 0,
                      target: str = "tumour_1", n_slices: int = 36,
                      slice_mm: float | None = None, pixel_mm: float | None = None,
                      needle_gauge: int = 17,
                      noise_hu: float = 12.0, progress: ProgressCallback | None = None,
                      ) -> IntraopScan:
    """The intra-procedural scan matching a phantom from :func:`make_phantom`.

    Parameters
    ----------
    plan_labels : LabelMap
        The phantom's label map (used to choose a safe needle path).
    info : dict
        The phantom's ``info`` dictionary (grid, tumours, seed).
    seed : int
        Seed for the patient motion, streak phases and noise.
    target : str
        Tumour the needle is aimed at.
    n_slices : int
        Number of axial slices of the slab (centred between target and entry).
    slice_mm : float, optional
        Slice spacing in mm (default: the planning slice spacing).
    pixel_mm : float, optional
        In-plane pixel spacing in mm (default: the planning pixel spacing); the
        field of view stays that of the planning scan.
    needle_gauge : int
        Needle gauge (17 G = 1.47 mm outer diameter).
    noise_hu : float
        Noise standard deviation in HU.
    progress : callable, optional
        Progress callback.

    Returns
    -------
    IntraopScan
        ``truth`` holds ``intraop_to_plan`` / ``plan_to_intraop`` (4×4),
        ``rotation_deg``, ``rotation_axis``, ``rotation_centre_plan_lps_mm``,
        ``shift_mm``, the needle (``tip``/``entry`` in both frames, unit ``axis``
        from entry to tip in both frames, ``diameter_mm``) and the target.
    """
    if needle_gauge not in NEEDLE_GAUGE_MM:
        raise InputError(f"needle_gauge must be one of {sorted(NEEDLE_GAUGE_MM)}; "
                         f"got {needle_gauge}")
    if n_slices < 4:
        raise InputError(f"n_slices must be at least 4; got {n_slices}")
    tumours = {t["name"]: t for t in info["tumours"]}
    if target not in tumours:
        raise InputError(f"target {target!r} is not a tumour of this phantom; "
                         f"available: {', '.join(tumours) or '(none)'}")
    anatomy = Anatomy(tumours=tuple(Tumour(t["name"], tuple(t["centre_lps_mm"]),
                                           float(t["radius_mm"])) for t in info["tumours"]),
                      seed=int(info["seed"]))
    spacing_plan = [float(s) for s in info["spacing_mm"]]
    size_plan = [int(n) for n in info["size_ijk"]]
    sz = float(slice_mm) if slice_mm else spacing_plan[2]
    centre_plan = np.asarray(tumours[target]["centre_lps_mm"], dtype=float)
    radius = float(tumours[target]["radius_mm"])
    diameter = NEEDLE_GAUGE_MM[needle_gauge]

    # --- patient motion (plan → intraop): rotation about the target, then a shift ------
    rng = np.random.default_rng([int(seed), 2])
    angle = float(rng.uniform(2.0, 5.0))
    axis = np.array([rng.normal(0, 0.35), rng.normal(0, 0.35), 1.0])
    axis /= np.linalg.norm(axis)
    direction = rng.normal(size=3)
    direction[1] *= 0.3  # the table limits anterior-posterior motion
    direction /= np.linalg.norm(direction)
    shift = direction * float(rng.uniform(5.0, 15.0))
    rot = rotation_matrix(axis, angle)
    plan_to_intraop = np.eye(4)
    plan_to_intraop[:3, :3] = rot
    plan_to_intraop[:3, 3] = centre_plan - rot @ centre_plan + shift
    intraop_to_plan = np.linalg.inv(plan_to_intraop)

    # --- needle path (plan frame) -----------------------------------------------------------
    report(progress, 0.02, "choosing a safe needle path")
    out_dir, depth = find_safe_path(plan_labels, target, centre_plan)
    entry_plan = centre_plan + depth * out_dir
    tip_plan = centre_plan + 3.0 * out_dir  # 3 mm short of the centre, inside the lesion
    axis_plan = -out_dir

    def to_intra(p: NDArray[np.float64]) -> NDArray[np.float64]:
        return plan_to_intraop[:3, :3] @ p + plan_to_intraop[:3, 3]

    tip_i, entry_i = to_intra(tip_plan), to_intra(entry_plan)
    axis_i = plan_to_intraop[:3, :3] @ axis_plan
    centre_i = to_intra(centre_plan)

    # --- intra-op grid: same in-plane geometry, thin slab centred on the needle -----------
    sx, sy = spacing_plan[0], spacing_plan[1]
    nx, ny = size_plan[0], size_plan[1]
    if pixel_mm is not None:
        if pixel_mm <= 0:
            raise InputError(f"pixel_mm must be > 0; got {pixel_mm}")
        nx, ny = round(nx * sx / pixel_mm), round(ny * sy / pixel_mm)
        sx = sy = float(pixel_mm)
    xs = (np.arange(nx) - (nx - 1) / 2.0) * sx
    ys = (np.arange(ny) - (ny - 1) / 2.0) * sy
    z_mid = 0.5 * (tip_i[2] + entry_i[2])
    z0 = round((z_mid - (n_slices - 1) / 2.0 * sz) * 2.0) / 2.0  # 0.5 mm grid for origins
    zs = z0 + np.arange(n_slices) * sz
    affine = affine_from_geometry((xs[0], ys[0], zs[0]), (sx, sy, sz), np.eye(3))

    # --- render the patient in the plan frame around the slab, then resample -------------
    corners = np.array([[x, y, z] for x in (xs[0], xs[-1]) for y in (ys[0], ys[-1])
                        for z in (zs[0] - sz, zs[-1] + sz)])
    corners_plan = corners @ intraop_to_plan[:3, :3].T + intraop_to_plan[:3, 3]
    pad = 2.0 * max(sx, sy, sz)
    lo, hi = corners_plan.min(axis=0) - pad, corners_plan.max(axis=0) + pad
    fine = (sx, sy, min(sz, spacing_plan[2]) / 2.0)
    fx, fy, fz = (np.arange(lo[a], hi[a] + fine[a], fine[a]) for a in range(3))
    tissue_f, labels_f = render_tissue(fx, fy, fz, anatomy, table=False,
                                       progress=subrange(progress, 0.05, 0.45))
    hu_f = tissue_to_hu(tissue_f)
    del tissue_f
    report(progress, 0.45, "moving the patient")
    shape = (n_slices, ys.size, xs.size)
    hu = np.empty(shape, dtype=np.float32)
    labels = np.empty(shape, dtype=np.uint8)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    m, t = intraop_to_plan[:3, :3], intraop_to_plan[:3, 3]
    origin_f = np.array([fx[0], fy[0], fz[0]])
    for k in range(n_slices):
        pts = np.stack([xx, yy, np.full_like(xx, zs[k])], axis=-1) @ m.T + t
        idx = (pts - origin_f) / np.asarray(fine)
        coords = [idx[..., 2], idx[..., 1], idx[..., 0]]
        hu[k] = ndimage.map_coordinates(hu_f, coords, order=1, mode="nearest")
        labels[k] = ndimage.map_coordinates(labels_f, coords, order=0, mode="nearest")
        report(progress, 0.45 + 0.3 * (k + 1) / n_slices, "moving the patient")
    del hu_f, labels_f

    # the table stays with the scanner
    y2, x2 = ys[:, None], xs[None, :]
    tab = (y2 >= _TABLE_Y[0]) & (y2 <= _TABLE_Y[1]) & (np.abs(x2) <= 175.0)
    shell = tab & ((y2 <= _TABLE_Y[0] + 2.5) | (y2 >= _TABLE_Y[1] - 2.5) | (np.abs(x2) >= 172.5))
    table_hu = np.where(shell, TISSUE_HU["table_shell"], TISSUE_HU["table_foam"])
    free = (labels == 0) & np.broadcast_to(tab, shape)
    hu[free] = np.broadcast_to(table_hu, shape)[free]

    # --- scanner blur, needle with blooming and streaks, noise --------------------------
    report(progress, 0.8, "inserting the needle")
    hu = ndimage.gaussian_filter(hu, sigma=(0.0, 0.6 / sy, 0.6 / sx), mode="nearest")
    outside_mm = 40.0
    hub_i = entry_i - outside_mm * axis_i
    _add_needle(hu, xs, ys, zs, hub_i, tip_i, diameter, sz, np.random.default_rng([seed, 3]))
    hu += np.random.default_rng([int(seed), 4]).standard_normal(shape, dtype=np.float32) * \
        np.float32(noise_hu)
    np.clip(np.rint(hu), -1024, _SCANNER_MAX_HU, out=hu)
    ct = hu.astype(np.int16)

    image = ImageVolume(ct, affine, modality="CT", metadata={
        "description": "IR Planner synthetic intra-procedural CT with needle (not patient data)",
        "patient_position": "HFS", "synthetic": True})
    present = sorted(set(int(v) for v in np.unique(labels)) - {0})
    label_map = LabelMap.from_array(labels, ImageVolume(labels, affine.copy()),
                                    {v: LABEL_NAMES[v] for v in present})

    def r(v: Any) -> list[float]:
        return [round(float(a), 6) for a in np.asarray(v).ravel()]

    truth = {
        "format": "ir-planner-sample-intraop-truth",
        "format_version": 1,
        "synthetic": True,
        "conventions": {
            "units": "millimetres for positions, lengths and shifts; degrees for angles",
            "frames": {
                "plan": "DICOM patient coordinates (LPS: +x left, +y posterior, +z head) of "
                        "the planning CT series",
                "intraop": "DICOM patient coordinates (LPS) of the intra-op CT series; it has "
                           "its own FrameOfReferenceUID because the patient moved",
            },
            "matrices": "4x4, row-major nested lists, acting on homogeneous column vectors: "
                        "p_plan = intraop_to_plan @ [x, y, z, 1] for a point of the intra-op "
                        "scan; plan_to_intraop is its inverse",
            "motion": "plan_to_intraop = rotation by rotation_deg about rotation_axis through "
                      "rotation_centre_plan_lps_mm, then translation by shift_mm",
            "needle_axis": "unit vector from entry to tip",
        },
        "intraop_to_plan": [r(row) for row in intraop_to_plan],
        "plan_to_intraop": [r(row) for row in plan_to_intraop],
        "rotation_deg": round(angle, 6),
        "rotation_axis": r(axis),
        "rotation_centre_plan_lps_mm": r(centre_plan),
        "shift_mm": r(shift),
        "needle": {
            "gauge": needle_gauge,
            "diameter_mm": diameter,
            "tip_plan_lps_mm": r(tip_plan),
            "entry_plan_lps_mm": r(entry_plan),
            "axis_plan": r(axis_plan),
            "tip_intraop_lps_mm": r(tip_i),
            "entry_intraop_lps_mm": r(entry_i),
            "axis_intraop": r(axis_i),
            "inserted_length_mm": round(float(np.linalg.norm(tip_plan - entry_plan)), 6),
            "outside_length_mm": outside_mm,
            "tip_inside_target": True,
            "tip_to_target_centre_mm": 3.0,
        },
        "target": {
            "structure": target,
            "centre_plan_lps_mm": r(centre_plan),
            "centre_intraop_lps_mm": r(centre_i),
            "radius_mm": radius,
        },
        "intraop_grid": {"size_ijk": [int(xs.size), int(ys.size), int(n_slices)],
                         "spacing_mm": [sx, sy, sz],
                         "origin_lps_mm": r([xs[0], ys[0], zs[0]])},
        "seed": int(seed),
    }
    report(progress, 1.0, "intra-op scan ready")
    return IntraopScan(image=image, labels=label_map, truth=truth)


def _add_needle(hu: NDArray[np.float32], xs: NDArray[np.float64], ys: NDArray[np.float64],
                zs: NDArray[np.float64], p0: NDArray[np.float64], p1: NDArray[np.float64],
                diameter_mm: float, slice_mm: float, rng: np.random.Generator) -> None:
    """Add a metal needle (segment p0→p1, LPS mm) with blooming and streaks, in place.

    The bright core follows ``3071·exp(−(d/w)²)`` with ``w = 0.93·diameter``, where
    ``d`` is the distance from the axis to the nearest point of the voxel's slab
    (its centre ± half the slice spacing along z: partial volume across the slice),
    so voxels above 2000 HU reach within about 1 mm of the axis for a 17 G needle.
    """
    d = p1 - p0
    length = float(np.linalg.norm(d))
    u = d / length
    w = 0.93 * diameter_mm
    reach = 3.0 * w
    lo, hi = np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach
    i0, i1 = np.searchsorted(xs, lo[0]), np.searchsorted(xs, hi[0], side="right")
    j0, j1 = np.searchsorted(ys, lo[1]), np.searchsorted(ys, hi[1], side="right")
    k0, k1 = np.searchsorted(zs, lo[2]), np.searchsorted(zs, hi[2], side="right")
    if i1 > i0 and j1 > j0 and k1 > k0:
        x = xs[i0:i1][None, None, :] - p0[0]
        y = ys[j0:j1][None, :, None] - p0[1]
        z = zs[k0:k1][:, None, None] - p0[2]
        # partial volume across the slice thickness: the voxel is the slab
        # [z - slice/2, z + slice/2]; take the point of it closest to the axis
        e_perp = np.array([0.0, 0.0, 1.0]) - u[2] * u
        ee = float(e_perp @ e_perp)
        if ee > 1e-12:
            wz = -(x * e_perp[0] + y * e_perp[1] + z * e_perp[2]) / ee
            z = z + np.clip(wz, -slice_mm / 2.0, slice_mm / 2.0)
        t = np.clip(x * u[0] + y * u[1] + z * u[2], 0.0, length)
        dist2 = (x - t * u[0]) ** 2 + (y - t * u[1]) ** 2 + (z - t * u[2]) ** 2
        hu[k0:k1, j0:j1, i0:i1] += (_SCANNER_MAX_HU * np.exp(-dist2 / w ** 2)).astype(np.float32)
    # streaks: per slice crossed by the needle, alternating bright/dark rays from the metal
    y2, x2 = ys[:, None], xs[None, :]
    inplane = math.hypot(u[0], u[1])
    psi = math.atan2(u[1], u[0])
    phases = rng.uniform(0, 2 * math.pi, size=2)
    for k, zk in enumerate(zs):
        za, zb = zk - slice_mm / 2.0, zk + slice_mm / 2.0
        if abs(u[2]) > 1e-9:
            ta, tb = sorted(((za - p0[2]) / u[2], (zb - p0[2]) / u[2]))
        elif za <= p0[2] <= zb:
            ta, tb = 0.0, length
        else:
            continue
        ta, tb = max(ta, 0.0), min(tb, length)
        if tb <= ta:
            continue
        metal_mm = tb - ta
        c = p0 + 0.5 * (ta + tb) * u
        rho = np.sqrt((x2 - c[0]) ** 2 + (y2 - c[1]) ** 2)
        theta = np.arctan2(y2 - c[1], x2 - c[0])
        g = (1.0 - np.exp(-((rho / 4.0) ** 2))) * (20.0 / (rho + 20.0))
        amount = min(1.0, metal_mm / max(slice_mm, 1e-6))
        streak = 130.0 * amount * g * (0.6 * np.cos(7.0 * theta + phases[0])
                                       + 0.4 * np.cos(12.0 * theta + phases[1]))
        if inplane > 0.1:
            streak -= 200.0 * inplane * g * np.abs(np.cos(theta - psi)) ** 30
        hu[k] += streak.astype(np.float32)
