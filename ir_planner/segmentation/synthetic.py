"""Synthetic lesions of known shape, inserted into a real image (for tests and evaluation).

A lesion is an ellipsoid with a smooth (Gaussian-blurred) edge: intensity
``image + contrast · ½ erfc(d / (√2 · edge_mm))`` where ``d`` is the signed distance (mm)
to the ellipsoid surface (first-order approximation ``(ρ - 1) / |∇ρ|``), plus
Gaussian noise in the box around it. The truth mask is the set of voxel centres
inside the ellipsoid.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import erfc

from ir_planner.core.volume import ImageVolume

__all__ = ["insert_ellipsoid_lesion"]


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
) -> tuple[ImageVolume, NDArray[np.bool_]]:
    """A copy of ``image`` with an ellipsoidal lesion added, and its truth mask.

    Parameters
    ----------
    image : ImageVolume
        Host image (not modified).
    centre_lps : array_like, shape (3,)
        Lesion centre (LPS mm).
    semi_axes_mm : array_like, shape (3,)
        Semi-axes (mm) along the rows of ``rotation_lps`` (default the L, P, S axes).
    contrast : float
        Intensity added at the centre (negative: hypodense).
    rotation_lps : array_like, shape (3, 3), optional
        Rows are the lesion axes in LPS (orthonormal).
    edge_mm : float
        Standard deviation (mm) of the edge blur.
    noise_sd : float
        Standard deviation of Gaussian noise added in the box around the lesion.
    rng : numpy.random.Generator or int or None
        Randomness for the noise.

    Returns
    -------
    image_with_lesion : ImageVolume
    truth : numpy.ndarray of bool
        Voxels whose centres are inside the ellipsoid.
    """
    centre = np.asarray(centre_lps, dtype=float).reshape(3)
    axes = np.asarray(semi_axes_mm, dtype=float).reshape(3)
    rot = np.eye(3) if rotation_lps is None else np.asarray(rotation_lps, dtype=float)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    spacing_kji = image.spacing_mm[::-1]
    reach = float(axes.max()) + 4.0 * edge_mm + 3.0 * float(spacing_kji.max())
    c_kji = np.rint(image.world_to_index(centre)).astype(int)[::-1]
    half = np.ceil(reach / spacing_kji).astype(int)
    lo = np.maximum(c_kji - half, 0)
    hi = np.minimum(c_kji + half + 1, image.shape)
    kk, jj, ii = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
    pts = image.index_to_world(np.stack([ii, jj, kk], axis=-1).astype(float)) - centre
    local = pts @ rot.T  # coordinates along the lesion axes
    q = local / axes
    rho = np.sqrt(np.sum(q * q, axis=-1))
    grad = np.sqrt(np.sum((local / axes ** 2) ** 2, axis=-1)) / np.maximum(rho, 1e-9)
    d = (rho - 1.0) / np.maximum(grad, 1e-9)
    profile = 0.5 * erfc(d / (np.sqrt(2.0) * max(edge_mm, 1e-6)))
    out = image.array.astype(np.float32, copy=True)
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    out[box] += (contrast * profile).astype(np.float32)
    if noise_sd > 0:
        out[box] += gen.normal(0.0, noise_sd, size=out[box].shape).astype(np.float32)
    truth = np.zeros(image.shape, dtype=bool)
    truth[box] = rho <= 1.0
    return image.with_array(out), truth
