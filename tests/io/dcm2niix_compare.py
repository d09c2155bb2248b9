"""Compare IR Planner's reading of a DICOM series with dcm2niix's, in world space.

Used by ``tests/io/test_dcm2niix_agreement.py`` and by the reviewer-facing script
``bench/compare_dcm2niix.py``. Both sides end in DICOM patient coordinates (LPS, mm):

* **ours**: ``ir-planner convert PATH ours.nii`` (in-process), read back with
  nibabel (``--direct``: the :class:`ImageVolume` from ``load_image`` instead);
* **dcm2niix**: the ``dcm2niix`` binary (PyPI package) run on the same PATH
  (a folder, or a file: dcm2niix then converts the file's whole folder). Among its
  outputs we take the one of *our* series (file names carry the SeriesInstanceUID,
  ``-f %j``), preferring the volume we plan on: ``_Tilt_Eq`` (tilt removed and
  spacing equalised), then ``_Eq``, then ``_Tilt``, then the plain file.

NIfTI affines are RAS (``affine_lps = diag(-1, -1, 1, 1) · affine_ras``).

Measures (:class:`Agreement`):

* ``correlation``: Pearson r of the intensities at common world points (the
  voxel centres of our grid, strided to ≤ ``max_points``, that lie inside both
  grids), each side interpolated trilinearly;
* ``centroid_distance_mm``: distance between the centroids of the bright
  voxels (value > ``threshold``, the same world points) of each side, each
  point weighted by its excess over the threshold;
* ``corner_distance_mm``: for each of the 8 corner voxel centres of our grid,
  the distance to the nearest corner voxel centre of dcm2niix's grid (max over
  the 8; ≈ 0 when both keep the acquired grid, whatever axis flips dcm2niix uses;
  larger for resampled series, whose output grids may legitimately differ);
* ``axis_angle_deg``: the largest angle between one of our index axes and the
  closest (up to sign) dcm2niix index axis (0 when the grids share orientation).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

__all__ = [
    "Agreement",
    "compare_with_dcm2niix",
    "dcm2niix_executable",
    "pick_dcm2niix_output",
    "read_nifti_lps",
    "run_dcm2niix",
]


@dataclass
class Agreement:
    """How well our volume and dcm2niix's agree in world space (LPS, mm)."""

    path: str
    series_uid: str
    ref_file: str
    ours_size: tuple[int, ...]
    ref_size: tuple[int, ...]
    ours_spacing_mm: tuple[float, ...]
    ref_spacing_mm: tuple[float, ...]
    n_points: int
    correlation: float
    threshold: float
    n_bright_ours: int
    n_bright_ref: int
    centroid_ours_lps: tuple[float, float, float]
    centroid_ref_lps: tuple[float, float, float]
    centroid_distance_mm: float
    corner_distance_mm: float
    axis_angle_deg: float
    ours_warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self) -> list[str]:
        """Cells for a summary table."""
        return [
            "/".join(Path(self.path).parts[-2:]),
            "×".join(str(s) for s in self.ours_size),
            "×".join(str(s) for s in self.ref_size),
            f"{self.correlation:.4f}",
            f"{self.centroid_distance_mm:.3f}",
            f"{self.corner_distance_mm:.3f}",
            f"{self.axis_angle_deg:.3f}",
            Path(self.ref_file).name[len(self.series_uid):].split(".nii")[0] or "(plain)",
        ]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        return asdict(self)


def dcm2niix_executable() -> str:
    """Path of the ``dcm2niix`` binary (on PATH or beside this Python)."""
    found = shutil.which("dcm2niix")
    if found:
        return found
    beside = Path(sys.executable).parent / "dcm2niix"
    if beside.is_file():
        return str(beside)
    raise FileNotFoundError("dcm2niix not found: `pip install dcm2niix`")


