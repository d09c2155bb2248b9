"""Registration of an intra-procedural scan to the planning CT.

Frames
------
* ``plan``: DICOM patient coordinates (LPS, mm) of the planning CT.
* ``intraop``: DICOM patient coordinates (LPS, mm) of the intra-procedural scan.

Every result carries ``intraop_to_plan``: a 4×4 matrix acting on homogeneous
column vectors, ``p_plan = intraop_to_plan @ [x, y, z, 1]`` for a point of the
intra-op scan (the convention of the sample case's ``intraop_truth.json``). In
SimpleITK's terms the intra-op scan is the *fixed* image and the planning CT the
*moving* one: ITK's transform maps fixed points to moving points, which is exactly
``intraop_to_plan``.

Three methods:

* :func:`register_rigid`: multi-resolution Mattes mutual information, rigid
  (Euler 3-D), optionally masked around the target; metal (needle) and the
  scanner table are masked out because they do not move with the patient.
* :func:`register_deformable`: a B-spline refinement on top of a rigid result.
* :func:`register_points`: the manual fallback, a least-squares rigid fit to point
  pairs (Horn/Kabsch) with its fiducial registration error.

Each result has a :class:`RegistrationQuality` (normalised cross-correlation of
the two images around the target after registration, and the fiducial error for
point pairs) and a verdict ``ok``; :class:`RegistrationError` is raised when a
scan cannot be registered at all.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi

from ir_planner.bridge.sitk import to_sitk
from ir_planner.core.errors import InputError, IRPlannerError
from ir_planner.core.progress import ProgressCallback, report
from ir_planner.core.volume import ImageVolume

__all__ = [
    "RegistrationError",
    "RegistrationQuality",
    "RegistrationResult",
    "RigidSettings",
    "register_rigid",
    "register_deformable",
    "register_points",
    "rigid_parameters",
    "apply_transform",
    "MIN_NCC",
    "METAL_HU",
]

#: A registration whose normalised cross-correlation around the target stays below
#: this is not trusted ("will not register").
MIN_NCC = 0.5
#: Voxels above this (HU) are metal (needle, clips): masked out of registration.
METAL_HU = 2000.0
#: Largest patient motion believed (rotation in degrees, translation in mm).
MAX_ROTATION_DEG = 20.0
MAX_TRANSLATION_MM = 80.0


class RegistrationError(IRPlannerError):
    """An intra-op scan could not be registered to the plan."""


@dataclass(frozen=True)
class RegistrationQuality:
    """How far a registration can be trusted.

    Attributes
    ----------
    ncc : float or None
        Normalised cross-correlation (−1…1) of the intra-op scan and the resampled
        planning CT inside the registration mask; about 0.9 or more for a good CT–CT
        registration, below :data:`MIN_NCC` = failed.
    ncc_before : float or None
        The same figure before registration (identity).
    fre_mm : float or None
        Point pairs only: RMS fiducial registration error, mm.
    max_residual_mm : float or None
        Point pairs only: largest single-pair residual, mm.
    metric : float or None
        Final Mattes mutual-information metric value (lower is better).
    n_voxels : int
        Voxels in the quality mask.
    """

    ncc: float | None = None
    ncc_before: float | None = None
    fre_mm: float | None = None
    max_residual_mm: float | None = None
    metric: float | None = None
    n_voxels: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (keys carry units)."""
        def r(v: float | None, n: int = 4) -> float | None:
            return None if v is None else round(float(v), n)

        return {"ncc": r(self.ncc), "ncc_before": r(self.ncc_before), "fre_mm": r(self.fre_mm, 3),
                "max_residual_mm": r(self.max_residual_mm, 3), "mi_metric": r(self.metric),
                "n_voxels": int(self.n_voxels)}


