"""Integrity check of NIfTI-1 (and NIfTI-2) files before they are decoded."""

from __future__ import annotations

import math
import struct
from pathlib import Path

from ir_planner.core.errors import ImageReadError
from ir_planner.io.integrity_base import (
    MAX_DIM,
    HeaderCheck,
    check_allocation,
    finite,
    gzip_pieces,
)

__all__ = ["check_nifti"]


#: datatype code -> (bytes per voxel, name); None = refused.
_NIFTI_TYPES: dict[int, tuple[int, str]] = {
    2: (1, "uint8"), 4: (2, "int16"), 8: (4, "int32"), 16: (4, "float32"),
    64: (8, "float64"), 256: (1, "int8"), 512: (2, "uint16"), 768: (4, "uint32"),
    1024: (8, "int64"), 1280: (8, "uint64"), 1: (0, "binary"),
}
_NIFTI_REFUSED = {
    32: "complex64", 1792: "complex128", 2048: "complex256", 128: "RGB", 2304: "RGBA",
    1536: "float128", 0: "unknown (0)",
}


def check_nifti(path: str | Path) -> HeaderCheck:
    """Check a NIfTI-1 file (``.nii`` / ``.nii.gz``; ``.hdr``/``.img`` pairs are not read).

    Refused (``ImageReadError`` naming the file and field): a header that is not
    NIfTI-1 (or NIfTI-2, whose data size alone is checked), dimensions ≤ 0 or above
    65536, complex/RGB/float128 voxels, ``pixdim`` of a spatial axis that is 0,
    negative, NaN or infinite, a NaN/infinite/singular sform or qform, both
    ``qform_code`` and ``sform_code`` 0 (no patient position stored), a
    ``vox_offset`` below 352 or beyond the data, a non-finite ``scl_slope`` /
    ``scl_inter`` or one that overflows float32, fewer data bytes than the header
    declares (truncation, also of a gzip stream: CRC and length are verified), and
    a declared size above the memory budget.
    """
    p = Path(path)
    gz = p.name.lower().endswith(".gz")
    if gz:
        with open(p, "rb") as fh:
            magic = fh.read(2)
        if magic != b"\x1f\x8b":
            raise ImageReadError(f"{p}: named .gz but not gzip-compressed")
        # the header first (cheap), then the whole stream bounded by the declared size
        head = b""
        try:
            for piece in gzip_pieces(p):
                head += piece
                if len(head) >= 540:
                    break
        except ImageReadError:
            if len(head) < 348:
                raise
    else:
        with open(p, "rb") as fh:
            head = fh.read(540)
    if len(head) < 348:
        raise ImageReadError(
            f"{p}: file ends inside the NIfTI header ({len(head)} of 348 bytes); truncated"
        )
    for endian in ("<", ">"):
        sizeof_hdr = struct.unpack(endian + "i", head[:4])[0]
        if sizeof_hdr in (348, 540):
            break
    else:
        raise ImageReadError(f"{p}: not a NIfTI file (sizeof_hdr is not 348 or 540)")
    if sizeof_hdr == 540:
        return _check_nifti2(p, head, endian, gz)
    magic_field = head[344:348]
    if magic_field not in (b"n+1\0", b"ni1\0"):
        raise ImageReadError(f"{p}: NIfTI header has no 'n+1' magic (an old Analyze file?)")
    if magic_field == b"ni1\0":
        raise ImageReadError(f"{p}: a NIfTI header-only file (.hdr/.img pair) is not supported")
    dim = struct.unpack(endian + "8h", head[40:56])
    datatype = struct.unpack(endian + "h", head[70:72])[0]
    pixdim = struct.unpack(endian + "8f", head[76:108])
    vox_offset_f = struct.unpack(endian + "f", head[108:112])[0]
    slope, inter = struct.unpack(endian + "2f", head[112:120])
    qform_code, sform_code = struct.unpack(endian + "2h", head[252:256])
    quatern = struct.unpack(endian + "6f", head[256:280])
    srow = struct.unpack(endian + "12f", head[280:328])
    return _check_nifti_fields(
        p, gz, dim=list(dim), datatype=datatype, pixdim=list(pixdim), vox_offset=vox_offset_f,
        slope=slope, inter=inter, qform_code=qform_code, sform_code=sform_code,
        quatern=list(quatern), srow=list(srow), header_bytes=348,
    )


def _check_nifti2(p: Path, head: bytes, endian: str, gz: bool) -> HeaderCheck:
    if len(head) < 540:
        raise ImageReadError(f"{p}: file ends inside the NIfTI-2 header; truncated")
    datatype = struct.unpack(endian + "h", head[12:14])[0]
    dim = struct.unpack(endian + "8q", head[16:80])
    pixdim = struct.unpack(endian + "8d", head[104:168])
    vox_offset = struct.unpack(endian + "q", head[168:176])[0]
    slope, inter = struct.unpack(endian + "2d", head[176:192])
    qform_code, sform_code = struct.unpack(endian + "2i", head[344:352])
    quatern = struct.unpack(endian + "6d", head[352:400])
    srow = struct.unpack(endian + "12d", head[400:496])
    return _check_nifti_fields(
        p, gz, dim=list(dim), datatype=datatype, pixdim=list(pixdim), vox_offset=float(vox_offset),
        slope=slope, inter=inter, qform_code=qform_code, sform_code=sform_code,
        quatern=list(quatern), srow=list(srow), header_bytes=540,
    )


