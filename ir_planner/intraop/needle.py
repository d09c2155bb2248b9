"""Needle detection in intra-procedural CT: tip and axis from the metal in the image.

Method
------
1. *Metal voxels*: HU above ``metal_hu`` (2000 HU by default: cortical bone and
   contrast stay well below, streak artefacts of ±100–300 HU never reach it).
2. *Robust line fit*: sequential RANSAC over the metal voxel centres (LPS mm):
   a candidate line through two random metal voxels collects the voxels within
   ``inlier_mm`` of it; only the longest *contiguous* run along the line counts
   (a clip or a second needle on the same line beyond a gap is not part of it).
   The best line is refined by an intensity-weighted principal axis of its run;
   its voxels are removed and the search repeats, so a second needle or other
   metal is found as a separate object (clips are too short to be needles).
3. *Tip*: the intensity profile along the refined axis (maximum over a 1 mm disc,
   trilinear) falls from the shaft level to the background beyond the tip; the
   tip is where it crosses half-way, moved back by the metal blooming measured
   across the shaft (the half-level half-width of the shaft minus the needle
   radius), which is the same physical blur.
4. *Which end is the tip*: the end nearer the expected target when one is given,
   else the end inside the patient (the hub end is in air outside the skin).

All points LPS mm in the frame of the image searched, axis unit vectors from the
hub towards the tip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi

from ir_planner.core.errors import InputError
from ir_planner.core.volume import ImageVolume

__all__ = ["NeedleCandidate", "NeedleDetection", "detect_needles", "METAL_HU",
           "MIN_NEEDLE_LENGTH_MM"]

#: Metal threshold (HU).
METAL_HU = 2000.0
#: Shortest straight metal object called a needle (mm).
MIN_NEEDLE_LENGTH_MM = 20.0
#: At most this many metal voxels enter the line search (evenly subsampled beyond).
_MAX_POINTS = 60000


@dataclass(frozen=True)
class NeedleCandidate:
    """One straight metal object found in the image.

    Attributes
    ----------
    tip_lps : tuple of float
        Needle tip (LPS mm, frame of the image searched).
    hub_end_lps : tuple of float
        The other visible end (the hub end, or where the needle leaves the image).
    axis : tuple of float
        Unit vector from the hub end towards the tip.
    skin_lps : tuple of float or None
        Where the axis enters the patient (None when not seen).
    visible_length_mm : float
        Hub end to tip.
    n_voxels : int
        Metal voxels on the needle.
    rms_mm : float
        RMS distance of those voxels from the fitted axis.
    tip_inside_body : bool
        Whether the tip is inside the patient.
    tip_direction_certain : bool
        False when neither a target nor the skin told which end is the tip.
    """

    tip_lps: tuple[float, float, float]
    hub_end_lps: tuple[float, float, float]
    axis: tuple[float, float, float]
    skin_lps: tuple[float, float, float] | None
    visible_length_mm: float
    n_voxels: int
    rms_mm: float
    tip_inside_body: bool
    tip_direction_certain: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (keys carry units and frames)."""
        def r(v: Any) -> list[float] | None:
            return None if v is None else [round(float(x), 3) for x in v]

        return {"tip_lps_mm": r(self.tip_lps), "hub_end_lps_mm": r(self.hub_end_lps),
                "axis": [round(float(x), 5) for x in self.axis], "skin_lps_mm": r(self.skin_lps),
                "visible_length_mm": round(self.visible_length_mm, 2),
                "n_voxels": self.n_voxels, "rms_mm": round(self.rms_mm, 3),
                "tip_inside_body": self.tip_inside_body,
                "tip_direction_certain": self.tip_direction_certain}


@dataclass
class NeedleDetection:
    """The result of :func:`detect_needles`.

    Attributes
    ----------
    needles : list of NeedleCandidate
        Straight metal objects at least ``min_length_mm`` long, the one chosen as
        *the* needle first (nearest the expected target, else the longest).
    other_metal_voxels : int
        Metal voxels not on any needle (clips, wires, dense calcium...).
    warnings : list of str
        "no needle", "2 needles", ambiguous tip direction...
    """

    needles: list[NeedleCandidate] = field(default_factory=list)
    other_metal_voxels: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def needle(self) -> NeedleCandidate | None:
        """The needle guidance uses (None when none was found)."""
        return self.needles[0] if self.needles else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"needles": [n.to_dict() for n in self.needles], "count": len(self.needles),
                "other_metal_voxels": self.other_metal_voxels, "warnings": list(self.warnings)}


