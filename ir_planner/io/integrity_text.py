"""Integrity checks of NRRD (``.nrrd``/``.nhdr``) and MetaImage (``.mha``/``.mhd``) files."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from ir_planner.core.errors import ImageReadError
from ir_planner.io.integrity_base import (
    MAX_DIM,
    HeaderCheck,
    check_allocation,
    finite,
    gzip_pieces,
    inflate_size,
)

__all__ = ["check_nrrd", "check_metaimage"]

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
    if len(values) < n or not finite(values):
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
        if not finite(spatial) or any(v == 0 for v in spatial):
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
            total = inflate_size(data_path, start, data_bytes + (1 << 20))
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
            if not finite(sp) or any(v <= 0 for v in sp):
                raise ImageReadError(
                    f"{p}: MetaImage {key} {fields[key]!r} must be finite numbers > 0 mm"
                )
    for key in ("Offset", "Position", "Origin"):
        if key in fields and not finite(_floats(fields[key])):
            raise ImageReadError(f"{p}: MetaImage {key} {fields[key]!r} must be finite")
    for key in ("TransformMatrix", "Rotation", "Orientation"):
        if key in fields:
            m = _floats(fields[key])
            if not finite(m):
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
        total = inflate_size(data_path, start, data_bytes + (1 << 20), wbits=47)
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
