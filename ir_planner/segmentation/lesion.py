"""Lesion from one click: seed point (LPS mm) → lesion mask, volume and diameters.

Method (adapted to the local contrast and noise, for hypo- and hyper-dense lesions):

1. A cubic region of interest around the seed (half size ``3 × radius`` or 45 mm),
   lightly smoothed (Gaussian, 0.5 voxel, at least 0.5 mm).
2. Size and intensities (no radius given): for growing ball radii, the contrast
   between the ball around the seed and a shell outside it (ring medians); the lesion
   border is the first radius where the contrast is significant (2.5 standard errors
   from the local noise, counting correlated voxels; 3 for a ball of a few voxels) and
   at a local peak, so tissue further out does not count. Lesion value: median inside
   0.75 of that radius; background: median of the shell. With a radius, the shell is
   1.5–2.5 × radius.
3. Region growing on the lesion side of the level between lesion and background,
   bounded on the far side (no leak into air, fat or bone); thin leaks cut by an
   opening; growth beyond the allowed radius clipped around the seed (with a warning);
   the background re-estimated twice in a shell just outside the grown region.
4. Small lesions (equivalent radius < 6 mm or 2.5 voxels): the seed value understates
   the contrast (partial volume, scanner blur); a Gaussian-blurred ball is fitted to the
   raw intensities for the plateau contrast.
5. Sub-voxel border: the region's box is smoothed (noise-adapted Gaussian), upsampled to
   ~1 mm (linear), thresholded at the half level lowered for the border curvature (a
   half-covered voxel of a curved border holds less than half the contrast), the seed's
   component kept and holes filled, and brought back to the image grid by cell
   coverage ≥ 50 %.
6. Checks: the seed must not be in air (< -500 HU) or bone (> 400 HU) on CT; the
   contrast must be significant (and ≥ 10 units); the region must not leak beyond the
   allowed radius. Failing any raises :class:`~ir_planner.core.errors.InputError`
   saying why.

Diameters are those of the ellipsoid with the same second moments as the mask
(principal axes): exact for ellipsoids, and robust to voxel staircasing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi

from ir_planner.core.errors import InputError
from ir_planner.core.volume import ImageVolume

_CURV = 1.0
_TINY = 3.0
__all__ = ["LesionResult", "segment_lesion", "principal_diameters_mm"]


@dataclass
class LesionResult:
    """A lesion segmented from a seed.

    Attributes
    ----------
    mask : numpy.ndarray of bool
        Lesion mask on the image grid ``[k, j, i]``.
    volume_ml : float
        Lesion volume in ml.
    diameters_mm : tuple of float
        Three principal-axis diameters in mm, largest first.
    axes_lps : numpy.ndarray, shape (3, 3)
        Unit principal axes (rows) in LPS, matching ``diameters_mm``.
    centroid_lps : tuple of float
        Centre of mass (LPS mm).
    lesion_value, background_value, threshold : float
        Estimated lesion and background intensities and the level used.
    polarity : str
        "hypo" or "hyper" (darker or brighter than the background).
    elapsed_s : float
        Computing time in seconds.
    warnings : list of str
        Remarks (e.g. lesion only a few voxels across).
    """

    mask: NDArray[np.bool_]
    volume_ml: float
    diameters_mm: tuple[float, float, float]
    axes_lps: NDArray[np.float64]
    centroid_lps: tuple[float, float, float]
    lesion_value: float
    background_value: float
    threshold: float
    polarity: str
    elapsed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (without the mask)."""
        return {
            "volume_ml": round(self.volume_ml, 3),
            "diameters_mm": [round(d, 2) for d in self.diameters_mm],
            "centroid_lps_mm": [round(c, 2) for c in self.centroid_lps],
            "lesion_value": round(self.lesion_value, 1),
            "background_value": round(self.background_value, 1),
            "threshold": round(self.threshold, 1), "polarity": self.polarity,
            "elapsed_s": round(self.elapsed_s, 3), "warnings": list(self.warnings),
        }


