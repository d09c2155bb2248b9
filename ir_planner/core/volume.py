"""Image volumes on a regular grid placed in DICOM patient space (LPS, mm).

Index convention (written once, tested against SimpleITK)
---------------------------------------------------------
* ``array`` is indexed ``array[k, j, i]``: slice ``k``, row ``j``, column ``i``
  (the order of ``SimpleITK.GetArrayFromImage``).
* A continuous index ``(i, j, k)`` (column, row, slice; the order of ITK's index)
  is mapped to world by the 4×4 affine ``index_to_lps``::

      [x, y, z, 1]ᵀ = index_to_lps · [i, j, k, 1]ᵀ

  which for an ITK image equals ``origin + Direction · diag(spacing) · (i, j, k)``.
* Index ``(0, 0, 0)`` is the **centre** of the first voxel. Voxel ``(i, j, k)``
  covers the cell ``[i-½, i+½] × [j-½, j+½] × [k-½, k+½]`` in index space.
* World coordinates are DICOM patient coordinates: +x to the patient's Left,
  +y Posterior, +z to the Head (Superior), in millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ir_planner.core.errors import GeometryError

__all__ = ["ImageVolume", "affine_from_geometry", "geometry_from_affine", "same_grid"]


def affine_from_geometry(
    origin_lps: ArrayLike, spacing_mm: ArrayLike, direction: ArrayLike
) -> NDArray[np.float64]:
    """Build ``index_to_lps`` from ITK-style origin, spacing and direction.

    Parameters
    ----------
    origin_lps : array_like, shape (3,)
        World position (LPS, mm) of the centre of voxel (0, 0, 0).
    spacing_mm : array_like, shape (3,)
        Spacing along i, j, k in mm (all > 0).
    direction : array_like, shape (3, 3) or (9,)
        Direction cosines; column ``c`` is the world direction of index axis ``c``.

    Returns
    -------
    numpy.ndarray, shape (4, 4)
        The index→LPS affine.
    """
    origin = np.asarray(origin_lps, dtype=float).reshape(3)
    spacing = np.asarray(spacing_mm, dtype=float).reshape(3)
    direction_m = np.asarray(direction, dtype=float).reshape(3, 3)
    if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
        raise GeometryError(f"spacing must be finite and > 0 mm; got {spacing.tolist()}")
    affine = np.eye(4)
    affine[:3, :3] = direction_m * spacing[np.newaxis, :]
    affine[:3, 3] = origin
    return affine


def geometry_from_affine(
    index_to_lps: ArrayLike,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Split an affine into origin (mm), spacing (mm) and direction cosines.

    Returns
    -------
    origin_lps, spacing_mm, direction : numpy.ndarray
        Shapes (3,), (3,), (3, 3). The direction columns are unit vectors; they are
        orthonormal only if the affine has no shear.
    """
    affine = np.asarray(index_to_lps, dtype=float)
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise GeometryError("affine has a zero-length axis (zero spacing)")
    return affine[:3, 3].copy(), spacing, linear / spacing[np.newaxis, :]


def same_grid(a: "ImageVolume", b: "ImageVolume", *, tol_mm: float = 1e-3) -> bool:
    """Whether two volumes share shape and voxel placement (within ``tol_mm``)."""
    if a.shape != b.shape:
        return False
    corners = np.array(
        [[0, 0, 0], [a.shape_ijk[0] - 1, a.shape_ijk[1] - 1, a.shape_ijk[2] - 1]], dtype=float
    )
    return bool(np.allclose(a.index_to_world(corners), b.index_to_world(corners), atol=tol_mm))