def _line_run(t: NDArray[np.float64], gap_mm: float) -> tuple[int, int, NDArray[np.intp]]:
    """Indices (into the sorted order) of the longest run of ``t`` with gaps ≤ gap_mm."""
    order = np.argsort(t)
    ts = t[order]
    breaks = np.nonzero(np.diff(ts) > gap_mm)[0]
    starts = np.concatenate([[0], breaks + 1])
    stops = np.concatenate([breaks + 1, [ts.size]])
    lengths = ts[stops - 1] - ts[starts]
    best = int(np.argmax(lengths))
    return int(starts[best]), int(stops[best]), order


def _ransac_line(pts: NDArray[np.float64], weights: NDArray[np.float64], *, inlier_mm: float,
                 gap_mm: float, rng: np.random.Generator, trials: int
                 ) -> tuple[NDArray[np.intp], float]:
    """Indices of the best line's contiguous inliers and that run's length (mm)."""
    n = pts.shape[0]
    best_idx = np.zeros(0, dtype=np.intp)
    best_score = -1.0
    best_len = 0.0
    for _ in range(trials):
        i, j = rng.integers(0, n, size=2)
        d = pts[j] - pts[i]
        norm = float(np.linalg.norm(d))
        if norm < 2.0 * inlier_mm:
            continue
        u = d / norm
        rel = pts - pts[i]
        t = rel @ u
        dist2 = (rel * rel).sum(axis=1) - t * t
        inl = np.nonzero(dist2 <= inlier_mm * inlier_mm)[0]
        if inl.size < 3:
            continue
        a, b, order = _line_run(t[inl], gap_mm)
        run = inl[order[a:b]]
        length = float(t[run].max() - t[run].min())
        score = float(weights[run].sum())
        if score > best_score:
            best_score, best_idx, best_len = score, run, length
    return best_idx, best_len