def principal_diameters_mm(
    mask: NDArray[np.bool_], grid: ImageVolume
) -> tuple[tuple[float, float, float], NDArray[np.float64], NDArray[np.float64]]:
    """Principal-axis diameters (mm) of a mask, from its second moments.

    A solid ellipsoid of semi-axis ``a`` has variance ``a² / 5`` along that axis,
    so each diameter is ``2 √(5 λ)`` for an eigenvalue ``λ`` of the covariance
    of the voxel centres (LPS mm), with the voxel's own variance ``s² / 12``
    (projected) added.

    Returns
    -------
    diameters_mm : tuple of float
        Largest first.
    axes_lps : numpy.ndarray, shape (3, 3)
        Unit axes as rows.
    centroid_lps : numpy.ndarray, shape (3,)
    """
    kji = np.argwhere(mask)
    if kji.shape[0] == 0:
        raise InputError("empty mask: no diameters")
    pts = grid.index_to_world(kji[:, ::-1].astype(float))
    centroid = pts.mean(axis=0)
    cov = np.cov((pts - centroid).T, bias=True) if pts.shape[0] > 1 else np.zeros((3, 3))
    linear = grid.index_to_lps[:3, :3]
    cov = cov + linear @ linear.T / 12.0  # each voxel is a cell, not a point
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    diam = tuple(float(2.0 * np.sqrt(5.0 * max(evals[o], 0.0))) for o in order)
    return diam, evecs[:, order].T.copy(), centroid  # type: ignore[return-value]


def _sphere_offsets(radius_vox: NDArray[np.float64]) -> NDArray[np.bool_]:
    r = np.maximum(np.ceil(radius_vox).astype(int), 0)
    zz, yy, xx = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    rv = np.maximum(radius_vox, 1e-6)
    return (zz / rv[0]) ** 2 + (yy / rv[1]) ** 2 + (xx / rv[2]) ** 2 <= 1.0


def _robust(values: NDArray[Any]) -> tuple[float, float]:
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med))) * 1.4826
    return med, mad