def run_dcm2niix(path: str | Path, out_dir: str | Path, *, timeout_s: float = 300) -> str:
    """Run dcm2niix on ``path`` (folder or file) into ``out_dir``; returns its stdout.

    Output names are the SeriesInstanceUID (``-f %j``), uncompressed (``-z n``),
    no BIDS sidecar (``-b n``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [dcm2niix_executable(), "-z", "n", "-b", "n", "-f", "%j", "-o", str(out), str(path)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    if not list(out.glob("*.nii")):
        raise RuntimeError(
            f"dcm2niix wrote nothing for {path} (exit {proc.returncode}): "
            f"{(proc.stdout + proc.stderr)[-800:]}"
        )
    return proc.stdout + proc.stderr


VARIANTS = ("auto", "plain", "_Tilt_Eq", "_Eq", "_Tilt")


def pick_dcm2niix_output(out_dir: str | Path, series_uid: str, variant: str = "auto") -> Path:
    """The dcm2niix file of ``series_uid`` that corresponds to the volume we plan on.

    ``variant="auto"``: ``_Tilt_Eq`` > ``_Eq`` > ``_Tilt`` > plain. ``"plain"`` or
    a suffix (``"_Tilt"``, ``"_Eq"``, ``"_Tilt_Eq"``) asks for that file.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
    candidates = sorted(p for p in Path(out_dir).glob(f"{series_uid}*.nii")
                        if p.name == f"{series_uid}.nii" or p.name.startswith(f"{series_uid}_"))
    if variant != "auto":
        wanted = "" if variant == "plain" else variant
        candidates = [p for p in candidates
                      if p.name[len(series_uid):].split(".nii")[0].rstrip("_0123456789") == wanted]
    if not candidates:
        names = sorted(p.name for p in Path(out_dir).glob("*.nii"))
        raise RuntimeError(
            f"dcm2niix wrote no {variant} file for series {series_uid}: {names}")

    def rank(p: Path) -> tuple[int, int, str]:
        tail = p.name[len(series_uid):]
        order = 0 if "_Tilt_Eq" in tail else 1 if "_Eq" in tail else 2 if "_Tilt" in tail else 3
        extras = int("_ROI" in tail or "_e" in tail or "_ph" in tail)
        return (extras, order, p.name)

    return min(candidates, key=rank)


def read_nifti_lps(path: str | Path) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Array in (i, j, k) order (scaling applied; first volume of 4-D) and index→LPS affine."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.get_fdata(dtype=np.float32))
    while data.ndim > 3:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    return data, LPS_TO_RAS @ img.affine


def _sample(array_ijk: NDArray[Any], index_to_lps: NDArray[np.float64],
            points_lps: NDArray[np.float64]) -> NDArray[np.float64]:
    """Trilinear values at world points; NaN outside the grid (centre to centre)."""
    inv = np.linalg.inv(index_to_lps)
    ijk = points_lps @ inv[:3, :3].T + inv[:3, 3]
    shape = np.array(array_ijk.shape, dtype=float)
    tol = 1e-3
    inside = np.all((ijk >= -tol) & (ijk <= shape - 1 + tol), axis=1)
    ijk = np.clip(ijk, 0, shape - 1)
    values = ndimage.map_coordinates(np.asarray(array_ijk, np.float32), ijk.T, order=1,
                                     mode="nearest", prefilter=False).astype(np.float64)
    values[~inside] = np.nan
    return values


def _weighted_centroid(points: NDArray[np.float64], weights: NDArray[np.float64]) -> NDArray[
        np.float64]:
    """Centroid weighted by the excess over the threshold (no jump when a voxel crosses it)."""
    total = float(weights.sum())
    if total <= 0:
        return np.full(3, np.nan)
    return (points * weights[:, None]).sum(axis=0) / total


def _corners(shape: tuple[int, ...], affine: NDArray[np.float64]) -> NDArray[np.float64]:
    idx = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                    for k in (0, shape[2] - 1)], dtype=float)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def _axis_angle_deg(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    da = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)
    db = b[:3, :3] / np.linalg.norm(b[:3, :3], axis=0)
    cos = np.abs(da.T @ db).max(axis=1)
    return float(np.degrees(np.arccos(np.clip(cos.min(), -1.0, 1.0))))


def _our_volume(path: Path, series_uid: str | None, via_convert: bool,
                work: Path) -> tuple[NDArray[Any], NDArray[np.float64], str, list[str]]:
    from ir_planner.io.load import load_image

    volume = load_image(path, series_uid=series_uid)
    uid = volume.series_uid
    if not via_convert:
        return volume.array.transpose(2, 1, 0), volume.index_to_lps, uid, list(volume.warnings)
    from ir_planner.cli import main

    out = work / "ours.nii"
    args = ["-q", "convert", str(path), str(out)] + (["--series", uid] if uid else [])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = main(args)
    if status != 0:
        raise RuntimeError(f"ir-planner convert failed for {path}")
    array, affine = read_nifti_lps(out)
    return array, affine, uid, list(volume.warnings)