@dataclass
class RegistrationResult:
    """The outcome of one registration.

    Attributes
    ----------
    intraop_to_plan : numpy.ndarray, shape (4, 4)
        Rigid part (maps intra-op LPS points to planning LPS points).
    method : str
        ``"rigid-mi"``, ``"bspline"`` or ``"points"``.
    quality : RegistrationQuality
    ok : bool
        Whether the quality passes the thresholds.
    elapsed_s : float
    deformable : SimpleITK.Transform or None
        For ``"bspline"``: the full fixed→moving (intra-op → plan) transform.
    warnings : list of str
    """

    intraop_to_plan: NDArray[np.float64]
    method: str
    quality: RegistrationQuality
    ok: bool
    elapsed_s: float = 0.0
    deformable: Any = None
    warnings: list[str] = field(default_factory=list)
    iterations: int = 0
    stop_condition: str = ""

    @property
    def plan_to_intraop(self) -> NDArray[np.float64]:
        """Inverse of the rigid part."""
        return np.linalg.inv(self.intraop_to_plan)

    def to_plan(self, points_intraop: ArrayLike) -> NDArray[np.float64]:
        """Map intra-op LPS points (…, 3) into the planning frame (deformable if present)."""
        pts = np.asarray(points_intraop, dtype=float)
        if self.deformable is None:
            return apply_transform(self.intraop_to_plan, pts)
        flat = pts.reshape(-1, 3)
        out = np.array([self.deformable.TransformPoint([float(v) for v in p]) for p in flat])
        return out.reshape(pts.shape)

    def to_intraop(self, points_plan: ArrayLike) -> NDArray[np.float64]:
        """Map planning LPS points (…, 3) into the intra-op frame.

        Rigid: the exact inverse. B-spline: the rigid inverse refined by a
        fixed-point iteration on the deformable part (converges for smooth,
        small deformations; residual below 0.01 mm in practice).
        """
        pts = np.asarray(points_plan, dtype=float)
        guess = apply_transform(self.plan_to_intraop, pts)
        if self.deformable is None:
            return guess
        flat_target = pts.reshape(-1, 3)
        x = guess.reshape(-1, 3).copy()
        for _ in range(30):
            fx = self.to_plan(x)
            err = flat_target - fx
            x += err @ self.plan_to_intraop[:3, :3].T
            if float(np.abs(err).max(initial=0.0)) < 1e-3:
                break
        return x.reshape(pts.shape)

    def rotation_deg(self) -> float:
        """Rotation angle of the rigid part, degrees."""
        return rigid_parameters(self.intraop_to_plan)[0]

    def translation_mm(self) -> float:
        """Length of the rigid part's translation, mm."""
        return float(np.linalg.norm(self.intraop_to_plan[:3, 3]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: matrix, method, quality, verdict, angle (°), shift (mm)."""
        return {
            "method": self.method,
            "intraop_to_plan": [[round(float(v), 6) for v in row] for row in self.intraop_to_plan],
            "rotation_deg": round(self.rotation_deg(), 3),
            "translation_mm": round(self.translation_mm(), 3),
            "quality": self.quality.to_dict(),
            "ok": bool(self.ok),
            "elapsed_s": round(self.elapsed_s, 3),
            "iterations": self.iterations,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class RigidSettings:
    """Parameters of :func:`register_rigid` (defaults suit CT→CT in the abdomen).

    Attributes
    ----------
    mask_radius_mm : float or None
        Radius of the sphere around the target the metric is evaluated in
        (None: the whole intra-op scan).
    shrink_factors, smoothing_mm : tuple
        The multi-resolution pyramid (coarse → fine).
    histogram_bins : int
    sampling_fraction : float
        Fraction of the intra-op voxels sampled per iteration (random, seeded;
        samples outside the mask are dropped).
    max_samples : int or None
        Caps the samples per iteration (the fraction shrinks for large scans).
    iterations : int
        Per level.
    seed : int
    """

    mask_radius_mm: float | None = 80.0
    shrink_factors: tuple[int, ...] = (4, 2)
    smoothing_mm: tuple[float, ...] = (2.0, 0.5)
    histogram_bins: int = 48
    sampling_fraction: float = 0.25
    iterations: int = 200
    learning_rate: float = 1.0
    min_step: float = 0.001
    max_samples: int | None = 100000
    seed: int = 7


def apply_transform(matrix: ArrayLike, points: ArrayLike) -> NDArray[np.float64]:
    """Apply a 4×4 homogeneous matrix to points (…, 3)."""
    m = np.asarray(matrix, dtype=float)
    p = np.asarray(points, dtype=float)
    return p @ m[:3, :3].T + m[:3, 3]


def rigid_parameters(matrix: ArrayLike) -> tuple[float, NDArray[np.float64]]:
    """(rotation angle in degrees, translation vector mm) of a rigid 4×4 matrix."""
    m = np.asarray(matrix, dtype=float)
    c = (np.trace(m[:3, :3]) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(c, -1.0, 1.0)))), m[:3, 3].copy()


def _matrix_from_sitk(t: sitk.Transform) -> NDArray[np.float64]:
    """4×4 matrix of an ITK affine-like transform (x → A(x − c) + c + t)."""
    a = np.asarray(t.GetMatrix(), dtype=float).reshape(3, 3)
    c = np.asarray(t.GetCenter(), dtype=float)
    tr = np.asarray(t.GetTranslation(), dtype=float)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = tr + c - a @ c
    return m


def _check_volume(volume: ImageVolume, what: str) -> None:
    if volume.array.size == 0 or min(volume.shape) < 2:
        raise InputError(f"{what}: the image is too small to register ({volume.shape_ijk})")
    if not np.all(np.isfinite(np.asarray(volume.array, dtype=float))):
        raise InputError(f"{what}: the image holds NaN or infinite values")


def _moving_crop(plan_ct: ImageVolume, intraop: ImageVolume, intraop_to_plan: NDArray[np.float64],
                 *, margin_mm: float) -> sitk.Image:
    """The planning CT cut to the intra-op scan's extent (mapped by the start transform) + margin."""
    corners = apply_transform(intraop_to_plan, intraop.extent_lps())
    ijk = plan_ct.world_to_index(corners)
    pad = margin_mm / np.asarray(plan_ct.spacing_mm)
    lo = np.maximum(np.floor(ijk.min(axis=0) - pad), 0).astype(int)
    hi = np.minimum(np.ceil(ijk.max(axis=0) + pad), np.asarray(plan_ct.shape_ijk) - 1).astype(int)
    if np.any(hi - lo < 1):
        raise RegistrationError("the intra-op scan does not overlap the planning CT")
    sub = np.asarray(plan_ct.array[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1],
                     dtype=np.float32)
    affine = plan_ct.index_to_lps.copy()
    affine[:3, 3] = plan_ct.index_to_world(lo.astype(float))
    return to_sitk(ImageVolume(sub, affine), sub)


def _crop_to_mask(image: sitk.Image, mask: NDArray[np.bool_]) -> tuple[sitk.Image, sitk.Image]:
    """``image`` and ``mask`` cut to the mask's bounding box (fewer voxels to smooth and sample)."""
    nz = np.nonzero(mask)
    lo = [int(a.min()) for a in nz]
    hi = [int(a.max()) + 1 for a in nz]
    mask_img = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_img.CopyInformation(image)
    index = [lo[2], lo[1], lo[0]]
    size = [hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0]]
    return (sitk.RegionOfInterest(image, size, index), sitk.RegionOfInterest(mask_img, size, index))


def _body_mask(hu: NDArray[Any]) -> NDArray[np.bool_]:
    """Patient voxels of a CT: the largest component above −400 HU, holes filled per slice.

    The table (a thin shell and foam) is detached from the patient by a 2-voxel
    in-plane opening before taking the largest component.
    """
    on = hu > -400.0
    st = np.zeros((1, 3, 3), dtype=bool)
    st[0, 1, :] = st[0, :, 1] = True
    opened = ndi.binary_opening(on, structure=st, iterations=2)
    lab, n = ndi.label(opened)
    if n == 0:
        return on
    sizes = ndi.sum_labels(np.ones_like(lab, dtype=np.int64), lab, index=np.arange(1, n + 1))
    body = lab == int(np.argmax(sizes)) + 1
    for k in range(body.shape[0]):
        body[k] = ndi.binary_fill_holes(body[k])
    return body


def registration_mask(intraop: ImageVolume, *, target_intraop_lps: ArrayLike | None,
                      radius_mm: float | None) -> NDArray[np.bool_]:
    """The voxels of the intra-op scan that drive the registration (k, j, i).

    Patient body (no table), minus metal dilated by 3 mm, within ``radius_mm`` of
    the target when given, plus a 10 mm band around the body surface (the
    skin–air edge is informative).
    """
    hu = np.asarray(intraop.array, dtype=np.float32)
    body = _body_mask(hu)
    sp = intraop.spacing_mm
    band = ndi.binary_dilation(body, structure=np.ones((1, 3, 3), dtype=bool),
                               iterations=max(1, int(round(10.0 / float(min(sp[0], sp[1]))))))
    mask = band
    metal = hu > METAL_HU
    if metal.any():
        dil = ndi.distance_transform_edt(~metal, sampling=(sp[2], sp[1], sp[0])) <= 3.0
        mask &= ~dil
    if target_intraop_lps is not None and radius_mm is not None:
        nk, nj, ni = hu.shape
        k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
        world = intraop.index_to_world(np.stack([i, j, k], axis=-1).astype(np.float32))
        d2 = ((world - np.asarray(target_intraop_lps, dtype=float)) ** 2).sum(axis=-1)
        sphere = d2 <= float(radius_mm) ** 2
        if int((mask & sphere).sum()) >= 2000:
            mask &= sphere
    return mask


def _ncc(a: NDArray[Any], b: NDArray[Any], mask: NDArray[np.bool_]) -> float | None:
    if int(mask.sum()) < 100:
        return None
    x = np.asarray(a, dtype=np.float64)[mask]
    y = np.asarray(b, dtype=np.float64)[mask]
    x -= x.mean()
    y -= y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else None


def _resampled_plan(plan_img: sitk.Image, fixed: sitk.Image, transform: sitk.Transform
                    ) -> NDArray[np.float32]:
    out = sitk.Resample(plan_img, fixed, transform, sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def _quality(plan_img: sitk.Image, fixed: sitk.Image, fixed_arr: NDArray[Any],
             mask: NDArray[np.bool_], transform: sitk.Transform, metric: float | None
             ) -> RegistrationQuality:
    before = _ncc(fixed_arr, _resampled_plan(plan_img, fixed, sitk.Transform(3, sitk.sitkIdentity)),
                  mask)
    after = _ncc(fixed_arr, _resampled_plan(plan_img, fixed, transform), mask)
    return RegistrationQuality(ncc=after, ncc_before=before, metric=metric,
                               n_voxels=int(mask.sum()))


def register_rigid(intraop: ImageVolume, plan_ct: ImageVolume, *,
                   target_plan_lps: ArrayLike | None = None,
                   initial_intraop_to_plan: ArrayLike | None = None,
                   settings: RigidSettings | None = None,
                   progress: ProgressCallback | None = None) -> RegistrationResult:
    """Rigid, multi-resolution mutual-information registration of ``intraop`` to ``plan_ct``.

    Parameters
    ----------
    intraop : ImageVolume
        The intra-op scan (fixed image), HU.
    plan_ct : ImageVolume
        The planning CT (moving image), HU.
    target_plan_lps : array_like (3,), optional
        The planned target (planning LPS mm): centre of rotation and of the mask.
    initial_intraop_to_plan : array_like (4, 4), optional
        Start (default identity: scanner coordinates are shared and patients move
        little on the table).
    settings : RigidSettings, optional
    progress : ProgressCallback, optional

    Returns
    -------
    RegistrationResult
        ``ok`` is False when the quality is below :data:`MIN_NCC` or the motion is
        implausible (the result is still returned so it can be shown).

    Raises
    ------
    RegistrationError
        When the optimiser fails outright or the mask is empty (no patient in the
        field of view).
    """
    cfg = settings or RigidSettings()
    t0 = time.perf_counter()
    _check_volume(intraop, "intra-op scan")
    _check_volume(plan_ct, "planning CT")
    init = np.eye(4) if initial_intraop_to_plan is None else np.asarray(
        initial_intraop_to_plan, dtype=float)
    if init.shape != (4, 4) or not np.all(np.isfinite(init)):
        raise InputError("initial_intraop_to_plan must be a finite 4x4 matrix")
    report(progress, 0.0, "registration: preparing")
    fixed_arr = np.asarray(intraop.array, dtype=np.float32)
    fixed = to_sitk(intraop, fixed_arr)
    moving = _moving_crop(plan_ct, intraop, init, margin_mm=40.0)
    target_i: NDArray[np.float64] | None = None
    if target_plan_lps is not None:
        target_i = apply_transform(np.linalg.inv(init), np.asarray(target_plan_lps, dtype=float))
    mask = registration_mask(intraop, target_intraop_lps=target_i,
                             radius_mm=cfg.mask_radius_mm if target_i is not None else None)
    if int(mask.sum()) < 500:
        raise RegistrationError(
            f"the intra-op scan has too little patient anatomy to register ({int(mask.sum())} "
            "voxels in the mask): is the patient in the field of view?")
    fixed_c, mask_img = _crop_to_mask(fixed, mask)

    centre = target_i if target_i is not None else intraop.index_to_world(
        (np.asarray(intraop.shape_ijk, dtype=float) - 1) / 2.0)
    tx = sitk.Euler3DTransform()
    tx.SetCenter([float(v) for v in centre])
    # x -> A (x - c) + c + t  must equal init: A = R, t = R c + t0 - c
    rot = init[:3, :3]
    u, _s, vt = np.linalg.svd(rot)
    rot = u @ vt
    tx.SetMatrix([float(v) for v in rot.ravel()])
    tx.SetTranslation([float(v) for v in (rot @ centre + init[:3, 3] - centre)])

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=cfg.histogram_bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    n_fixed = int(np.prod(fixed_c.GetSize()))
    fraction = min(1.0, cfg.max_samples / max(1, n_fixed)) if cfg.max_samples else 1.0
    reg.SetMetricSamplingPercentage(min(cfg.sampling_fraction, fraction), seed=cfg.seed)
    reg.SetMetricFixedMask(mask_img)
    reg.MetricUseFixedImageGradientFilterOff()
    reg.MetricUseMovingImageGradientFilterOff()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=cfg.learning_rate, minStep=cfg.min_step, numberOfIterations=cfg.iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(cfg.shrink_factors))
    reg.SetSmoothingSigmasPerLevel(list(cfg.smoothing_mm))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(tx, inPlace=True)
    levels = len(cfg.shrink_factors)
    state: dict[str, int] = {"level": 0}

    def on_level() -> None:
        state["level"] += 1
        report(progress, 0.1 + 0.8 * (state["level"] - 1) / levels,
               f"registration: level {state['level']} of {levels}")

    reg.AddCommand(sitk.sitkMultiResolutionIterationEvent, on_level)

    def on_iteration() -> None:
        state["iterations"] = state.get("iterations", 0) + 1

    reg.AddCommand(sitk.sitkIterationEvent, on_iteration)
    try:
        reg.Execute(fixed_c, moving)
    except RuntimeError as exc:
        raise RegistrationError(f"rigid registration failed: {str(exc).splitlines()[-1]}") from exc
    report(progress, 0.9, "registration: quality")
    metric = float(reg.GetMetricValue())
    matrix = _matrix_from_sitk(tx)
    quality = _quality(moving, fixed, fixed_arr, mask, tx, metric)
    warnings: list[str] = []
    angle, shift = rigid_parameters(matrix)
    ok = True
    if quality.ncc is None or quality.ncc < MIN_NCC:
        ok = False
        warnings.append(f"registration quality too low (NCC {quality.ncc if quality.ncc is None else round(quality.ncc, 3)} "
                        f"< {MIN_NCC}): the scan does not match the planning CT")
    if angle > MAX_ROTATION_DEG or float(np.linalg.norm(shift)) > MAX_TRANSLATION_MM:
        ok = False
        warnings.append(f"implausible patient motion ({angle:.1f}°, {np.linalg.norm(shift):.1f} mm)")
    if quality.ncc is not None and quality.ncc_before is not None and \
            quality.ncc + 0.02 < quality.ncc_before:
        warnings.append("registration made the match worse than no motion")
        ok = False
    report(progress, 1.0, "registration done")
    return RegistrationResult(matrix, "rigid-mi", quality, ok,
                              elapsed_s=time.perf_counter() - t0, warnings=warnings,
                              iterations=state.get("iterations", 0),
                              stop_condition=reg.GetOptimizerStopConditionDescription())


def register_deformable(intraop: ImageVolume, plan_ct: ImageVolume, rigid: RegistrationResult, *,
                        mesh_size_mm: float = 60.0, iterations: int = 60,
                        target_plan_lps: ArrayLike | None = None,
                        mask_radius_mm: float | None = 80.0,
                        progress: ProgressCallback | None = None) -> RegistrationResult:
    """B-spline refinement (intra-op → plan) on top of a rigid registration.

    The control-point grid has about ``mesh_size_mm`` spacing over the intra-op
    scan; the metric is Mattes mutual information in the same mask as the rigid
    step; the optimiser is L-BFGS-B.
    """
    t0 = time.perf_counter()
    fixed_arr = np.asarray(intraop.array, dtype=np.float32)
    fixed = to_sitk(intraop, fixed_arr)
    moving = to_sitk(plan_ct, np.asarray(plan_ct.array, dtype=np.float32))
    target_i = None if target_plan_lps is None else rigid.to_intraop(target_plan_lps)
    mask = registration_mask(intraop, target_intraop_lps=target_i,
                             radius_mm=mask_radius_mm if target_i is not None else None)
    mask_img = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_img.CopyInformation(fixed)
    extent = np.asarray(intraop.shape_ijk, dtype=float) * intraop.spacing_mm
    mesh = [max(1, int(round(e / mesh_size_mm))) for e in extent]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix([float(v) for v in rigid.intraop_to_plan[:3, :3].ravel()])
    affine.SetTranslation([float(v) for v in rigid.intraop_to_plan[:3, 3]])
    composite = sitk.CompositeTransform([affine, bspline])
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=48)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed=11)
    reg.SetMetricFixedMask(mask_img)
    reg.MetricUseFixedImageGradientFilterOff()
    reg.MetricUseMovingImageGradientFilterOff()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations,
                             maximumNumberOfCorrections=5)
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.5, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetMovingInitialTransform(affine)
    reg.SetInitialTransform(bspline, inPlace=True)
    report(progress, 0.1, "deformable registration")
    try:
        reg.Execute(fixed, moving)
    except RuntimeError as exc:
        raise RegistrationError(
            f"deformable registration failed: {str(exc).splitlines()[-1]}") from exc
    composite = sitk.CompositeTransform([affine, bspline])
    quality = _quality(moving, fixed, fixed_arr, mask, composite, float(reg.GetMetricValue()))
    ok = quality.ncc is not None and quality.ncc >= MIN_NCC
    warnings = [] if ok else ["deformable registration quality too low"]
    report(progress, 1.0, "deformable registration done")
    return RegistrationResult(rigid.intraop_to_plan.copy(), "bspline", quality, ok,
                              elapsed_s=time.perf_counter() - t0, deformable=composite,
                              warnings=warnings)