def segment_lesion(
    image: ImageVolume,
    seed_lps: ArrayLike,
    *,
    radius_mm: float | None = None,
    max_radius_mm: float = 40.0,
    level: float = 0.45,
    refine: bool = True,
    smooth_vox: float | None = None,
    edge_mm: float = 1.0,
    small_lesion_vox: float = 2.5,
    small_lesion_mm: float = 6.0,
) -> LesionResult:
    """Segment the lesion containing ``seed_lps``.

    Parameters
    ----------
    image : ImageVolume
        CT (HU) or MR image.
    seed_lps : array_like, shape (3,)
        A point inside the lesion (LPS mm).
    radius_mm : float, optional
        Rough lesion radius in mm (speeds up and steadies the background estimate,
        and bounds the growth to 2.5 × radius).
    max_radius_mm : float
        Largest lesion radius (mm) accepted without ``radius_mm``.
    level : float
        Border level of the initial region growing, as a fraction of the way from
        background to lesion intensity (the sub-voxel step sets the final border).
    refine : bool
        Run the small-lesion contrast fit and the sub-voxel border step (default);
        ``False`` returns the initial region grown on the image grid.
    smooth_vox : float, optional
        Gaussian smoothing (voxels) of the sub-voxel step; default adapted to the noise.
    edge_mm : float
        Assumed scanner blur of an edge (Gaussian σ, mm), for the small-lesion fit.
    small_lesion_vox, small_lesion_mm : float
        A region whose equivalent radius is below ``max(small_lesion_vox × voxel,
        small_lesion_mm)`` gets its plateau contrast from a blurred-ball fit.

    Returns
    -------
    LesionResult

    Raises
    ------
    InputError
        If the seed is outside the image, in air or bone, in homogeneous
        surroundings (no lesion contrast), or the growth leaks into a huge region.
    """
    t0 = time.perf_counter()
    seed = np.asarray(seed_lps, dtype=float).reshape(-1)
    if seed.size != 3 or not np.all(np.isfinite(seed)):
        raise InputError(f"seed point must be three finite numbers (LPS mm); got {seed_lps!r}")
    if radius_mm is not None and not (np.isfinite(radius_mm) and radius_mm > 0):
        raise InputError(f"lesion radius must be a positive number of mm; got {radius_mm}")
    if not bool(image.contains_world(seed)):
        raise InputError(f"seed point {seed.round(1).tolist()} (LPS mm) is outside the image")
    spacing_kji = image.spacing_mm[::-1]
    ijk = np.rint(image.world_to_index(seed)).astype(int)
    seed_kji = ijk[::-1]
    ct = (image.modality or "").upper() == "CT" or float(image.array.min()) < -500
    warnings: list[str] = []

    # region of interest
    half_mm = 3.0 * radius_mm if radius_mm else max_radius_mm + 5.0
    half_mm = max(half_mm, 6.0 * float(spacing_kji.max()), 15.0)
    half = np.ceil(half_mm / spacing_kji).astype(int)
    lo = np.maximum(seed_kji - half, 0)
    hi = np.minimum(seed_kji + half + 1, image.shape)
    roi = image.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32)
    s = tuple(int(v) for v in seed_kji - lo)
    sigma_vox = np.maximum(0.5, 0.5 / spacing_kji)
    sm = ndi.gaussian_filter(roi, sigma=sigma_vox, mode="nearest")
    # distance (mm) of each ROI voxel from the seed
    grids = np.ogrid[tuple(slice(0, n) for n in roi.shape)]
    dist2 = sum(((g - c) * sp) ** 2 for g, c, sp in zip(grids, s, spacing_kji))
    dist = np.sqrt(dist2)

    core_r = max(1.0, 0.8 * float(spacing_kji.max()))
    if radius_mm:
        core_r = max(core_r, 0.3 * radius_mm)
    core = dist <= core_r
    lesion_val = float(np.median(sm[core]))
    raw_seed = float(np.median(roi[dist <= max(1.0, 0.6 * float(spacing_kji.max()))]))
    if ct and raw_seed < -500:
        raise InputError(f"seed point {seed.round(1).tolist()} is in air ({raw_seed:.0f} HU), "
                         "not in a lesion: click inside the lesion")
    if ct and raw_seed > 400:
        raise InputError(f"seed point {seed.round(1).tolist()} is in bone or dense "
                         f"material ({raw_seed:.0f} HU), not in a lesion")

    limit_r = 2.5 * radius_mm if radius_mm else max_radius_mm
    noise_core = max(_robust(sm[core])[1], 2.0)
    n_core = int(core.sum())
    # voxels per independent sample of the smoothed image (noise and texture correlated
    # over about max(smoothing, 1 mm)): for the significance of a contrast
    corr_len = np.maximum(sigma_vox * spacing_kji, 1.0)
    corr_vox = max(1.0, float(np.prod(2.0 * np.sqrt(np.pi) * corr_len / spacing_kji)))
    found_r: float | None = radius_mm
    clipped = False
    if radius_mm:
        shell = (dist >= 1.5 * radius_mm) & (dist <= 2.5 * radius_mm)
    else:
        # on fine grids, every other voxel is enough for ring medians (speed)
        st = np.maximum(1, np.floor(1.1 / spacing_kji)).astype(int)
        sub = (slice(s[0] % st[0], None, st[0]), slice(s[1] % st[1], None, st[1]),
               slice(s[2] % st[2], None, st[2]))
        found = _scale_search(sm[sub], dist[sub], core_r, min(limit_r, half_mm),
                              max(0.5 * float(spacing_kji.min()), 0.5),
                              float(spacing_kji.max()),
                              corr_vox=max(1.0, corr_vox / float(np.prod(st))))
        if found is not None:
            found = ((dist >= found[2][0]) & (dist <= found[2][1]), found[1], found[2])
            found_r = found[1]
            limit_r = min(limit_r, max(2.5 * found_r, found_r + 3.0 * float(spacing_kji.max())))
            inner = dist <= max(core_r, 0.75 * found[1])
            lesion_val = float(np.median(sm[inner]))
            noise_core = max(_robust(sm[inner])[1], 2.0)
            n_core = int(inner.sum())
        if found is None:
            raise InputError(
                f"no lesion at seed {seed.round(1).tolist()}: the intensity around the seed "
                f"stays at {lesion_val:.0f} within {min(limit_r, half_mm):.0f} mm (homogeneous "
                "surroundings, or a lesion larger than max_radius_mm); click inside a lesion "
                "that differs from the tissue around it, or give a radius"
            )
        shell = found[0]
    at_edge = np.zeros(roi.shape, dtype=bool)
    at_edge[[0, -1], :, :] = at_edge[:, [0, -1], :] = at_edge[:, :, [0, -1]] = True

    region = None
    bg_val = noise = thr = 0.0
    polarity = "hypo"
    prev_thr = None
    for it in range(3):
        prev = (region, bg_val, noise, thr, polarity)
        bg_val, noise = _robust(sm[shell])
        contrast = lesion_val - bg_val
        # uncertainty of the contrast (smoothed voxels: ~4 per independent sample)
        se = float(np.sqrt(noise_core ** 2 * min(1.0, corr_vox / max(n_core, 1))
                           + noise ** 2 * min(1.0, corr_vox / max(int(shell.sum()), 1))))
        if it > 0 and (abs(contrast) < max(10.0, 2.0 * se, 1.0 * noise)
                       or ("hypo" if contrast < 0 else "hyper") != polarity):
            # the refined background is not trustworthy (shell reached other tissue):
            # keep the previous estimate
            region, bg_val, noise, thr, polarity = prev
            break
        if abs(contrast) < max(10.0, 2.0 * se, 1.0 * noise):
            raise InputError(
                f"no lesion at seed {seed.round(1).tolist()}: the seed ({lesion_val:.0f}) "
                f"does not differ from its surroundings ({bg_val:.0f} ± {noise:.0f}); click "
                "inside a lesion that differs from the tissue around it"
            )
        polarity = "hypo" if contrast < 0 else "hyper"
        thr = bg_val + level * (lesion_val - bg_val)
        if prev_thr is not None and abs(thr - prev_thr) < 1.0:
            break  # converged: the region would not change
        prev_thr = thr
        far = lesion_val + contrast + 3.0 * np.sign(contrast) * noise_core
        # lesion side of the border level, not beyond the far bound (air/fat/bone)
        if polarity == "hypo":
            cand = (sm < thr) & (sm > far)
        else:
            cand = (sm > thr) & (sm < far)
        cand[s] = True
        lab, _ = ndi.label(cand)
        region = lab == lab[s]
        if region[at_edge].any() or dist[region].max() > limit_r:
            region = _cut_bridges(region, s, spacing_kji)
        if (region[at_edge].any() or dist[region].max() > limit_r) and found_r is not None:
            # a small lesion touching a vessel or another lesion-like structure: keep the
            # part within the growth limit around the seed (leak protection), and say so
            clip = lab == lab[s]
            clip &= dist <= min(limit_r, 1.5 * found_r + float(spacing_kji.max()))
            lab_c, _ = ndi.label(clip)
            region = lab_c == lab_c[s]
            clipped = True
        if region[at_edge].any() or dist[region].max() > limit_r:
            if it > 0:
                region, bg_val, noise, thr, polarity = prev
                break
            raise InputError(
                f"the lesion grown from seed {seed.round(1).tolist()} leaks into a large "
                f"region (beyond {limit_r:.0f} mm from the seed): the seed is probably not "
                "in a well-defined lesion; click nearer its centre or give --radius"
            )
        box = _box(region, 1)
        region[box] = _cut_bridges(region[box], tuple(a - b.start for a, b in zip(s, box)),
                                   spacing_kji)
        region[box] = ndi.binary_fill_holes(region[box])
        # re-estimate the background in a shell just outside the grown region
        n_reg = int(region.sum())
        r_eq = (3.0 * n_reg * float(np.prod(spacing_kji)) / (4.0 * np.pi)) ** (1 / 3)
        gap = max(2.0 * float(spacing_kji.max()), 3.0)
        width = max(r_eq, 4.0)
        box = _box(region, np.ceil((gap + width) / spacing_kji).astype(int) + 1)
        grown = ndi.distance_transform_edt(~region[box], sampling=spacing_kji)
        new_shell = np.zeros(roi.shape, dtype=bool)
        new_shell[box] = (grown >= gap) & (grown <= gap + width)
        if new_shell.sum() < 20:
            break
        shell = new_shell
    assert region is not None
    if refine:
        seen = lesion_val - bg_val
        contrast_est = seen
        vox_ml = float(np.prod(spacing_kji))
        r_eq0 = (3.0 * int(region.sum()) * vox_ml / (4.0 * np.pi)) ** (1 / 3)
        if r_eq0 < max(small_lesion_vox * float(spacing_kji.max()), small_lesion_mm):
            # the seed value of a small lesion is lowered by the blur (scanner, cell
            # averaging): fit a blurred ball to the raw intensities for the plateau contrast
            fit = _fit_blurred_ball(roi, region, bg_val, spacing_kji, edge_mm, r_eq0)
            if fit is not None and np.sign(fit[0]) == np.sign(seen):
                contrast_est = float(np.clip(fit[0], -3.0 * abs(seen), 3.0 * abs(seen)))
                if abs(contrast_est) < abs(seen):
                    contrast_est = seen
        far = bg_val + 2.0 * contrast_est + 3.0 * np.sign(seen) * noise_core
        if smooth_vox is None:
            # smoothing adapted to the noise: enough to bring the noise to ~15 % of the
            # contrast (a Gaussian of σ voxels divides white noise by √(8 π^1.5 σ³)),
            # within 0.3–1 voxel and at most a third of the lesion radius
            noise_raw = _robust(roi[shell])[1]
            ratio = noise_raw / max(0.15 * abs(contrast_est), 1e-6)
            sv = (ratio ** 2 / (8.0 * np.pi ** 1.5)) ** (1 / 3)
            r_now = (3.0 * int(region.sum()) * vox_ml / (4.0 * np.pi)) ** (1 / 3)
            sv_mm = min(float(np.clip(sv, 0.3, 1.0)) * float(spacing_kji.mean()),
                        max(r_now / 3.0, 0.3 * float(spacing_kji.min())))
            smooth_use = sv_mm / spacing_kji
        else:
            smooth_use = np.full(3, smooth_vox)
        region = _refine_subvoxel(roi, region, s, bg_val, bg_val + contrast_est, far,
                                  spacing_kji, smooth_vox=smooth_use, edge_mm=edge_mm)
        lesion_val = bg_val + contrast_est
    mask = np.zeros(image.shape, dtype=bool)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = region
    n_vox = int(region.sum())
    if clipped:
        warnings.append("the region grown from the seed reached beyond the lesion size "
                        "estimated around the seed and was clipped there: check its border")
    if n_vox < 8:
        warnings.append(f"the lesion is only {n_vox} voxels: volume and diameters are rough "
                        "at this voxel size")
    diam, axes, centroid = principal_diameters_mm(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]],
                                                  _sub_grid(image, lo))
    return LesionResult(
        mask=mask, volume_ml=n_vox * image.voxel_volume_ml, diameters_mm=diam,
        axes_lps=axes, centroid_lps=tuple(float(c) for c in centroid),  # type: ignore[arg-type]
        lesion_value=lesion_val, background_value=bg_val, threshold=float(thr),
        polarity=polarity, elapsed_s=time.perf_counter() - t0, warnings=warnings,
    )


