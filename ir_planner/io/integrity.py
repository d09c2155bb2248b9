"""Integrity checks of image files *before* a decoder allocates anything.

One place per format, shared by every reader (images, label maps, mask folders):

* **NIfTI-1** (``.nii``, ``.nii.gz``): header fields (dimensions, datatype,
  ``pixdim``, q/sform codes and matrices, ``vox_offset``, ``scl_slope``), the
  data size the header declares against the bytes present, and for gzip files
  the whole stream (CRC-32 and length trailer), read in small pieces;
* **NRRD** (``.nrrd``, ``.nhdr``): sizes, type, encoding, spacing/directions,
  the data file (only beside the header) and its size;
* **MetaImage** (``.mha``, ``.mhd``): the same for ``DimSize``, ``ElementType``,
  ``ElementSpacing``, ``TransformMatrix`` and ``ElementDataFile``.

Every check raises :class:`~ir_planner.core.errors.ImageReadError` naming the file
and the field. :func:`memory_budget_bytes` is the largest array a reader may
allocate; the declared size is checked against it before reading.
"""

from __future__ import annotations

from pathlib import Path

from ir_planner.core.errors import ImageReadError
from ir_planner.io.integrity_base import (
    HeaderCheck,
    check_allocation,
    gzip_pieces,
    memory_budget_bytes,
)
from ir_planner.io.integrity_nifti import check_nifti
from ir_planner.io.integrity_text import check_metaimage, check_nrrd

__all__ = [
    "HeaderCheck",
    "check_image_file",
    "check_nifti",
    "check_nrrd",
    "check_metaimage",
    "memory_budget_bytes",
    "check_allocation",
    "gzip_pieces",
]


def check_image_file(path: str | Path) -> HeaderCheck | None:
    """Run the check of the file's format (None for formats without one).

    Raises
    ------
    ImageReadError
        Truncated, damaged or nonsensical file (the message names the file and field).
    """
    p = Path(path)
    name = p.name.lower()
    if not p.is_file():
        what = "no such file" if not p.exists() else "not a regular file"
        raise ImageReadError(f"{p}: {what}")
    if name.endswith((".nii", ".nii.gz")):
        return check_nifti(p)
    if name.endswith((".nrrd", ".nhdr")):
        return check_nrrd(p)
    if name.endswith((".mha", ".mhd")):
        return check_metaimage(p)
    return None
