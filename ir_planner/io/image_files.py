"""NIfTI / NRRD / MHA images through SimpleITK (which converts NIfTI's RAS to LPS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ir_planner.core.errors import GeometryError, ImageReadError, InputError, OutputError
from ir_planner.core.fileio import atomic_output, register_input
from ir_planner.core.volume import ImageVolume
from ir_planner.io.integrity import HeaderCheck, check_image_file
from ir_planner.io.sitk_convert import from_sitk, to_sitk

__all__ = [
    "IMAGE_SUFFIXES", "is_image_file", "read_image_file", "read_sitk_checked", "write_image_file",
    "write_sitk_atomic",
]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` has a NIfTI/NRRD/MetaImage suffix."""
    name = str(path).lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def read_image_file(path: str | Path, *, modality: str = "") -> ImageVolume:
    """Read a 3-D NIfTI/NRRD/MHA image into LPS space.

    Raises
    ------
    ImageReadError
        Missing, unreadable or not 3-D scalar files, with the path in the message.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: no such file")
    if not is_image_file(p):
        raise ImageReadError(
            f"{p}: unsupported image file type; expected one of {', '.join(IMAGE_SUFFIXES)}"
        )
    image, checked = read_sitk_checked(p)
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"{p}: expected a 3-D scalar image; got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    try:
        vol = from_sitk(image, modality=modality, metadata={"source": str(p)})
    except GeometryError as exc:
        raise ImageReadError(f"{p}: {exc}") from exc
    vol.warnings.extend(checked.warnings if checked is not None else [])
    _repair_non_finite(vol, p)
    return vol


def read_sitk_checked(p: Path) -> tuple[sitk.Image, HeaderCheck | None]:
    """Integrity-check an image file (:mod:`ir_planner.io.integrity`), then read it.

    Every file read (header and data files) is registered with the output guard.

    Raises
    ------
    ImageReadError
        Damaged, truncated or nonsensical file, naming it and the field.
    """
    checked = check_image_file(p)
    for f in checked.files if checked is not None else [p]:
        register_input(f)
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise ImageReadError(f"{p}: cannot read image ({first})") from exc
    pixel = image.GetPixelID()
    if pixel in _COMPLEX_PIXELS:
        raise ImageReadError(
            f"{p}: complex voxels ({image.GetPixelIDTypeAsString()}) are not supported: "
            "planning needs real intensities"
        )
    return image, checked


_COMPLEX_PIXELS = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}


def _repair_non_finite(vol: ImageVolume, p: Path) -> None:
    """Replace NaN/infinite voxels by the smallest finite value, with a warning."""
    array = vol.array
    if array.dtype.kind != "f":
        if array.dtype == np.uint64 and array.size and int(array.max()) > np.iinfo(np.int64).max:
            raise ImageReadError(f"{p}: uint64 voxel values above 2^63 are not supported")
        return
    bad = ~np.isfinite(array)
    n_bad = int(bad.sum())
    if not n_bad:
        return
    if n_bad == array.size:
        raise ImageReadError(f"{p}: every voxel is NaN or infinite")
    fill = float(array[~bad].min())
    array[bad] = fill
    vol.warnings.append(
        f"{p}: {n_bad} voxel(s) ({100.0 * n_bad / array.size:.2g}%) were NaN or infinite; "
        f"set to {fill:g}, the smallest finite value"
    )


def write_image_file(volume: ImageVolume, path: str | Path, *, compress: bool = True) -> Path:
    """Write ``volume`` as NIfTI/NRRD/MHA (by suffix) with geometry preserved.

    The file is written under a temporary name and renamed, so a failure never
    leaves a half-written output.
    """
    p = Path(path)
    if not is_image_file(p):
        raise InputError(
            f"output {p}: unsupported suffix; use one of .nii.gz, .nii, .nrrd, .mha"
        )
    if not p.parent.exists():
        raise InputError(f"output {p}: folder {p.parent} does not exist")
    array = volume.array
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    write_sitk_atomic(to_sitk(volume, array), p, compress=compress)
    return p


def write_sitk_atomic(
    image: sitk.Image, path: str | Path, *, compress: bool = True, what: str = "output"
) -> Path:
    """Write a SimpleITK image through the atomic writer (:func:`~ir_planner.core.fileio.atomic_output`).

    A failure never leaves a half-written output, and an output that is an input
    of the running command is refused.

    Raises
    ------
    OutputError
        The output is an input, or the write failed (the message names ``path``).
    """
    p = Path(path)
    with atomic_output(p, what=what) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), compress)
        except RuntimeError as exc:
            lines = str(exc).strip().splitlines()
            reason = lines[-1] if lines else "write failed"
            raise OutputError(f"cannot write {what} {p}: {reason.replace(str(tmp), str(p))}") from exc
    return p