def compare_with_dcm2niix(
    path: str | Path,
    *,
    series_uid: str | None = None,
    threshold: float | None = None,
    via_convert: bool = True,
    max_points: int = 400_000,
    work_dir: str | Path | None = None,
    variant: str = "auto",
) -> Agreement:
    """Read ``path`` with IR Planner and with dcm2niix and measure their agreement.

    Parameters
    ----------
    path : str or Path
        DICOM folder or file.
    series_uid : str, optional
        Series to compare (default: the one IR Planner chooses).
    threshold : float, optional
        Intensity above which voxels are "bright" for the centroid. Default: the
        98th percentile of both sides' values at the common points.
    via_convert : bool
        Go through ``ir-planner convert`` + nibabel (True) or compare the
        in-memory :class:`ImageVolume` (False).
    max_points : int
        Cap on the number of world points sampled (our grid, strided).
    work_dir : str or Path, optional
        Where to write the NIfTI files (a temporary folder by default, removed).
    variant : str
        Which dcm2niix output to compare with (see :func:`pick_dcm2niix_output`).
    """
    p = Path(path)
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="irp-d2n-")
        work = Path(tmp.name)
    else:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    try:
        ours, ours_affine, uid, warnings = _our_volume(p, series_uid, via_convert, work)
        log = run_dcm2niix(p, work / "dcm2niix")
        ref_file = pick_dcm2niix_output(work / "dcm2niix", uid, variant)
        ref, ref_affine = read_nifti_lps(ref_file)
    finally:
        if tmp is not None:
            tmp.cleanup()
    notes = [line for line in log.splitlines() if line.startswith(("Warning", "Error"))][:6]
    stride = max(1, int(np.ceil((ours.size / max_points) ** (1 / 3))))
    axes = [np.arange(0, n, stride) for n in ours.shape]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(float)
    points = ijk @ ours_affine[:3, :3].T + ours_affine[:3, 3]
    a = _sample(ours, ours_affine, points)
    b = _sample(ref, ref_affine, points)
    both = np.isfinite(a) & np.isfinite(b)
    n = int(both.sum())
    if n > 2 and np.std(a[both]) > 0 and np.std(b[both]) > 0:
        r = float(np.corrcoef(a[both], b[both])[0, 1])
    else:
        r = float("nan")
    thr = float(np.percentile(np.concatenate([a[both], b[both]]), 98)) if (
        threshold is None and n) else float(threshold or 0.0)
    bright_a = both & (a > thr)
    bright_b = both & (b > thr)
    ca = _weighted_centroid(points, np.where(bright_a, a - thr, 0.0))
    cb = _weighted_centroid(points, np.where(bright_b, b - thr, 0.0))
    corners_a = _corners(ours.shape, ours_affine)
    corners_b = _corners(ref.shape, ref_affine)
    corner = float(np.max(np.min(np.linalg.norm(
        corners_a[:, None, :] - corners_b[None, :, :], axis=2), axis=1)))
    spacing_a = tuple(round(float(s), 4) for s in np.linalg.norm(ours_affine[:3, :3], axis=0))
    spacing_b = tuple(round(float(s), 4) for s in np.linalg.norm(ref_affine[:3, :3], axis=0))
    return Agreement(
        path=str(p),
        series_uid=uid,
        ref_file=str(ref_file),
        ours_size=tuple(int(s) for s in ours.shape),
        ref_size=tuple(int(s) for s in ref.shape),
        ours_spacing_mm=spacing_a,
        ref_spacing_mm=spacing_b,
        n_points=n,
        correlation=r,
        threshold=thr,
        n_bright_ours=int(bright_a.sum()),
        n_bright_ref=int(bright_b.sum()),
        centroid_ours_lps=tuple(float(v) for v in ca),  # type: ignore[arg-type]
        centroid_ref_lps=tuple(float(v) for v in cb),  # type: ignore[arg-type]
        centroid_distance_mm=float(np.linalg.norm(ca - cb)),
        corner_distance_mm=corner,
        axis_angle_deg=_axis_angle_deg(ours_affine, ref_affine),
        ours_warnings=warnings,
        notes=notes,
    )
