"""NIfTI / NRRD / MHA images through SimpleITK (which converts NIfTI's RAS to LPS)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ir_planner.core.errors import ImageReadError, InputError
from ir_planner.core.volume import ImageVolume
from ir_planner.io.sitk_convert import from_sitk, to_sitk

__all__ = [
    "IMAGE_SUFFIXES", "is_image_file", "read_image_file", "write_image_file", "write_sitk_atomic",
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
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise ImageReadError(f"{p}: cannot read image ({first})") from exc
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"{p}: expected a 3-D scalar image; got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    vol = from_sitk(image, modality=modality, metadata={"source": str(p)})
    return vol


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


def write_sitk_atomic(image: sitk.Image, path: str | Path, *, compress: bool = True) -> Path:
    """Write a SimpleITK image under a temporary name beside ``path``, then rename.

    A failure never leaves a half-written output (the temporary file is removed).
    """
    p = Path(path)
    suffix = next((s for s in IMAGE_SUFFIXES if p.name.lower().endswith(s)), p.suffix)
    tmp = p.with_name(f".{p.name[: len(p.name) - len(suffix)]}.tmp{os.getpid()}{suffix}")
    try:
        sitk.WriteImage(image, str(tmp), compress)
        tmp.replace(p)
    except RuntimeError as exc:
        raise ImageReadError(f"cannot write {p}: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return p
