"""One entry point for images: a DICOM folder/file or a NIfTI/NRRD/MHA file."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ir_planner.core.errors import ImageReadError, InputError
from ir_planner.core.progress import ProgressCallback, report
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.io.dicom import read_dicom_series
from ir_planner.io.dicom_geometry import orientation_code
from ir_planner.io.image_files import is_image_file, read_image_file
from ir_planner.io.integrity import check_image_file
from ir_planner.io.plugin_readers import plugin_reader, read_image_with

__all__ = ["load_image", "image_file_info", "check_input_path"]


def load_image(
    path: str | Path,
    *,
    series_uid: str | None = None,
    single_file: bool = False,
    progress: ProgressCallback | None = None,
) -> ImageVolume:
    """Load the volume the project plans on from a DICOM folder/file or an image file.

    Parameters
    ----------
    path : str or Path
        A folder of DICOM files (searched recursively), a DICOM file (a
        single-frame image brings the rest of its series from its folder, see
        :func:`ir_planner.io.dicom.scan_for_reading`), or a
        ``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.nhdr`` / ``.mha`` / ``.mhd`` file.
    series_uid : str, optional
        DICOM SeriesInstanceUID to read (DICOM only). Default: the largest CT/MR series.
    single_file : bool
        DICOM file only: read just that file, not the rest of its series.
    progress : ProgressCallback, optional
        Progress of long reads.

    Returns
    -------
    ImageVolume
        Volume in LPS mm; ``metadata`` holds patient position, series
        description, patient id, study date, manufacturer, slice thickness
        (when known) and ``source``.

    Raises
    ------
    ImageReadError
        Missing or unreadable input (the message names the file and the problem).
    InputError
        ``series_uid`` given for a non-DICOM image file.
    """
    p = Path(path)
    check_input_path(p, ImageReadError)
    plugin = plugin_reader(p, "image")  # another plugin's reader claims this file type
    if plugin is not None:
        return read_image_with(plugin, p)
    if p.is_file() and is_image_file(p):
        if series_uid is not None:
            raise InputError(f"{p}: a series UID only applies to DICOM input, not to image files")
        report(progress, 0.0, f"reading {p.name}")
        volume = read_image_file(p)
        volume.metadata.setdefault("source", str(p))
        report(progress, 1.0, f"read {p.name}")
        return volume
    return read_dicom_series(p, series_uid=series_uid, single_file=single_file, progress=progress)


def check_input_path(p: Path, error: type[Exception] = ImageReadError) -> None:
    """An input must be an existing regular file or folder (not a FIFO, device or socket).

    Reading a FIFO or ``/dev/zero`` would block or never end.

    Raises
    ------
    error
        Naming the path and what it is.
    """
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise error(f"{p}: no such file or folder") from None
    except OSError as exc:
        raise error(f"{p}: cannot access ({exc.strerror or exc})") from exc
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise error(f"{p}: is {kind}, not an image file or folder")


def image_file_info(path: str | Path) -> dict[str, Any]:
    """Geometry summary of a NIfTI/NRRD/MHA file, read from its header only.

    Returns
    -------
    dict
        ``size_ijk``, ``spacing_mm``, ``origin_lps_mm``, ``direction`` (3×3,
        columns = index axes in LPS), ``orientation`` code, ``pixel_type``.

    Raises
    ------
    ImageReadError
        If the file is missing, not an image file, or its header is unreadable.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{p}: no such file")
    if not is_image_file(p):
        raise ImageReadError(f"{p}: not a NIfTI/NRRD/MetaImage file")
    check_image_file(p)  # truncation and header fields, as for a full read
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise ImageReadError(f"{p}: cannot read image header ({last})") from exc
    dim = reader.GetDimension()
    size = list(reader.GetSize())
    spacing = list(reader.GetSpacing())
    origin = list(reader.GetOrigin())
    direction = np.array(reader.GetDirection(), dtype=float).reshape(dim, dim)
    if dim == 4 and size[3] == 1:
        size, spacing, origin, direction = size[:3], spacing[:3], origin[:3], direction[:3, :3]
    elif dim != 3:
        raise ImageReadError(f"{p}: expected a 3-D image; got {dim}-D")
    affine = affine_from_geometry(origin, spacing, direction)
    return {
        "path": str(p),
        "size_ijk": [int(s) for s in size],
        "spacing_mm": [round(float(s), 6) for s in spacing],
        "origin_lps_mm": [round(float(v), 4) for v in affine[:3, 3]],
        "direction": [[round(float(v), 6) for v in row] for row in direction],
        "orientation": orientation_code(direction),
        "pixel_type": sitk.GetPixelIDValueAsString(reader.GetPixelID()),
        "components": int(reader.GetNumberOfComponents()),
    }
