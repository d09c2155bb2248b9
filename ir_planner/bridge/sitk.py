"""Exact conversions between :class:`ImageVolume` and SimpleITK images.

SimpleITK: ``physical = origin + Direction · diag(spacing) · index`` with index
in (i, j, k) order and ``GetArrayFromImage`` in (k, j, i) order: the same
convention as :class:`~ir_planner.core.volume.ImageVolume`, so arrays are shared
in layout and the affine is rebuilt from origin, spacing and direction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from ir_planner.core.errors import GeometryError
from ir_planner.core.volume import ImageVolume, affine_from_geometry, geometry_from_affine

__all__ = ["to_sitk", "from_sitk"]


def to_sitk(volume: ImageVolume, array: np.ndarray | None = None) -> sitk.Image:
    """A SimpleITK image with the volume's geometry (and ``array`` if given).

    Raises
    ------
    GeometryError
        If the affine is sheared (SimpleITK needs orthonormal directions).
    """
    if not volume.is_orthogonal():
        raise GeometryError(
            "this volume's index axes are not orthogonal (sheared affine); resample it "
            "onto an orthogonal grid before converting to SimpleITK"
        )
    data = volume.array if array is None else np.asarray(array)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=False)
    origin, spacing, direction = geometry_from_affine(volume.index_to_lps)
    image.SetOrigin([float(v) for v in origin])
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in direction.reshape(-1)])
    return image


def from_sitk(image: sitk.Image, **metadata: Any) -> ImageVolume:
    """An :class:`ImageVolume` from a 3-D SimpleITK image (array copied).

    Keyword arguments go to the ``ImageVolume`` constructor (modality, uids, ...).
    """
    if image.GetDimension() != 3:
        raise GeometryError(f"expected a 3-D image; got {image.GetDimension()}-D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise GeometryError(
            f"expected a scalar image; got {image.GetNumberOfComponentsPerPixel()} components"
        )
    array = sitk.GetArrayFromImage(image)
    affine = affine_from_geometry(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return ImageVolume(array, affine, **metadata)