def _principal_axis(pts: NDArray[np.float64], w: NDArray[np.float64]
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    c = (pts * w[:, None]).sum(axis=0) / w.sum()
    x = (pts - c) * np.sqrt(w)[:, None]
    _u, _s, vt = np.linalg.svd(x, full_matrices=False)
    return c, vt[0]


class _Sampler:
    """Trilinear sampling of an image at LPS points (outside: ``fill``)."""

    def __init__(self, image: ImageVolume, fill: float = -1024.0) -> None:
        self.arr = np.asarray(image.array, dtype=np.float32)
        self.image = image
        self.fill = fill

    def __call__(self, pts: NDArray[np.float64]) -> NDArray[np.float64]:
        ijk = self.image.world_to_index(pts)
        flat = ijk.reshape(-1, 3)
        coords = [flat[:, 2], flat[:, 1], flat[:, 0]]
        out = ndi.map_coordinates(self.arr, coords, order=1, mode="constant", cval=self.fill)
        return np.asarray(out, dtype=np.float64).reshape(pts.shape[:-1])


def _perp_basis(u: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a = np.array([0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(u, a)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(u, e1)


def _disc(u: NDArray[np.float64], radius_mm: float, n_rings: int = 2, n_angles: int = 8
          ) -> NDArray[np.float64]:
    e1, e2 = _perp_basis(u)
    offs = [np.zeros(3)]
    for r in np.linspace(radius_mm / n_rings, radius_mm, n_rings):
        for a in np.linspace(0, 2 * math.pi, n_angles, endpoint=False):
            offs.append(r * (math.cos(a) * e1 + math.sin(a) * e2))
    return np.array(offs)


def _crossing(values: NDArray[np.float64], level: float) -> float | None:
    """First position (fractional index) where ``values`` drops below ``level``."""
    below = np.nonzero(values < level)[0]
    if below.size == 0:
        return None
    k = int(below[0])
    if k == 0:
        return 0.0
    v0, v1 = values[k - 1], values[k]
    return (k - 1) + (v0 - level) / max(v0 - v1, 1e-9)


def _refine_tip(sample: _Sampler, tip0: NDArray[np.float64], u: NDArray[np.float64],
                radius_mm: float, step: float = 0.1) -> tuple[NDArray[np.float64], float]:
    """Sub-voxel tip along ``u`` near ``tip0``, and the half-level half-width of the shaft."""
    disc = _disc(u, 1.0)
    s = np.arange(-25.0, 12.0 + step / 2, step)
    line = tip0 + s[:, None] * u
    prof = sample(line[:, None, :] + disc[None]).max(axis=1)
    shaft = float(np.median(prof[(s > -20.0) & (s < -6.0)]))
    bg = float(np.median(prof[(s > 6.0)]))
    level = bg + 0.5 * (shaft - bg)
    # from deep in the shaft forwards: where does it drop below half level?
    start = int(np.searchsorted(s, -6.0))
    x = _crossing(prof[start:], level)
    if x is None:
        return tip0, 0.0
    s_half = float(s[start] + x * step)
    # blooming across the shaft: half-level radius at a few stations behind the tip
    e1, e2 = _perp_basis(u)
    rr = np.arange(0.0, 6.0 + step / 2, step)
    widths = []
    for back in (8.0, 11.0, 14.0):
        c = tip0 + (s_half - back) * u
        for a in np.linspace(0, math.pi, 6, endpoint=False):
            d = math.cos(a) * e1 + math.sin(a) * e2
            for sign in (1.0, -1.0):
                prof_r = sample(c + sign * rr[:, None] * d)
                xr = _crossing(prof_r, level)
                if xr is not None:
                    widths.append(xr * step)
    half_width = float(np.median(widths)) if widths else radius_mm
    bloom = max(0.0, half_width - radius_mm)
    return tip0 + (s_half - bloom) * u, half_width


def detect_needles(image: ImageVolume, *, metal_hu: float = METAL_HU,
                   needle_diameter_mm: float = 1.47,
                   min_length_mm: float = MIN_NEEDLE_LENGTH_MM,
                   expected_target_lps: ArrayLike | None = None,
                   max_needles: int = 3, seed: int = 0) -> NeedleDetection:
    """Find needles (straight metal) in a CT volume.

    Parameters
    ----------
    image : ImageVolume
        CT in HU (frame of the image: its own LPS).
    metal_hu : float
        Metal threshold (HU).
    needle_diameter_mm : float
        Outer diameter of the needle expected (17 G = 1.47 mm); used for the
        blooming correction of the tip.
    min_length_mm : float
        Shorter straight metal is not a needle.
    expected_target_lps : array_like (3,), optional
        The planned target in this image's frame: picks the tip end and, among
        several needles, the one aimed at it.
    max_needles : int
        Stop after this many.
    seed : int
        RANSAC seed.

    Returns
    -------
    NeedleDetection
        Never raises for "no needle": ``needles`` is empty and a warning says so.
    """
    if needle_diameter_mm <= 0 or not math.isfinite(needle_diameter_mm):
        raise InputError(f"needle_diameter_mm must be > 0; got {needle_diameter_mm}")
    if max_needles < 1:
        raise InputError(f"max_needles must be ≥ 1; got {max_needles}")
    arr = np.asarray(image.array)
    metal = arr > metal_hu
    result = NeedleDetection()
    n_metal = int(metal.sum())
    if n_metal == 0:
        result.warnings.append(f"no needle found: no metal (> {metal_hu:.0f} HU) in the scan")
        return result
    k, j, i = np.nonzero(metal)
    w_all = np.asarray(arr[k, j, i], dtype=np.float64) - metal_hu + 1.0
    pts_all = image.index_to_world(np.stack([i, j, k], axis=1).astype(np.float64))
    if pts_all.shape[0] > _MAX_POINTS:
        keep = np.linspace(0, pts_all.shape[0] - 1, _MAX_POINTS).astype(np.intp)
        pts_all, w_all = pts_all[keep], w_all[keep]
    sp = image.spacing_mm
    inlier_mm = 0.5 * float(max(sp)) + 1.5
    gap_mm = 2.0 * float(max(sp)) + 2.0
    rng = np.random.default_rng(seed)
    sample = _Sampler(image)
    remaining = np.ones(pts_all.shape[0], dtype=bool)
    target = None if expected_target_lps is None else np.asarray(expected_target_lps, float)
    found: list[NeedleCandidate] = []
    while len(found) < max_needles and int(remaining.sum()) >= 3:
        idx_rem = np.nonzero(remaining)[0]
        pts, w = pts_all[idx_rem], w_all[idx_rem]
        run, length = _ransac_line(pts, w, inlier_mm=inlier_mm, gap_mm=gap_mm, rng=rng,
                                   trials=min(400, 20 * idx_rem.size))
        if run.size < 3 or length < min_length_mm:
            break
        c, u = _principal_axis(pts[run], w[run])
        # re-collect inliers around the refined axis (one more robust pass)
        rel = pts - c
        t = rel @ u
        dist = np.sqrt(np.maximum((rel * rel).sum(axis=1) - t * t, 0.0))
        near = np.nonzero(dist <= inlier_mm)[0]
        a, b, order = _line_run(t[near], gap_mm)
        run = near[order[a:b]]
        c, u = _principal_axis(pts[run], w[run])
        t = (pts[run] - c) @ u
        dist = np.linalg.norm((pts[run] - c) - t[:, None] * u, axis=1)
        remaining[idx_rem[run]] = False
        # also drop the metal halo of this needle (blooming voxels just outside the run)
        rel_all = pts_all - c
        t_all = rel_all @ u
        d_all = np.sqrt(np.maximum((rel_all * rel_all).sum(axis=1) - t_all * t_all, 0.0))
        remaining &= ~((d_all <= inlier_mm + 1.0) & (t_all >= t.min() - gap_mm)
                       & (t_all <= t.max() + gap_mm))
        end_a, end_b = c + t.min() * u, c + t.max() * u
        found.append(_orient(sample, end_a, end_b, u, target, image, needle_diameter_mm,
                             int(run.size), float(np.sqrt((dist ** 2).mean()))))
    result.other_metal_voxels = int(remaining.sum())
    if not found:
        result.warnings.append(
            f"no needle found: {n_metal} metal voxels but no straight metal object of at "
            f"least {min_length_mm:.0f} mm (clips or other metal only)")
        return result
    if target is not None:
        found.sort(key=lambda n: _miss(n, target))
    result.needles = found
    if len(found) > 1:
        result.warnings.append(
            f"{len(found)} needles in the scan; guiding with the one "
            + ("aimed closest to the target" if target is not None else "found first (longest)")
            + f" (tip {', '.join(f'{v:.1f}' for v in found[0].tip_lps)} LPS mm)")
    for n in found:
        if not n.tip_direction_certain:
            result.warnings.append("the needle's tip end is uncertain (no target given and "
                                   "both ends inside the patient)")
            break
    return result


def _miss(n: NeedleCandidate, target: NDArray[np.float64]) -> float:
    """How far the target is from the needle's line ahead of the tip (or from the tip)."""
    tip, u = np.asarray(n.tip_lps), np.asarray(n.axis)
    rel = target - tip
    along = float(rel @ u)
    if along < 0:
        return float(np.linalg.norm(rel))
    return float(np.linalg.norm(rel - along * u))


def _inside(sample: _Sampler, p: NDArray[np.float64], u: NDArray[np.float64]) -> bool:
    """Whether the tissue around ``p`` (a ring 4–6 mm from the axis) is patient, not air."""
    e1, e2 = _perp_basis(u)
    ring = np.array([r * (math.cos(a) * e1 + math.sin(a) * e2)
                     for r in (4.0, 6.0) for a in np.linspace(0, 2 * math.pi, 8, endpoint=False)])
    return bool(np.median(sample(p + ring)) > -400.0)


def _orient(sample: _Sampler, end_a: NDArray[np.float64], end_b: NDArray[np.float64],
            u: NDArray[np.float64], target: NDArray[np.float64] | None, image: ImageVolume,
            diameter_mm: float, n_voxels: int, rms_mm: float) -> NeedleCandidate:
    # patient or air just beyond each end (the hub end leaves the patient)
    in_a, in_b = _inside(sample, end_a - 5.0 * u, u), _inside(sample, end_b + 5.0 * u, u)
    certain = True
    if target is not None:
        tip_is_b = np.linalg.norm(end_b - target) <= np.linalg.norm(end_a - target)
    elif in_a != in_b:
        tip_is_b = in_b
    else:
        certain = False
        centre = image.index_to_world((np.asarray(image.shape_ijk, dtype=float) - 1) / 2.0)
        tip_is_b = np.linalg.norm(end_b - centre) <= np.linalg.norm(end_a - centre)
    tip0, hub = (end_b, end_a) if tip_is_b else (end_a, end_b)
    axis = (tip0 - hub) / max(float(np.linalg.norm(tip0 - hub)), 1e-9)
    tip, _hw = _refine_tip(sample, tip0, axis, diameter_mm / 2.0)
    # skin: first point from the hub end that is inside the patient
    length = float(np.linalg.norm(tip - hub))
    skin = None
    steps = np.arange(-10.0, length, 1.0)
    inside = [_inside(sample, hub + s * axis, axis) for s in steps]
    if inside and not inside[0] and any(inside):
        skin = hub + steps[int(np.argmax(inside))] * axis

    def tup(v: NDArray[np.float64]) -> tuple[float, float, float]:
        return (float(v[0]), float(v[1]), float(v[2]))

    return NeedleCandidate(tip_lps=tup(tip), hub_end_lps=tup(hub), axis=tup(axis),
                           skin_lps=None if skin is None else tup(skin),
                           visible_length_mm=float(np.linalg.norm(tip - hub)),
                           n_voxels=n_voxels, rms_mm=rms_mm,
                           tip_inside_body=_inside(sample, tip, axis),
                           tip_direction_certain=certain)