def _blurred_ball(r_mm: NDArray[np.float64], radius_mm: float,
                  sigma_mm: float) -> NDArray[np.float64]:
    """Profile at distance ``r_mm`` from the centre of a unit ball blurred by a Gaussian."""
    from scipy.special import erf

    r = np.maximum(r_mm, 1e-6)
    k = np.sqrt(2.0) * sigma_mm
    out = 0.5 * (erf((radius_mm - r) / k) + erf((radius_mm + r) / k))
    out -= sigma_mm / (r * np.sqrt(2.0 * np.pi)) * (
        np.exp(-((radius_mm - r) / k) ** 2) - np.exp(-((radius_mm + r) / k) ** 2))
    return out


def _fit_blurred_ball(
    roi: NDArray[np.float32], region: NDArray[np.bool_], bg: float,
    spacing_kji: NDArray[np.float64], edge_mm: float, r_eq_mm: float,
) -> tuple[float, float] | None:
    """Least-squares fit of ``bg + C · blurred ball(R)`` centred on the region's
    intensity-weighted centroid, to the raw intensities; returns ``(C, R_mm)``."""
    w = np.abs(roi[region] - bg)
    kji = np.argwhere(region).astype(float)
    if w.sum() <= 0:
        return None
    centre = (kji * w[:, None]).sum(axis=0) / w.sum()
    sigma = float(np.sqrt(edge_mm ** 2 + np.mean(spacing_kji ** 2) / 12.0))
    r_fit = 1.5 * r_eq_mm + 2.0 * sigma + float(spacing_kji.max())
    lo = np.maximum(np.floor(centre - r_fit / spacing_kji).astype(int), 0)
    hi = np.minimum(np.ceil(centre + r_fit / spacing_kji).astype(int) + 1, roi.shape)
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    d = np.sqrt(sum(((g - c) * sp) ** 2 for g, c, sp in zip(grids, centre, spacing_kji)))
    sel = d <= r_fit
    y = roi[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][sel].astype(float) - bg
    r = d[sel]
    best = None
    for radius in np.arange(0.5, max(r_eq_mm * 1.5, 2.0) + 1e-9, 0.1):
        phi = _blurred_ball(r, float(radius), sigma)
        den = float(phi @ phi)
        if den <= 0:
            continue
        c = float(phi @ y) / den
        res = float(np.sum((y - c * phi) ** 2))
        if best is None or res < best[0]:
            best = (res, c, float(radius))
    return None if best is None else (best[1], best[2])