@dataclass(eq=False)
class ImageVolume:
    """A voxel array with its index→LPS affine and imaging metadata.

    See the module docstring for the index convention. Intensities are physical
    values (rescale slope/intercept already applied, Hounsfield units for CT).

    Parameters
    ----------
    array : numpy.ndarray, shape (nk, nj, ni)
        Voxel values, indexed ``array[k, j, i]``.
    index_to_lps : numpy.ndarray, shape (4, 4)
        Maps (i, j, k, 1) to (x, y, z, 1) in LPS mm.
    modality : str
        DICOM modality ("CT", "MR", ...) or "" when unknown.
    study_uid, series_uid : str
        DICOM UIDs when the volume came from DICOM, else "".
    metadata : dict
        Free-form descriptive metadata (patient position, description, ...).
    warnings : list of str
        Things the reader had to do or noticed (resampling for tilt, missing slices).

    Examples
    --------
    >>> import numpy as np
    >>> vol = ImageVolume(np.zeros((2, 3, 4)), np.diag([0.5, 0.5, 2.0, 1.0]))
    >>> vol.shape_ijk
    (4, 3, 2)
    >>> vol.index_to_world([[3, 2, 1]]).tolist()
    [[1.5, 1.0, 2.0]]
    """

    array: NDArray[Any]
    index_to_lps: NDArray[np.float64]
    modality: str = ""
    study_uid: str = ""
    series_uid: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise GeometryError(f"image array must be 3-D (k, j, i); got shape {self.array.shape}")
        affine = np.asarray(self.index_to_lps, dtype=float)
        if affine.shape != (4, 4):
            raise GeometryError(f"index_to_lps must be 4×4; got shape {affine.shape}")
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise GeometryError("index_to_lps must be finite and invertible")
        if not np.allclose(affine[3], [0, 0, 0, 1]):
            raise GeometryError("index_to_lps must have last row [0, 0, 0, 1]")
        self.index_to_lps = affine

    # -- geometry --------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(nk, nj, ni)``."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        """Grid size in index order ``(ni, nj, nk)`` (ITK's ``GetSize()``)."""
        nk, nj, ni = self.shape
        return (ni, nj, nk)

    @property
    def lps_to_index(self) -> NDArray[np.float64]:
        """Inverse affine: LPS mm → continuous (i, j, k)."""
        return np.linalg.inv(self.index_to_lps)

    @property
    def origin_lps(self) -> NDArray[np.float64]:
        """World position (LPS, mm) of the centre of voxel (0, 0, 0)."""
        return self.index_to_lps[:3, 3].copy()

    @property
    def spacing_mm(self) -> NDArray[np.float64]:
        """Voxel spacing along (i, j, k) in mm."""
        return geometry_from_affine(self.index_to_lps)[1]

    @property
    def direction(self) -> NDArray[np.float64]:
        """3×3 direction cosines; column c is the world direction of index axis c."""
        return geometry_from_affine(self.index_to_lps)[2]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (cm³)."""
        return float(abs(np.linalg.det(self.index_to_lps[:3, :3])) / 1000.0)

    def is_orthogonal(self, *, tol: float = 1e-4) -> bool:
        """Whether the index axes are mutually orthogonal (no shear)."""
        d = self.direction
        return bool(np.allclose(d.T @ d, np.eye(3), atol=tol))

    def index_to_world(self, ijk: ArrayLike) -> NDArray[np.float64]:
        """Map continuous indices (…, 3) in (i, j, k) order to LPS mm."""
        pts = np.asarray(ijk, dtype=float)
        return pts @ self.index_to_lps[:3, :3].T + self.index_to_lps[:3, 3]

    def world_to_index(self, points_lps: ArrayLike) -> NDArray[np.float64]:
        """Map LPS mm points (…, 3) to continuous (i, j, k) indices."""
        pts = np.asarray(points_lps, dtype=float)
        inv = self.lps_to_index
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def contains_world(self, points_lps: ArrayLike) -> NDArray[np.bool_]:
        """Whether LPS points fall inside the image's voxel cells (…,) bool."""
        ijk = self.world_to_index(points_lps)
        upper = np.asarray(self.shape_ijk, dtype=float) - 0.5
        return np.all((ijk >= -0.5) & (ijk <= upper), axis=-1)

    def extent_lps(self) -> NDArray[np.float64]:
        """The 8 corners (LPS, mm) of the image's outer voxel cell boundaries."""
        ni, nj, nk = self.shape_ijk
        corners = np.array(
            [[i, j, k] for i in (-0.5, ni - 0.5) for j in (-0.5, nj - 0.5) for k in (-0.5, nk - 0.5)]
        )
        return self.index_to_world(corners)

    def orientation_code(self) -> str:
        """Three-letter code of the patient directions index axes point to, e.g. ``"LPS"``.

        For each index axis the dominant LPS component of its direction gives the
        letter: +x "L" / −x "R", +y "P" / −y "A", +z "S" / −z "I".
        """
        letters = (("R", "L"), ("A", "P"), ("I", "S"))
        code = []
        for c in range(3):
            col = self.direction[:, c]
            axis = int(np.argmax(np.abs(col)))
            code.append(letters[axis][1 if col[axis] > 0 else 0])
        return "".join(code)

    def with_array(self, array: NDArray[Any], **changes: Any) -> "ImageVolume":
        """A new volume on the same grid with a different array (metadata copied)."""
        if tuple(np.shape(array)) != self.shape:
            raise GeometryError(f"array shape {np.shape(array)} differs from grid {self.shape}")
        kwargs: dict[str, Any] = dict(
            modality=self.modality,
            study_uid=self.study_uid,
            series_uid=self.series_uid,
            metadata=dict(self.metadata),
            warnings=list(self.warnings),
        )
        kwargs.update(changes)
        return ImageVolume(array, self.index_to_lps.copy(), **kwargs)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description (sizes, spacing in mm, orientation)."""
        return {
            "modality": self.modality,
            "size_ijk": list(self.shape_ijk),
            "spacing_mm": [round(float(s), 6) for s in self.spacing_mm],
            "origin_lps_mm": [round(float(s), 4) for s in self.origin_lps],
            "direction": [[round(float(v), 6) for v in row] for row in self.direction],
            "orientation": self.orientation_code(),
            "dtype": str(self.array.dtype),
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "warnings": list(self.warnings),
        }
