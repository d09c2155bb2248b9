"""Generators of malformed inputs: small valid files, then damaged copies.

Every generator writes real files with the project's own writers or with
SimpleITK / pydicom, then damages them the way the issue-15 campaign did:
truncation at an offset, a header field set to 0 / NaN / huge / negative, a
decompression bomb, a path that escapes the header's folder.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ir_planner.core.volume import ImageVolume
from ir_planner.io.dicom_write import write_dicom_series

# NIfTI-1 header fields: offset, struct format
NIFTI_FIELDS: dict[str, tuple[int, str]] = {
    "sizeof_hdr": (0, "i"),
    "dim0": (40, "h"), "dim1": (42, "h"), "dim2": (44, "h"), "dim3": (46, "h"),
    "datatype": (70, "h"), "bitpix": (72, "h"),
    "pixdim0": (76, "f"), "pixdim1": (80, "f"), "pixdim2": (84, "f"), "pixdim3": (88, "f"),
    "vox_offset": (108, "f"), "scl_slope": (112, "f"), "scl_inter": (116, "f"),
    "qform_code": (252, "h"), "sform_code": (254, "h"),
    "quatern_b": (256, "f"), "quatern_c": (260, "f"), "quatern_d": (264, "f"),
    "qoffset_x": (268, "f"),
    "srow_x0": (280, "f"), "srow_x3": (292, "f"), "srow_y1": (300, "f"), "srow_z2": (320, "f"),
}


def small_array(shape_kji: tuple[int, int, int] = (6, 10, 12), seed: int = 0) -> np.ndarray:
    """A small int16 CT-like array (values -1000..1000)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1000, size=shape_kji).astype(np.int16)


def write_image(path: Path, array: np.ndarray | None = None, *,
                spacing: tuple[float, float, float] = (0.8, 0.9, 2.5)) -> Path:
    """A valid image file (format by suffix) written by SimpleITK."""
    image = sitk.GetImageFromArray(small_array() if array is None else array)
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 20.0, 30.0))
    sitk.WriteImage(image, str(path), path.name.endswith(".gz"))
    return path


def nifti_raw(path: Path) -> bytes:
    """The uncompressed bytes of a ``.nii`` / ``.nii.gz`` file."""
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.name.endswith(".gz") else raw


def patch(raw: bytes, field: str, value: float) -> bytes:
    """``raw`` (uncompressed NIfTI-1) with one header field replaced."""
    offset, fmt = NIFTI_FIELDS[field]
    data = bytearray(raw)
    if fmt in "hi":
        value = int(value)
    data[offset: offset + struct.calcsize(fmt)] = struct.pack("<" + fmt, value)
    return bytes(data)


def write_nifti(path: Path, raw: bytes) -> Path:
    """Write uncompressed NIfTI bytes as ``.nii`` or gzip them for ``.nii.gz``."""
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


def truncate(path: Path, keep: int) -> Path:
    """Cut ``path`` to its first ``keep`` bytes (negative: drop ``-keep`` bytes)."""
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return path


def nifti_bomb(path: Path, inflated_bytes: int) -> Path:
    """A small valid header followed by ``inflated_bytes`` of zeros, gzip-compressed."""
    raw = nifti_raw(write_image(path.with_name("bomb_src.nii"), small_array((2, 2, 2))))
    header = raw[:352]
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(header)
        block = b"\0" * (1 << 20)
        for _ in range(inflated_bytes >> 20):
            fh.write(block)
    path.with_name("bomb_src.nii").unlink()
    return path


def volume(shape_kji: tuple[int, int, int] = (5, 8, 8)) -> ImageVolume:
    """A small axial CT volume in LPS."""
    affine = np.diag([0.7, 0.7, 2.0, 1.0])
    affine[:3, 3] = (-100.0, -120.0, 50.0)
    return ImageVolume(small_array(shape_kji), affine, modality="CT")


def dicom_series(folder: Path, shape_kji: tuple[int, int, int] = (5, 8, 8)) -> list[Path]:
    """A valid CT series (one file per slice), written by the project's writer."""
    return write_dicom_series(volume(shape_kji), folder)


def label_map(folder: Path, *, name: str = "seg.nii.gz",
              sidecar: dict[str, object] | None = None) -> Path:
    """A two-structure label map (liver 1, aorta 2) with an optional sidecar."""
    array = np.zeros((6, 10, 12), dtype=np.uint8)
    array[1:4, 2:6, 2:6] = 1
    array[2:5, 6:9, 7:10] = 2
    path = write_image(folder / name, array)
    if sidecar is not None:
        stem = name.removesuffix(".nii.gz").removesuffix(".nrrd")
        (folder / f"{stem}.labels.json").write_text(json.dumps(sidecar))
    return path


def mask_folder(folder: Path, n: int = 3) -> list[Path]:
    """A TotalSegmentator-style folder: one uint8 mask per structure, same grid."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["liver", "aorta", "spleen", "kidney_left"][:n]
    paths = []
    for k, name in enumerate(names):
        array = np.zeros((6, 10, 12), dtype=np.uint8)
        array[k: k + 3, 2:8, 2:9] = 1
        paths.append(write_image(folder / f"{name}.nii.gz", array))
    return paths