def _refine_subvoxel(
    roi: NDArray[np.float32], region: NDArray[np.bool_], seed: tuple[int, ...],
    bg: float, les: float, far: float, spacing_kji: NDArray[np.float64], *,
    smooth_vox: NDArray[np.float64], edge_mm: float, target_mm: float = 1.0,
) -> NDArray[np.bool_]:
    """Sub-voxel border: upsample the ROI, threshold at the curvature-corrected
    half level, keep the seed's component, downsample by cell coverage ≥ 50 %."""
    f = np.clip(np.rint(spacing_kji / target_mm), 1, 3).astype(int)
    n_reg = int(region.sum())
    r_eq = (3.0 * n_reg * float(np.prod(spacing_kji)) / (4.0 * np.pi)) ** (1 / 3)
    allow_mm = float(spacing_kji.max()) + 2.0
    pad = np.ceil(allow_mm / spacing_kji).astype(int) + 2
    box = _box(region, pad)
    raw = roi[box]
    sm = ndi.gaussian_filter(raw, sigma=tuple(float(v) for v in smooth_vox), mode="nearest")
    shape_up = tuple(int(n * a) for n, a in zip(raw.shape, f))
    axes_c = [np.arange(n) / a + (0.5 / a - 0.5) for n, a in zip(shape_up, f)]
    coords = np.meshgrid(*axes_c, indexing="ij")
    up = ndi.map_coordinates(sm, coords, order=1, mode="nearest")
    allowed = _edt(~region[box], spacing_kji) <= allow_mm
    for ax in range(3):
        allowed = np.repeat(allowed, f[ax], axis=ax)
    # a voxel half covered by a curved border holds less than half the contrast (its
    # cell average): lower the level by the cell's spread over the border curvature
    # (measured on synthetic lesions: this term, not the edge blur, sets the bias)
    sigma_cell = float(np.sqrt(np.mean(spacing_kji ** 2) / 12.0))
    lvl = 0.5 - _CURV * sigma_cell / (np.sqrt(2 * np.pi) * max(r_eq, 1e-3))
    lvl = float(np.clip(lvl, 0.3, 0.5))
    thr = bg + lvl * (les - bg)
    if les < bg:
        cand = (up < thr) & (up > far)
    else:
        cand = (up > thr) & (up < far)
    cand &= allowed
    lab, n_lab = ndi.label(cand)
    if n_lab == 0:
        return region
    s_box = [c - b.start for c, b in zip(seed, box)]
    sub = tuple(slice(c * a, (c + 1) * a) for c, a in zip(s_box, f))
    ids = np.unique(lab[sub])
    ids = ids[ids > 0]
    if ids.size == 0:
        return region
    keep = np.isin(lab, ids)
    keep = ndi.binary_fill_holes(keep)
    cover = keep.reshape(raw.shape[0], f[0], raw.shape[1], f[1], raw.shape[2], f[2]).mean(
        axis=(1, 3, 5))
    out = region.copy()
    out[box] = cover >= 0.5
    if not out.any():
        return region
    return out


