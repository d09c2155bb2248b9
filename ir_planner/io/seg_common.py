"""Shared pieces of the segmentation readers: layer packing, resampling, naming."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from ir_planner.core.catalog import Category
from ir_planner.core.errors import GeometryError
from ir_planner.core.labels import LabelMap, Structure
from ir_planner.core.volume import ImageVolume, same_grid
from ir_planner.io.sitk_convert import to_sitk

__all__ = [
    "LayerPacker",
    "bounding_box",
    "describe_grid",
    "grids_match",
    "resample_labels",
    "unique_name",
]

_MAX_LABEL = 65535


def bounding_box(mask: NDArray[np.bool_]) -> tuple[slice, ...] | None:
    """The smallest box (tuple of slices) holding all True voxels, None if empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name (2)``, ``name (3)``... if already taken (adds it to ``taken``)."""
    out, n = name, 2
    while out in taken:
        out, n = f"{name} ({n})", n + 1
    taken.add(out)
    return out


@dataclass
class LayerPacker:
    """Packs structures into as few uint16 layers as their overlaps allow.

    Each structure is given as a cropped boolean mask and its box on the grid,
    so memory and time scale with the structures' sizes, not the grid's. A
    structure goes into the first layer where it overlaps nothing (first fit).
    """

    shape: tuple[int, int, int]
    layers: list[NDArray[np.uint16]] = field(default_factory=list)
    structures: list[Structure] = field(default_factory=list)
    _next: list[int] = field(default_factory=list)

    def add(
        self, name: str, box: tuple[slice, ...], crop: NDArray[np.bool_], **attrs: Any
    ) -> Structure:
        """Place a structure; ``attrs`` override catalog defaults (None ignored)."""
        for n, layer in enumerate(self.layers):
            if self._next[n] <= _MAX_LABEL and not np.any(layer[box][crop]):
                break
        else:
            self.layers.append(np.zeros(self.shape, dtype=np.uint16))
            self._next.append(1)
            n = len(self.layers) - 1
        label = self._next[n]
        self.layers[n][box][crop] = label
        self._next[n] += 1
        structure = Structure.from_name(name, label, n, **attrs)
        self.structures.append(structure)
        return structure

    def label_map(self, grid: ImageVolume, warnings: list[str]) -> LabelMap:
        """The packed :class:`LabelMap` on ``grid``."""
        layers = self.layers or [np.zeros(self.shape, dtype=np.uint16)]
        return LabelMap(list(layers), grid, list(self.structures), list(warnings))


def describe_grid(vol: ImageVolume) -> str:
    """One-line description: size, spacing (mm), origin (LPS mm), orientation."""
    size = "×".join(str(n) for n in vol.shape_ijk)
    spacing = "×".join(f"{s:.4g}" for s in vol.spacing_mm)
    origin = ", ".join(f"{v:.2f}" for v in vol.origin_lps)
    return f"{size} voxels of {spacing} mm, origin ({origin}) LPS mm, {vol.orientation_code()}"


def grids_match(a: ImageVolume, b: ImageVolume) -> bool:
    """Same shape and voxel centres within 1 % of the smallest spacing (at most 0.01 mm)."""
    tol = min(0.01, 0.01 * float(min(a.spacing_mm.min(), b.spacing_mm.min())))
    return same_grid(a, b, tol_mm=max(tol, 1e-4)) and bool(
        np.allclose(a.index_to_lps[:3, :3], b.index_to_lps[:3, :3], atol=1e-4)
    )


def resample_labels(labelmap: LabelMap, image: ImageVolume) -> LabelMap:
    """Nearest-neighbour resampling of every layer onto ``image``'s grid.

    Each image voxel centre takes the label of the label-map voxel whose cell
    contains it (0 outside). SimpleITK does the work for orthogonal grids; a
    numpy implementation handles sheared ones (e.g. gantry tilt kept as shear).

    Raises
    ------
    GeometryError
        If the label map's grid does not overlap the image at all, or none of its
        labelled voxels falls inside the image.
    """
    src = labelmap.grid
    corners_img = (src.extent_lps() @ image.lps_to_index[:3, :3].T) + image.lps_to_index[:3, 3]
    lo, hi = corners_img.min(axis=0), corners_img.max(axis=0)
    upper = np.asarray(image.shape_ijk, dtype=float) - 0.5
    if np.any(hi < -0.5) or np.any(lo > upper):
        raise GeometryError(
            "the label map does not overlap the image at all: label map grid "
            f"{describe_grid(src)}; image grid {describe_grid(image)}. Is it the "
            "segmentation of another scan?"
        )
    if src.is_orthogonal() and image.is_orthogonal():
        out = _resample_sitk(labelmap, image)
    else:
        out = _resample_numpy(labelmap, image)
    warnings = list(labelmap.warnings)
    warnings.append(
        "label map resampled (nearest neighbour) from its grid "
        f"[{describe_grid(src)}] onto the image grid [{describe_grid(image)}]"
    )
    kept: list[Structure] = []
    lost: list[str] = []
    present = [set(np.flatnonzero(np.bincount(layer.reshape(-1))).tolist()) for layer in out]
    for s in labelmap.structures:
        if s.label in present[s.layer]:
            kept.append(s)
        elif labelmap.voxel_count(s) > 0:
            lost.append(s.name)
        else:
            kept.append(s)
    if labelmap.structures and not any(s.label in present[s.layer] for s in kept):
        raise GeometryError(
            "none of the label map's structures falls inside the image: label map grid "
            f"{describe_grid(src)}; image grid {describe_grid(image)}"
        )
    if lost:
        warnings.append(
            f"{len(lost)} structure(s) lie entirely outside the image and were dropped: "
            + ", ".join(lost)
        )
    return LabelMap(out, image, kept, warnings)


def _resample_sitk(labelmap: LabelMap, image: ImageVolume) -> list[NDArray[Any]]:
    """Nearest-neighbour resampling with SimpleITK (orthogonal grids only)."""
    reference = sitk.Image([int(n) for n in image.shape_ijk], sitk.sitkUInt8)
    origin, spacing, direction = image.origin_lps, image.spacing_mm, image.direction
    reference.SetOrigin([float(v) for v in origin])
    reference.SetSpacing([float(v) for v in spacing])
    reference.SetDirection([float(v) for v in direction.reshape(-1)])
    out = []
    for layer in labelmap.layers:
        moved = sitk.Resample(to_sitk(labelmap.grid, layer), reference, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0)
        out.append(sitk.GetArrayFromImage(moved).astype(layer.dtype, copy=False))
    return out


def _resample_numpy(labelmap: LabelMap, image: ImageVolume) -> list[NDArray[Any]]:
    """Nearest-neighbour resampling for any affines (sheared grids included)."""
    src = labelmap.grid
    img_to_src = src.lps_to_index @ image.index_to_lps
    ni, nj, nk = image.shape_ijk
    si, sj, sk = src.shape_ijk
    jj, ii = np.mgrid[0:nj, 0:ni]
    base = img_to_src[:3, 0:1] * ii.ravel() + img_to_src[:3, 1:2] * jj.ravel()
    out = [np.zeros(image.shape, dtype=layer.dtype) for layer in labelmap.layers]
    for k in range(nk):
        pts = base + (img_to_src[:3, 2] * k + img_to_src[:3, 3])[:, None]
        idx = np.floor(pts + 0.5).astype(np.int64)
        inside = (
            (idx[0] >= 0) & (idx[0] < si) & (idx[1] >= 0) & (idx[1] < sj)
            & (idx[2] >= 0) & (idx[2] < sk)
        )
        if not inside.any():
            continue
        flat = np.flatnonzero(inside)
        for src_layer, dst in zip(labelmap.layers, out):
            dst[k].reshape(-1)[flat] = src_layer[idx[2, flat], idx[1, flat], idx[0, flat]]
    return out


def category_of(value: Any) -> Category | None:
    """A :class:`Category` from a string or Category (None passes through)."""
    if value is None or isinstance(value, Category):
        return value
    return Category(str(value))
