"""Private SimpleITK bridges for the segmentation layer.

``ir_planner.segmentation`` may not import ``ir_planner.io`` (same layer), so the
few conversions it needs live here. They follow the convention written in
:mod:`ir_planner.core.volume`: array ``[k, j, i]``, ITK index ``(i, j, k)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from ir_planner.core.errors import GeometryError
from ir_planner.core.volume import ImageVolume, affine_from_geometry, geometry_from_affine


def to_sitk(volume: ImageVolume, array: NDArray[Any] | None = None) -> sitk.Image:
    """A SimpleITK image on ``volume``'s grid holding ``array`` (default: its own)."""
    if not volume.is_orthogonal():
        raise GeometryError(
            "this volume's index axes are not orthogonal (sheared affine); resample it "
            "onto an orthogonal grid before segmenting"
        )
    data = volume.array if array is None else np.asarray(array)
    if data.dtype == np.bool_:
        data = data.view(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=False)
    origin, spacing, direction = geometry_from_affine(volume.index_to_lps)
    image.SetOrigin([float(v) for v in origin])
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in direction.reshape(-1)])
    return image


def grid_of(image: sitk.Image, array: NDArray[Any] | None = None, **meta: Any) -> ImageVolume:
    """An :class:`ImageVolume` with ``image``'s geometry (array from the image unless given)."""
    data = sitk.GetArrayFromImage(image) if array is None else array
    affine = affine_from_geometry(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return ImageVolume(data, affine, **meta)


def superior_array_axis(volume: ImageVolume) -> int:
    """The array axis (0, 1 or 2 of ``[k, j, i]``) closest to the patient's head–feet axis."""
    index_axis = int(np.argmax(np.abs(volume.direction[2, :])))
    return 2 - index_axis