def _cut_bridges(region: NDArray[np.bool_], seed: tuple[int, ...],
                 spacing_kji: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Open the region by ~15 % of its equivalent radius (≥ 1 voxel) to cut thin leaks.

    The opened region's seed component is dilated back by the same amount and
    intersected with the original region, so the lesion border is kept. The radius
    is measured with the Euclidean distance map in mm (anisotropic spacing).
    """
    n = int(region.sum())
    if n < 30:
        return region
    r_eq = (3.0 * n * float(np.prod(spacing_kji)) / (4.0 * np.pi)) ** (1 / 3)
    r_mm = max(0.15 * r_eq, float(spacing_kji.min()))
    dist_in = _edt(region, spacing_kji)
    core = dist_in > r_mm
    lab, n_lab = ndi.label(core)
    if n_lab == 0:
        return region
    inside = all(0 <= c < n for c, n in zip(seed, region.shape))
    if inside and lab[seed]:
        keep = lab == lab[seed]
    else:
        # the seed sits near the border: keep the core component nearest to it
        pts = np.argwhere(lab > 0)
        d2 = np.sum(((pts - np.asarray(seed)) * spacing_kji) ** 2, axis=1)
        if float(np.sqrt(d2.min())) > r_mm + float(spacing_kji.max()):
            return region  # the seed's own part is thinner than the cut: nothing to keep
        keep = lab == lab[tuple(pts[int(np.argmin(d2))])]
    back = _edt(~keep, spacing_kji) <= r_mm + 1e-6
    return back & region


def _edt(mask: NDArray[np.bool_], spacing_kji: NDArray[np.float64]) -> NDArray[np.float64]:
    """Distance (mm) from each True voxel centre to the nearest False voxel centre."""
    return ndi.distance_transform_edt(mask, sampling=spacing_kji)


def _scale_search(
    sm: NDArray[np.float32], dist: NDArray[Any], start_mm: float, stop_mm: float,
    step_mm: float, gap_mm: float, min_contrast: float = 10.0, corr_vox: float = 4.0,
) -> tuple[Any, float, tuple[float, float]] | None:
    """Lesion radius from the contrast between a ball around the seed and a shell outside it.

    For each ball radius ``r`` (steps of one voxel), the contrast is the difference of
    the (count-weighted) ring medians inside the ball and in a shell from ``r + gap``
    outwards (width ``max(2 steps, r / 2)``). The lesion border is the first radius
    where this contrast reaches ``min_contrast`` and is within 85 % of its maximum over
    the radii up to ``1.5 r + gap`` (the first local peak: the contrast grows while the
    shell still overlaps the lesion and shrinks once the ball takes in background; a
    later, other tissue further out does not count). Returns ``(None, radius_mm,
    (shell_inner_mm, shell_outer_mm))`` or None.
    """
    step = max(step_mm, 0.25)
    reach = stop_mm + 2.0 * gap_mm + 0.5 * stop_mm + step
    inside = dist < reach
    rings = (dist[inside] // step).astype(np.int64)
    values = sm[inside]
    n_rings = int(rings.max()) + 1 if rings.size else 0
    if n_rings < 3:
        return None
    # sort by (ring, value) at once: one float key (much faster than lexsort)
    vmin = float(values.min())
    span = float(values.max()) - vmin + 1.0
    key = np.sort(rings * span + (values.astype(np.float64) - vmin))
    rings_sorted = np.floor(key / span).astype(np.int64)
    values_sorted = key - rings_sorted * span + vmin
    starts = np.searchsorted(rings_sorted, np.arange(n_rings), side="left")
    stops = np.searchsorted(rings_sorted, np.arange(n_rings), side="right")
    counts = (stops - starts).astype(float)
    medians = np.array([float(values_sorted[(a + b - 1) // 2]) if b > a else np.nan
                        for a, b in zip(starts, stops)])
    ok = counts > 0
    # local noise: median over rings of each ring's robust spread (IQR / 1.349)
    spreads = np.array([
        float(values_sorted[a + (3 * (b - a)) // 4] - values_sorted[a + (b - a) // 4]) / 1.349
        if b - a >= 8 else np.nan for a, b in zip(starts, stops)])
    wm = np.where(ok, medians * counts, 0.0)
    cw, cc = np.cumsum(wm), np.cumsum(counts)
    gap = max(1, int(np.ceil(gap_mm / step)))
    first = max(0, int(np.floor(start_mm / step)) - 1)
    contrast = np.full(n_rings, np.nan)
    for n in range(first, n_rings):
        r = (n + 1) * step
        if r > stop_mm:
            break
        width = max(2, int(np.ceil(0.5 * r / step)))
        a, b = n + 1 + gap, min(n + 1 + gap + width, n_rings)
        if b <= a or cc[b - 1] - cc[a - 1] < 6:
            break
        ball = cw[n] / max(cc[n], 1.0)
        shell = (cw[b - 1] - cw[a - 1]) / (cc[b - 1] - cc[a - 1])
        contrast[n] = ball - shell
        n_b, n_s = cc[n], cc[b - 1] - cc[a - 1]

        # significance: smoothed voxels count as ~1/4 of an independent sample
        sp = spreads[:b][np.isfinite(spreads[:b])]
        sigma = float(np.median(sp)) if sp.size else 0.0
        se = sigma * np.sqrt(min(1.0, corr_vox / n_b) + min(1.0, corr_vox / n_s))
        # a ball of one voxel and a few neighbours needs a clearer contrast
        if abs(contrast[n]) < (2.5 if n_b >= 7 else _TINY) * se:
            contrast[n] = np.sign(contrast[n]) * min(abs(contrast[n]), 0.999 * min_contrast)
    mag = np.abs(contrast)
    for n in range(first, n_rings):
        if not np.isfinite(mag[n]) or mag[n] < min_contrast:
            continue
        r = (n + 1) * step
        m_end = min(n_rings, int(np.floor((1.5 * r + gap_mm) / step + 1e-9)))
        window = contrast[n:max(m_end, n + 1)]
        same = np.where(np.isfinite(window) & (np.sign(window) == np.sign(contrast[n])),
                        np.abs(window), -1.0)
        if mag[n] < 0.85 * float(same.max()):
            continue
        # the border: the radius of the highest contrast among these
        best = n + int(np.argmax(same))
        r = (best + 1) * step
        width = max(2 * step, 0.5 * r)
        return None, r, (r + gap * step, r + gap * step + width)
    return None


def _box(mask: NDArray[np.bool_], pad: Any) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` grown by ``pad`` voxels (scalar or per axis), clipped."""
    pad_a = np.broadcast_to(np.asarray(pad, dtype=int), (3,))
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        hit = np.flatnonzero(mask.any(axis=other))
        lo = max(0, int(hit[0]) - int(pad_a[ax])) if hit.size else 0
        hi = min(mask.shape[ax], int(hit[-1]) + 1 + int(pad_a[ax])) if hit.size else 0
        out.append(slice(lo, hi))
    return (out[0], out[1], out[2])


def _sub_grid(image: ImageVolume, lo_kji: NDArray[np.int_]) -> ImageVolume:
    """A 1-voxel stand-in volume whose affine places a crop starting at ``lo_kji``."""
    affine = image.index_to_lps.copy()
    affine[:3, 3] = image.index_to_world(np.asarray(lo_kji[::-1], dtype=float))
    return ImageVolume(np.zeros((1, 1, 1), dtype=np.uint8), affine)
