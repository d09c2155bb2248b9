"""Synthetic intra-op scans made from a real CT: known motion, slab, noise, streaks, needle.

An oracle independent of the detector: the needle is a metal cylinder whose
partial-volume fraction in each voxel is computed by supersampling (4×4×4 points
per voxel), scaled to a metal attenuation far above the scanner's range, blurred
by an isotropic Gaussian point-spread function (0.7 mm) and clipped at the
scanner maximum (3071 HU), which is what makes metal bloom on CT.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from ir_planner.core.volume import ImageVolume, affine_from_geometry


def rotation(axis: NDArray[np.float64], angle_deg: float) -> NDArray[np.float64]:
    u = np.asarray(axis, float) / np.linalg.norm(axis)
    a = math.radians(angle_deg)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)


def moved_slab(plan: ImageVolume, plan_to_intraop: NDArray[np.float64], centre_intraop: NDArray[np.float64],
               *, size_ijk: tuple[int, int, int], spacing_mm: tuple[float, float, float],
               ) -> ImageVolume:
    """Resample ``plan`` (trilinear) onto an axial slab grid of the moved patient."""
    sx, sy, sz = spacing_mm
    ni, nj, nk = size_ijk
    origin = np.asarray(centre_intraop, float) - 0.5 * np.array([(ni - 1) * sx, (nj - 1) * sy,
                                                                 (nk - 1) * sz])
    affine = affine_from_geometry(origin, spacing_mm, np.eye(3))
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    pts = np.stack([i, j, k], axis=-1) @ affine[:3, :3].T + affine[:3, 3]
    inv = np.linalg.inv(plan_to_intraop)
    pts_plan = pts @ inv[:3, :3].T + inv[:3, 3]
    ijk = plan.world_to_index(pts_plan)
    vals = ndi.map_coordinates(np.asarray(plan.array, np.float32),
                               [ijk[..., 2], ijk[..., 1], ijk[..., 0]], order=1, mode="constant",
                               cval=-1024.0)
    return ImageVolume(vals.astype(np.float32), affine, modality="CT")


def add_needle(vol: ImageVolume, hub: NDArray[np.float64], tip: NDArray[np.float64],
               diameter_mm: float, *, psf_mm: float = 0.7) -> None:
    """Add a metal cylinder hub→tip (flat ends) with partial volume, PSF blur and clipping."""
    arr = vol.array
    u = (tip - hub) / np.linalg.norm(tip - hub)
    length = float(np.linalg.norm(tip - hub))
    r = diameter_mm / 2.0
    frac = np.zeros(arr.shape, np.float32)
    lo = np.floor(vol.world_to_index(np.minimum(hub, tip) - 4) - 1).astype(int)
    hi = np.ceil(vol.world_to_index(np.maximum(hub, tip) + 4) + 1).astype(int)
    lo = np.maximum(np.minimum(lo, hi), 0)
    hi = np.minimum(np.maximum(lo, hi), np.array(vol.shape_ijk) - 1)
    sub = np.linspace(-0.375, 0.375, 4)
    k, j, i = np.meshgrid(np.arange(lo[2], hi[2] + 1), np.arange(lo[1], hi[1] + 1),
                          np.arange(lo[0], hi[0] + 1), indexing="ij")
    base = np.stack([i, j, k], axis=-1).astype(np.float64)
    acc = np.zeros(base.shape[:-1])
    for a in sub:
        for b in sub:
            for c in sub:
                p = vol.index_to_world(base + np.array([a, b, c]))
                rel = p - hub
                t = rel @ u
                d2 = (rel * rel).sum(-1) - t * t
                acc += ((t >= 0) & (t <= length) & (d2 <= r * r))
    frac[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = acc / 64.0
    sp = vol.spacing_mm
    blurred = ndi.gaussian_filter(frac, sigma=(psf_mm / sp[2], psf_mm / sp[1], psf_mm / sp[0]))
    metal_hu = 20000.0
    out = arr + blurred * (metal_hu - np.maximum(arr, -1000.0))
    np.clip(out, -1024, 3071, out=out)
    arr[...] = out


def add_streaks(vol: ImageVolume, centre: NDArray[np.float64], rng: np.random.Generator,
                amplitude_hu: float = 250.0) -> None:
    """Alternating bright/dark rays from ``centre`` in every slice (metal streak artefacts)."""
    arr = vol.array
    nk, nj, ni = arr.shape
    jj, ii = np.meshgrid(np.arange(nj), np.arange(ni), indexing="ij")
    for kk in range(nk):
        p = vol.index_to_world(np.stack([ii, jj, np.full_like(ii, kk)], -1).astype(float))
        rho = np.hypot(p[..., 0] - centre[0], p[..., 1] - centre[1])
        th = np.arctan2(p[..., 1] - centre[1], p[..., 0] - centre[0])
        g = (1 - np.exp(-(rho / 5.0) ** 2)) * (30.0 / (rho + 30.0))
        ph = rng.uniform(0, 2 * math.pi, 2)
        arr[kk] += (amplitude_hu * g * (0.6 * np.cos(9 * th + ph[0]) + 0.4 * np.cos(15 * th + ph[1]))
                    ).astype(arr.dtype)
