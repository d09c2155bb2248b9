"""Small SimpleITK helpers for the segmentation layer.

Conversions to SimpleITK come from :mod:`ir_planner.bridge.sitk`, shared with ``io``. They follow the convention written in
:mod:`ir_planner.core.volume`: array ``[k, j, i]``, ITK index ``(i, j, k)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from ir_planner.core.volume import ImageVolume, affine_from_geometry


def grid_of(image: sitk.Image, array: NDArray[Any] | None = None, **meta: Any) -> ImageVolume:
    """An :class:`ImageVolume` with ``image``'s geometry (array from the image unless given)."""
    data = sitk.GetArrayFromImage(image) if array is None else array
    affine = affine_from_geometry(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return ImageVolume(data, affine, **meta)


def superior_array_axis(volume: ImageVolume) -> int:
    """The array axis (0, 1 or 2 of ``[k, j, i]``) closest to the patient's head–feet axis."""
    index_axis = int(np.argmax(np.abs(volume.direction[2, :])))
    return 2 - index_axis
