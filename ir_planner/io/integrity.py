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

import math
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ir_planner.core.errors import ImageReadError

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

#: Upper bound of any single dimension (a CT has a few thousand at most).
MAX_DIM = 1 << 16


def memory_budget_bytes() -> int:
    """The largest single image array a reader may allocate, in bytes.

    ``IR_PLANNER_MEMORY_BUDGET_MB`` if set; otherwise half of the physical memory
    and at most a third of the address-space limit (``ulimit -v``), whichever is
    smaller.
    """
    env = os.environ.get("IR_PLANNER_MEMORY_BUDGET_MB")
    if env:
        try:
            return max(1, int(float(env) * 2**20))
        except ValueError:
            pass
    budget = 8 * 2**30
    try:
        budget = int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            budget = min(budget, soft // 3)
    except (ImportError, OSError, ValueError):
        pass
    return budget


def check_allocation(source: str | Path, nbytes: int, what: str = "image") -> None:
    """Refuse an allocation of ``nbytes`` above :func:`memory_budget_bytes`.

    Raises
    ------
    ImageReadError
        Naming ``source``, the size and the budget.
    """
    budget = memory_budget_bytes()
    if nbytes > budget:
        raise ImageReadError(
            f"{source}: the {what} would need {nbytes / 2**30:.2f} GiB of memory, more than the "
            f"budget of {budget / 2**30:.2f} GiB (IR_PLANNER_MEMORY_BUDGET_MB); the header is "
            "damaged or the image is too large for this machine"
        )


@dataclass
class HeaderCheck:
    """What the integrity check learnt about a file.

    Attributes
    ----------
    size : tuple of int
        Declared dimensions (i, j, k, ...).
    data_bytes : int
        Declared size of the voxel data in bytes.
    warnings : list of str
        Things repaired or worth knowing (each names the file).
    files : list of Path
        Every file read (header and data files).
    """

    size: tuple[int, ...]
    data_bytes: int
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


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


# -- gzip -----------------------------------------------------------------------------------

_PIECE = 1 << 20


def gzip_pieces(p: Path, *, limit: int | None = None) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file in pieces of at most 1 MiB.

    Verifies the stream to its end (CRC-32 and length trailer); concatenated
    members are followed.

    Raises
    ------
    ImageReadError
        Corrupt or truncated stream, or more than ``limit`` bytes of output (a
        "gzip bomb"), naming the file.
    """
    total = 0
    with open(p, "rb") as fh:
        inflater = zlib.decompressobj(31)
        while True:
            chunk = fh.read(_PIECE)
            if not chunk:
                if not inflater.eof:
                    raise ImageReadError(
                        f"{p}: gzip data is truncated (the file ends before the end of the "
                        "compressed stream); the file is damaged or incompletely copied"
                    )
                return
            data = chunk
            while data:
                try:
                    out = inflater.decompress(data, _PIECE)
                except zlib.error as exc:
                    raise ImageReadError(
                        f"{p}: gzip data is corrupt ({exc}); the file is damaged"
                    ) from exc
                total += len(out)
                if limit is not None and total > limit:
                    raise ImageReadError(
                        f"{p}: decompresses to more than {limit} bytes, more than its header "
                        "declares (a damaged file or a decompression bomb)"
                    )
                if out:
                    yield out
                data = inflater.unconsumed_tail
                if inflater.eof:
                    rest = inflater.unused_data + data
                    data = b""
                    if rest.strip(b"\0"):
                        if rest[:2] != b"\x1f\x8b":
                            raise ImageReadError(f"{p}: trailing bytes after the gzip data")
                        inflater = zlib.decompressobj(31)
                        data = rest
                    else:
                        # only padding after the stream: read what remains of the file
                        rest_file = fh.read()
                        if rest_file.strip(b"\0"):
                            raise ImageReadError(f"{p}: trailing bytes after the gzip data")
                        return


# -- NIfTI-1 --------------------------------------------------------------------------------

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


def _finite(values: tuple[float, ...] | list[float]) -> bool:
    return all(math.isfinite(v) for v in values)


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
        if not _finite(srow):
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
        if not _finite(quatern):
            raise ImageReadError(
                f"{p}: NIfTI qform (quatern_b/c/d, qoffset_x/y/z) has NaN or infinite values"
            )
        b, c, d = quatern[:3]
        if b * b + c * c + d * d > 1.0 + 1e-4:
            raise ImageReadError(
                f"{p}: NIfTI qform quaternion (b, c, d) = ({b:g}, {c:g}, {d:g}) has norm > 1; "
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


# -- NRRD -----------------------------------------------------------------------------------

_NRRD_TYPES: dict[str, int] = {
    "signed char": 1, "int8": 1, "int8_t": 1, "uchar": 1, "unsigned char": 1, "uint8": 1,
    "uint8_t": 1, "short": 2, "short int": 2, "signed short": 2, "signed short int": 2,
    "int16": 2, "int16_t": 2, "ushort": 2, "unsigned short": 2, "unsigned short int": 2,
    "uint16": 2, "uint16_t": 2, "int": 4, "signed int": 4, "int32": 4, "int32_t": 4,
    "uint": 4, "unsigned int": 4, "uint32": 4, "uint32_t": 4, "longlong": 8,
    "long long": 8, "long long int": 8, "signed long long": 8, "signed long long int": 8,
    "int64": 8, "int64_t": 8, "ulonglong": 8, "unsigned long long": 8,
    "unsigned long long int": 8, "uint64": 8, "uint64_t": 8, "float": 4, "double": 8,
}

_MAX_HEADER = 1 << 20


def _text_header(p: Path, *, end_at_blank: bool) -> tuple[list[str], int]:
    """Header lines and the byte offset after the header (NRRD: the blank line)."""
    with open(p, "rb") as fh:
        raw = fh.read(_MAX_HEADER)
    lines: list[str] = []
    pos = 0
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        if nl < 0:
            if end_at_blank and len(raw) >= _MAX_HEADER:
                raise ImageReadError(f"{p}: header longer than {_MAX_HEADER} bytes")
            line_bytes = raw[pos:]
            pos = len(raw)
        else:
            line_bytes = raw[pos:nl]
            pos = nl + 1
        line = line_bytes.rstrip(b"\r").decode("latin-1")
        if end_at_blank and not line.strip():
            return lines, pos
        lines.append(line)
        if not end_at_blank and line.split("=")[0].strip() == "ElementDataFile":
            return lines, pos
    return lines, pos


def _floats(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"[-+]?(?:nan|inf(?:inity)?|[\d.]+(?:e[-+]?\d+)?)",
                                         text, flags=re.I)]


def _data_file(p: Path, name: str, field_name: str) -> Path:
    """The data file named in a header; only files beside (or below) the header."""
    name = name.strip()
    if not name:
        raise ImageReadError(f"{p}: empty {field_name}")
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise ImageReadError(
            f"{p}: {field_name} {name!r} points outside the header's folder; only data files "
            "beside the header are read (copy the data next to it)"
        )
    target = (p.parent / candidate)
    real = os.path.realpath(target)
    folder = os.path.realpath(p.parent)
    if os.path.commonpath([real, folder]) != folder:
        raise ImageReadError(
            f"{p}: {field_name} {name!r} resolves outside the header's folder (symbolic link); "
            "refused"
        )
    return target


def _check_geometry_numbers(p: Path, what: str, values: list[float], n: int) -> None:
    if len(values) < n or not _finite(values):
        raise ImageReadError(f"{p}: {what} must hold {n} finite numbers; got {values}")


def check_nrrd(path: str | Path) -> HeaderCheck:
    """Check an NRRD header (``.nrrd`` attached or ``.nhdr`` detached) and its data size.

    Refused: sizes ≤ 0 or above 65536, unknown type, spacings or space
    directions that are 0/NaN/infinite or singular, a non-finite space origin,
    a data file outside the header's folder (absolute path, ``..``, symbolic link),
    ``LIST`` / multiple data files, raw data shorter than declared, a gzip
    stream that is truncated or corrupt, and a declared size above the memory budget.
    """
    p = Path(path)
    lines, data_pos = _text_header(p, end_at_blank=True)
    if not lines or not lines[0].startswith("NRRD000"):
        raise ImageReadError(f"{p}: not an NRRD file (no NRRD000x magic line)")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("#") or ":=" in line.split(":")[0:1][0]:
            continue
        if ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
    try:
        dimension = int(fields.get("dimension", "0"))
        sizes = [int(v) for v in fields.get("sizes", "").split()]
    except ValueError as exc:
        raise ImageReadError(f"{p}: NRRD dimension/sizes are not integers") from exc
    if dimension < 1 or len(sizes) != dimension:
        raise ImageReadError(f"{p}: NRRD sizes {sizes} do not match dimension {dimension}")
    for n, s in enumerate(sizes):
        if s <= 0 or s > MAX_DIM:
            raise ImageReadError(f"{p}: NRRD sizes[{n}] = {s}; must be 1 to {MAX_DIM}")
    type_name = fields.get("type", "").lower()
    if type_name not in _NRRD_TYPES:
        raise ImageReadError(f"{p}: NRRD type {type_name!r} is not supported")
    itemsize = _NRRD_TYPES[type_name]
    if "spacings" in fields:
        sp = [v for v in _floats(fields["spacings"])]
        spatial = [v for v in sp if not math.isnan(v)] if len(sp) > 3 else sp
        if not _finite(spatial) or any(v == 0 for v in spatial):
            raise ImageReadError(f"{p}: NRRD spacings {fields['spacings']!r} must be finite and ≠ 0")
    if "space directions" in fields:
        vectors = re.findall(r"\(([^)]*)\)", fields["space directions"])
        mat = [_floats(v) for v in vectors]
        if len(mat) >= 3 and all(len(r) >= 3 for r in mat[:3]):
            for n, row in enumerate(mat):
                _check_geometry_numbers(p, f"NRRD space directions vector {n}", row, len(row) or 1)
            a, b, c = mat[0][:3], mat[1][:3], mat[2][:3]
            det = (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
                   + a[2] * (b[0] * c[1] - b[1] * c[0]))
            if abs(det) < 1e-9:
                raise ImageReadError(
                    f"{p}: NRRD space directions are singular (a zero-length or repeated axis)"
                )
    if "space origin" in fields:
        origin = _floats(fields["space origin"])
        _check_geometry_numbers(p, "NRRD space origin", origin, max(1, min(3, len(origin))))
    count = 1
    for s in sizes:
        count *= s
    data_bytes = count * itemsize
    check_allocation(p, count * max(itemsize, 4) * 2, "image")
    encoding = fields.get("encoding", "raw").lower()
    files = [p]
    data_name = fields.get("data file", fields.get("datafile"))
    skip = 0
    try:
        skip = int(fields.get("byte skip", fields.get("byteskip", "0")))
    except ValueError as exc:
        raise ImageReadError(f"{p}: NRRD byte skip is not an integer") from exc
    if data_name is not None:
        if data_name.upper().startswith("LIST") or len(data_name.split()) > 1:
            raise ImageReadError(f"{p}: NRRD data file lists ({data_name!r}) are not supported")
        data_path = _data_file(p, data_name, "NRRD data file")
        if not data_path.is_file():
            raise ImageReadError(f"{p}: NRRD data file {data_path} does not exist")
        files.append(data_path)
        start = 0
    else:
        data_path, start = p, data_pos
    if encoding in ("raw",):
        present = data_path.stat().st_size - start - max(skip, 0)
        if skip == -1:
            present = data_path.stat().st_size - start
        if present < data_bytes:
            raise ImageReadError(
                f"{data_path}: truncated: the NRRD header declares {data_bytes} bytes of "
                f"voxel data but only {max(present, 0)} are present"
            )
    elif encoding in ("gzip", "gz"):
        total = 0
        if start:
            total = _inflate_from(data_path, start, data_bytes + (1 << 20))
        else:
            for piece in gzip_pieces(data_path, limit=data_bytes + (1 << 20)):
                total += len(piece)
        if total < data_bytes:
            raise ImageReadError(
                f"{data_path}: truncated: the NRRD header declares {data_bytes} bytes of "
                f"voxel data but the gzip data holds {total}"
            )
    elif encoding in ("ascii", "text", "txt", "hex", "bz2", "bzip2"):
        pass  # the decoder checks these (rare in practice)
    else:
        raise ImageReadError(f"{p}: NRRD encoding {encoding!r} is not supported")
    return HeaderCheck(tuple(sizes), data_bytes, [], files)


def _inflate_from(p: Path, start: int, limit: int) -> int:
    """Decompressed size of the gzip stream starting at byte ``start`` (verified)."""
    total = 0
    with open(p, "rb") as fh:
        fh.seek(start)
        inflater = zlib.decompressobj(31)
        while True:
            chunk = fh.read(_PIECE)
            if not chunk:
                if not inflater.eof:
                    raise ImageReadError(f"{p}: gzip data is truncated; the file is damaged")
                return total
            data = chunk
            while data and not inflater.eof:
                try:
                    out = inflater.decompress(data, _PIECE)
                except zlib.error as exc:
                    raise ImageReadError(f"{p}: gzip data is corrupt ({exc})") from exc
                total += len(out)
                if total > limit:
                    raise ImageReadError(
                        f"{p}: decompresses to more data than the header declares "
                        "(a damaged file or a decompression bomb)"
                    )
                data = inflater.unconsumed_tail
            if inflater.eof:
                return total


# -- MetaImage ------------------------------------------------------------------------------

_MET_TYPES: dict[str, int] = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
    "MET_UINT": 4, "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


def check_metaimage(path: str | Path) -> HeaderCheck:
    """Check a MetaImage header (``.mha`` / ``.mhd``) and its data size.

    Refused: ``DimSize`` ≤ 0 or above 65536, an unknown ``ElementType``,
    ``ElementSpacing`` 0/negative/NaN, a NaN or singular ``TransformMatrix``,
    a non-finite ``Offset``, a data file outside the header's folder or a
    ``LIST`` of files, uncompressed data shorter than declared, a corrupt or
    truncated compressed stream, a declared size above the memory budget.
    """
    p = Path(path)
    lines, data_pos = _text_header(p, end_at_blank=False)
    fields: dict[str, str] = {}
    for line in lines:
        if "=" in line:
            key, _, value = line.partition("=")
            fields[key.strip()] = value.strip()
    if "ElementDataFile" not in fields or "DimSize" not in fields:
        raise ImageReadError(f"{p}: not a MetaImage header (no DimSize/ElementDataFile)")
    try:
        sizes = [int(v) for v in fields["DimSize"].split()]
    except ValueError as exc:
        raise ImageReadError(f"{p}: MetaImage DimSize {fields['DimSize']!r} is not integers") from exc
    for n, s in enumerate(sizes):
        if s <= 0 or s > MAX_DIM:
            raise ImageReadError(f"{p}: MetaImage DimSize[{n}] = {s}; must be 1 to {MAX_DIM}")
    etype = fields.get("ElementType", "")
    if etype not in _MET_TYPES:
        raise ImageReadError(f"{p}: MetaImage ElementType {etype!r} is not supported")
    try:
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError as exc:
        raise ImageReadError(f"{p}: MetaImage ElementNumberOfChannels is not an integer") from exc
    for key in ("ElementSpacing", "ElementSize"):
        if key in fields:
            sp = _floats(fields[key])
            if not _finite(sp) or any(v <= 0 for v in sp):
                raise ImageReadError(
                    f"{p}: MetaImage {key} {fields[key]!r} must be finite numbers > 0 mm"
                )
    for key in ("Offset", "Position", "Origin"):
        if key in fields and not _finite(_floats(fields[key])):
            raise ImageReadError(f"{p}: MetaImage {key} {fields[key]!r} must be finite")
    for key in ("TransformMatrix", "Rotation", "Orientation"):
        if key in fields:
            m = _floats(fields[key])
            if not _finite(m):
                raise ImageReadError(f"{p}: MetaImage {key} has NaN or infinite values")
            if len(m) == 9:
                a, b, c = m[0:3], m[3:6], m[6:9]
                det = (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
                       + a[2] * (b[0] * c[1] - b[1] * c[0]))
                if abs(det) < 1e-6:
                    raise ImageReadError(f"{p}: MetaImage {key} is singular")
    count = channels
    for s in sizes:
        count *= s
    data_bytes = count * _MET_TYPES[etype]
    check_allocation(p, count * max(_MET_TYPES[etype], 4) * 2, "image")
    name = fields["ElementDataFile"]
    files = [p]
    if name.upper() == "LOCAL":
        data_path, start = p, data_pos
    else:
        if name.upper().startswith("LIST") or "%" in name or len(name.split()) > 1:
            raise ImageReadError(f"{p}: MetaImage ElementDataFile {name!r} (file lists) not supported")
        data_path, start = _data_file(p, name, "MetaImage ElementDataFile"), 0
        if not data_path.is_file():
            raise ImageReadError(f"{p}: MetaImage data file {data_path} does not exist")
        files.append(data_path)
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if compressed:
        total = _inflate_zlib(data_path, start, data_bytes + (1 << 20))
        if total < data_bytes:
            raise ImageReadError(
                f"{data_path}: truncated: MetaImage header declares {data_bytes} bytes of voxel "
                f"data but the compressed data holds {total}"
            )
    else:
        present = data_path.stat().st_size - start
        if present < data_bytes:
            raise ImageReadError(
                f"{data_path}: truncated: the MetaImage header declares {data_bytes} bytes of "
                f"voxel data but only {max(present, 0)} are present"
            )
    return HeaderCheck(tuple(sizes), data_bytes, [], files)


def _inflate_zlib(p: Path, start: int, limit: int) -> int:
    total = 0
    with open(p, "rb") as fh:
        fh.seek(start)
        inflater = zlib.decompressobj(47)  # zlib or gzip header
        while True:
            chunk = fh.read(_PIECE)
            if not chunk:
                if not inflater.eof:
                    raise ImageReadError(f"{p}: compressed data is truncated; the file is damaged")
                return total
            data = chunk
            while data and not inflater.eof:
                try:
                    out = inflater.decompress(data, _PIECE)
                except zlib.error as exc:
                    raise ImageReadError(f"{p}: compressed data is corrupt ({exc})") from exc
                total += len(out)
                if total > limit:
                    raise ImageReadError(
                        f"{p}: decompresses to more data than the header declares "
                        "(a damaged file or a decompression bomb)"
                    )
                data = inflater.unconsumed_tail
            if inflater.eof:
                return total
