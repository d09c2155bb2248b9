"""Synthetic lesions of known shape, inserted into a real image (for tests and evaluation).

A lesion is an ellipsoid seen the way a scanner sees it:

* the object is an ellipsoid of constant contrast with a smooth edge (the scanner's
  point-spread function, a Gaussian of standard deviation ``edge_mm``):
  ``contrast · ½ erfc(d / (√2 · edge_mm))`` where ``d`` is the signed distance (mm) to
  the ellipsoid surface (first-order approximation ``(ρ - 1) / |∇ρ|``);
* each voxel records the **average over its cell** (partial volume): the profile is
  evaluated at ``n_sub³`` points spread evenly over the voxel's cell and averaged;
* Gaussian noise is added in the box around the lesion.

The truth mask is the set of voxels whose cell is **at least half inside** the
ellipsoid (cell coverage ≥ 0.5, computed with the same ``n_sub³`` sub-samples): the
fair reference for a method that must decide, voxel by voxel, whether a partly
covered voxel belongs to the lesion. A lesion smaller than about half a voxel can
have an empty truth mask; callers must handle that (it cannot be segmented on that
grid).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import erfc

from ir_planner.core.volume import ImageVolume

__all__ = ["insert_ellipsoid_lesion", "ellipsoid_coverage"]


def _box_and_subsamples(
    image: ImageVolume, centre: NDArray[np.float64], axes: NDArray[np.float64],
    rot: NDArray[np.float64], edge_mm: float, n_sub: int,
) -> tuple[tuple[slice, slice, slice], NDArray[np.float64], list[NDArray[np.float64]]]:
    """Box around the lesion, voxel-centre offsets from the centre along the lesion
    axes, and the sub-sample offsets (lesion-axis coordinates, mm) within a cell."""
    if n_sub < 1:
        raise ValueError(f"n_sub must be ≥ 1; got {n_sub}")
    spacing_kji = image.spacing_mm[::-1]
    reach = float(axes.max()) + 4.0 * edge_mm + 2.0 * float(spacing_kji.max())
    c_kji = np.rint(image.world_to_index(centre)).astype(int)[::-1]
    half = np.ceil(reach / spacing_kji).astype(int)
    lo = np.clip(c_kji - half, 0, image.shape)
    hi = np.clip(c_kji + half + 1, 0, image.shape)
    kk, jj, ii = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
    pts = image.index_to_world(np.stack([ii, jj, kk], axis=-1).astype(float)) - centre
    local = pts @ rot.T  # coordinates along the lesion axes
    linear = image.index_to_lps[:3, :3]
    frac = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    subs = [linear @ np.array([fi, fj, fk]) @ rot.T
            for fk in frac for fj in frac for fi in frac]
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    return box, local, subs


def ellipsoid_coverage(
    grid: ImageVolume, centre_lps: ArrayLike, semi_axes_mm: ArrayLike, *,
    rotation_lps: ArrayLike | None = None, n_sub: int = 5,
) -> NDArray[np.float32]:
    """Fraction (0–1) of each voxel's cell inside an ellipsoid, by sub-sampling.

    Parameters
    ----------
    grid : ImageVolume
        The grid (its array is not used).
    centre_lps : array_like, shape (3,)
        Ellipsoid centre (LPS mm).
    semi_axes_mm : array_like, shape (3,)
        Semi-axes (mm) along the rows of ``rotation_lps`` (default the L, P, S axes).
    rotation_lps : array_like, shape (3, 3), optional
        Rows are the ellipsoid axes in LPS (orthonormal).
    n_sub : int
        Sub-samples per axis and voxel (``n_sub³`` per voxel; resolution ``1 / n_sub³``).

    Returns
    -------
    numpy.ndarray of float32, shape ``grid.shape``
    """
    centre = np.asarray(centre_lps, dtype=float).reshape(3)
    axes = np.asarray(semi_axes_mm, dtype=float).reshape(3)
    rot = np.eye(3) if rotation_lps is None else np.asarray(rotation_lps, dtype=float)
    box, local, subs = _box_and_subsamples(grid, centre, axes, rot, 0.0, n_sub)
    cover = np.zeros(local.shape[:-1], dtype=np.float32)
    for off in subs:
        q = (local + off) / axes
        cover += np.sum(q * q, axis=-1) <= 1.0
    out = np.zeros(grid.shape, dtype=np.float32)
    out[box] = cover / len(subs)
    return out


def insert_ellipsoid_lesion(
    image: ImageVolume,
    centre_lps: ArrayLike,
    semi_axes_mm: ArrayLike,
    contrast: float,
    *,
    rotation_lps: ArrayLike | None = None,
    edge_mm: float = 1.0,
    noise_sd: float = 0.0,
    rng: np.random.Generator | int | None = 0,
    n_sub: int = 4,
) -> tuple[ImageVolume, NDArray[np.bool_]]:
    """A copy of ``image`` with an ellipsoidal lesion added, and its truth mask.

    Parameters
    ----------
    image : ImageVolume
        Host image (not modified).
    centre_lps : array_like, shape (3,)
        Lesion centre (LPS mm); need not be a voxel centre.
    semi_axes_mm : array_like, shape (3,)
        Semi-axes (mm) along the rows of ``rotation_lps`` (default the L, P, S axes).
    contrast : float
        Intensity added inside the lesion (negative: hypodense).
    rotation_lps : array_like, shape (3, 3), optional
        Rows are the lesion axes in LPS (orthonormal).
    edge_mm : float
        Standard deviation (mm) of the scanner's blur of the edge (0: sharp edge,
        partial volume only).
    noise_sd : float
        Standard deviation of Gaussian noise added in the box around the lesion.
    rng : numpy.random.Generator or int or None
        Randomness for the noise.
    n_sub : int
        Sub-samples per axis and voxel for the partial-volume average and the
        truth coverage (``n_sub³`` per voxel).

    Returns
    -------
    image_with_lesion : ImageVolume
    truth : numpy.ndarray of bool
        Voxels whose cell is at least half inside the ellipsoid (may be empty for a
        lesion smaller than about half a voxel).
    """
    centre = np.asarray(centre_lps, dtype=float).reshape(3)
    axes = np.asarray(semi_axes_mm, dtype=float).reshape(3)
    rot = np.eye(3) if rotation_lps is None else np.asarray(rotation_lps, dtype=float)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    box, local, subs = _box_and_subsamples(image, centre, axes, rot, edge_mm, n_sub)
    profile = np.zeros(local.shape[:-1], dtype=np.float64)
    cover = np.zeros(local.shape[:-1], dtype=np.float32)
    for off in subs:
        p = local + off
        q = p / axes
        rho = np.sqrt(np.sum(q * q, axis=-1))
        cover += rho <= 1.0
        if edge_mm > 0:
            grad = np.sqrt(np.sum((p / axes ** 2) ** 2, axis=-1)) / np.maximum(rho, 1e-9)
            d = (rho - 1.0) / np.maximum(grad, 1e-9)
            profile += 0.5 * erfc(d / (np.sqrt(2.0) * edge_mm))
        else:
            profile += rho <= 1.0
    profile /= len(subs)
    cover /= len(subs)
    out = image.array.astype(np.float32, copy=True)
    out[box] += (contrast * profile).astype(np.float32)
    if noise_sd > 0:
        out[box] += gen.normal(0.0, noise_sd, size=out[box].shape).astype(np.float32)
    truth = np.zeros(image.shape, dtype=bool)
    truth[box] = cover >= 0.5
    return image.with_array(out), truth