def _check_nifti_fields(
    p: Path, gz: bool, *, dim: list[int], datatype: int, pixdim: list[float],
    vox_offset: float, slope: float, inter: float, qform_code: int, sform_code: int,
    quatern: list[float], srow: list[float], header_bytes: int,
) -> HeaderCheck:
    warnings: list[str] = []
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise ImageReadError(f"{p}: NIfTI dim[0] = {ndim}; must be 1 to 7")
    sizes = [int(d) for d in dim[1: ndim + 1]]
    for n, d in enumerate(sizes, 1):
        if d <= 0 or d > MAX_DIM:
            raise ImageReadError(f"{p}: NIfTI dim[{n}] = {d}; must be 1 to {MAX_DIM}")
    if datatype in _NIFTI_REFUSED:
        raise ImageReadError(
            f"{p}: NIfTI datatype {datatype} ({_NIFTI_REFUSED[datatype]} voxels) is not "
            "supported: planning needs real scalar intensities or integer labels"
        )
    if datatype not in _NIFTI_TYPES or datatype == 1:
        raise ImageReadError(f"{p}: NIfTI datatype {datatype} is not supported")
    itemsize = _NIFTI_TYPES[datatype][0]
    for n in range(1, min(ndim, 3) + 1):
        v = pixdim[n]
        if not math.isfinite(v) or v <= 0:
            raise ImageReadError(
                f"{p}: NIfTI pixdim[{n}] (voxel size along axis {n}) is {v!r}; it must be a "
                "finite number > 0 mm. The file's geometry is damaged; no spacing is assumed"
            )
    if qform_code == 0 and sform_code == 0:
        raise ImageReadError(
            f"{p}: NIfTI qform_code and sform_code are both 0: the file stores no patient "
            "position or orientation (reading it would invent them); rewrite it with the "
            "scanner geometry"
        )
    if sform_code > 0:
        if not finite(srow):
            raise ImageReadError(f"{p}: NIfTI sform (srow_x/y/z) has NaN or infinite values")
        m = [srow[0:3], srow[4:7], srow[8:11]]
        det = (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
               - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
               + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))
        if not math.isfinite(det) or abs(det) < 1e-9:
            raise ImageReadError(
                f"{p}: NIfTI sform (srow_x/y/z) is singular (determinant {det:.3g}); the "
                "voxel-to-patient mapping is damaged"
            )
    if qform_code > 0:
        if not finite(quatern):
            raise ImageReadError(
                f"{p}: NIfTI qform (quatern_b/c/d, qoffset_x/y/z) has NaN or infinite values"
            )
        qb, qc, qd = quatern[:3]
        if qb * qb + qc * qc + qd * qd > 1.0 + 1e-4:
            raise ImageReadError(
                f"{p}: NIfTI qform quaternion (b, c, d) = ({qb:g}, {qc:g}, {qd:g}) has norm > 1; "
                "the orientation is damaged"
            )
    if not math.isfinite(pixdim[0]):
        raise ImageReadError(f"{p}: NIfTI pixdim[0] (qfac) is {pixdim[0]!r}")
    if not (math.isfinite(slope) and math.isfinite(inter)):
        raise ImageReadError(
            f"{p}: NIfTI scl_slope / scl_inter is {slope!r} / {inter!r}; must be finite"
        )
    if slope != 0 and (abs(slope) > 1e30 or abs(inter) > 1e30):
        raise ImageReadError(
            f"{p}: NIfTI scl_slope / scl_inter ({slope:g} / {inter:g}) would overflow the "
            "voxel values; the header is damaged"
        )
    if not math.isfinite(vox_offset) or vox_offset < header_bytes or vox_offset != int(vox_offset):
        raise ImageReadError(
            f"{p}: NIfTI vox_offset is {vox_offset!r}; must be a whole number ≥ {header_bytes}"
        )
    offset = int(vox_offset)
    count = 1
    for d in sizes:
        count *= d
    data_bytes = count * itemsize
    # float64 output plus the reader's copy
    check_allocation(p, count * max(itemsize, 4) * 2, "image")
    if gz:
        total = 0
        for piece in gzip_pieces(p, limit=offset + data_bytes + (1 << 20)):
            total += len(piece)
        present = total
    else:
        present = p.stat().st_size
    if offset > present:
        raise ImageReadError(
            f"{p}: NIfTI vox_offset {offset} lies beyond the end of the data ({present} bytes)"
        )
    if present < offset + data_bytes:
        raise ImageReadError(
            f"{p}: truncated: the header declares {data_bytes} bytes of voxel data "
            f"({'×'.join(str(s) for s in sizes)} × {itemsize} bytes) but only "
            f"{present - offset} are present"
        )
    return HeaderCheck(tuple(sizes), data_bytes, warnings, [p])