def register_points(intraop_points_lps: ArrayLike, plan_points_lps: ArrayLike, *,
                    max_fre_mm: float = 5.0) -> RegistrationResult:
    """Manual fallback: the rigid transform that best maps intra-op points onto plan points.

    Parameters
    ----------
    intraop_points_lps, plan_points_lps : array_like (n, 3)
        Corresponding landmarks (LPS mm) in each scan; n ≥ 3, not collinear.
    max_fre_mm : float
        ``ok`` is False above this RMS fiducial registration error.

    Raises
    ------
    InputError
        Fewer than 3 pairs, mismatched counts, non-finite or collinear points.
    """
    t0 = time.perf_counter()
    a = np.asarray(intraop_points_lps, dtype=float)
    b = np.asarray(plan_points_lps, dtype=float)
    if a.ndim != 2 or a.shape[1:] != (3,) or b.shape != a.shape:
        raise InputError(f"point pairs must be two (n, 3) arrays of the same size; got "
                         f"{a.shape} and {b.shape}")
    if a.shape[0] < 3:
        raise InputError(f"a point-pair registration needs at least 3 pairs; got {a.shape[0]}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise InputError("point pairs must be finite numbers (LPS mm)")
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    sv = np.linalg.svd(a - ca, compute_uv=False)
    if sv[1] < 1e-3 * max(sv[0], 1e-9) or sv[0] < 1e-6:
        raise InputError("the intra-op points are collinear (or coincide): a rotation cannot "
                         "be determined; pick at least 3 points not on one line")
    h = (a - ca).T @ (b - cb)
    u, _s, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = cb - rot @ ca
    res = np.linalg.norm(apply_transform(m, a) - b, axis=1)
    fre = float(np.sqrt((res ** 2).mean()))
    quality = RegistrationQuality(fre_mm=fre, max_residual_mm=float(res.max()), n_voxels=0)
    ok = fre <= max_fre_mm
    warnings = [] if ok else [f"fiducial registration error {fre:.2f} mm > {max_fre_mm} mm: "
                              "check the point pairs"]
    return RegistrationResult(m, "points", quality, ok, elapsed_s=time.perf_counter() - t0,
                              warnings=warnings)
