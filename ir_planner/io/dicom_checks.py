"""Integrity checks of DICOM files and series before their pixels are read.

* :func:`truncation_problem` walks a file's data elements (file meta, then the
  data set in its transfer syntax, into sequences and encapsulated pixel data)
  and says where the file ends inside an element: a file cut inside its header
  is *damaged*, not "not DICOM".
* :func:`check_series_files` compares the pixel bytes each file of a series must
  hold (Rows × Columns × frames × bytes per value) with the bytes present, and
  the whole stack with the memory budget, **before** anything is allocated.
* :func:`check_rescale` refuses RescaleSlope/RescaleIntercept that are not finite,
  zero, or so large that the values overflow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.uid import UID

from ir_planner.core.errors import ImageReadError
from ir_planner.io.dicom_scan import VOLUME_SOP_CLASSES
from ir_planner.io.integrity import check_allocation

__all__ = [
    "truncation_problem", "check_series_files", "check_rescale", "looks_like_dicom_file",
    "meta_sop_class",
]

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_SERIES_UID = 0x0020000E
_MAX_DEPTH = 32


class _Truncated(Exception):
    pass


class _Unsure(Exception):
    pass


def looks_like_dicom_file(path: Path) -> bool:
    """Whether ``path`` has the Part-10 ``DICM`` marker at byte 128."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _tag_at(data: bytes, pos: int, little: bool) -> int:
    order: Literal["little", "big"] = "little" if little else "big"
    group = int.from_bytes(data[pos:pos + 2], order)
    elem = int.from_bytes(data[pos + 2:pos + 4], order)
    return (group << 16) | elem


def _walk(data: bytes, pos: int, end: int, implicit: bool, little: bool, depth: int,
          seen: set[int] | None = None) -> int:
    """Walk elements from ``pos`` up to ``end`` (or a delimiter); returns the position after.

    ``seen`` collects the top-level tags (depth 0 only).
    """
    if depth > _MAX_DEPTH:
        raise _Unsure("nesting too deep")
    order: Literal["little", "big"] = "little" if little else "big"
    while pos < end:
        if pos + 8 > len(data):
            raise _Truncated(f"file ends inside the tag at byte {pos}")
        tag = _tag_at(data, pos, little)
        if tag in (_ITEM_END, _SEQ_END):
            return pos + 8
        if tag == _ITEM:
            raise _Unsure("item outside a sequence")
        if seen is not None:
            seen.add(tag)
        if implicit or (tag >> 16) == 0xFFFE:
            length = int.from_bytes(data[pos + 4:pos + 8], order)
            header = 8
            vr = b""
        else:
            vr = data[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                if pos + 12 > len(data):
                    raise _Truncated(f"file ends inside element ({tag >> 16:04X},{tag & 0xFFFF:04X})")
                length = int.from_bytes(data[pos + 8:pos + 12], order)
                header = 12
            elif vr.isalpha() and vr.isupper():
                length = int.from_bytes(data[pos + 6:pos + 8], order)
                header = 8
            else:
                raise _Unsure(f"unexpected VR {vr!r}")
        start = pos + header
        name = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if length == _UNDEFINED:
            # sequence or encapsulated pixel data: items until the sequence delimiter
            pos = _walk_items(data, start, implicit, little, depth + 1, name)
            continue
        if start + length > len(data):
            raise _Truncated(
                f"file ends inside element {name} ({length} bytes declared, "
                f"{max(len(data) - start, 0)} present)"
            )
        if vr == b"SQ" and length:
            _walk_defined_items(data, start, start + length, implicit, little, depth + 1, name)
        pos = start + length
    return pos


def _walk_items(data: bytes, pos: int, implicit: bool, little: bool, depth: int, name: str) -> int:
    order: Literal["little", "big"] = "little" if little else "big"
    while True:
        if pos + 8 > len(data):
            raise _Truncated(f"file ends inside sequence {name} (no sequence delimiter)")
        tag = _tag_at(data, pos, little)
        length = int.from_bytes(data[pos + 4:pos + 8], order)
        if tag == _SEQ_END:
            return pos + 8
        if tag != _ITEM:
            raise _Unsure(f"unexpected tag in sequence {name}")
        start = pos + 8
        if length == _UNDEFINED:
            pos = _walk(data, start, len(data) + 1, implicit, little, depth)
            continue
        if start + length > len(data):
            raise _Truncated(f"file ends inside an item of {name}")
        pos = start + length


def _walk_defined_items(
    data: bytes, pos: int, end: int, implicit: bool, little: bool, depth: int, name: str
) -> None:
    order: Literal["little", "big"] = "little" if little else "big"
    while pos < end:
        if pos + 8 > len(data):
            raise _Truncated(f"file ends inside sequence {name}")
        tag = _tag_at(data, pos, little)
        length = int.from_bytes(data[pos + 4:pos + 8], order)
        if tag != _ITEM:
            raise _Unsure(f"unexpected tag in sequence {name}")
        start = pos + 8
        if length == _UNDEFINED:
            pos = _walk(data, start, end, implicit, little, depth)
        else:
            if start + length > len(data):
                raise _Truncated(f"file ends inside an item of {name}")
            _walk(data, start, start + length, implicit, little, depth)
            pos = start + length


def meta_sop_class(path: Path) -> str:
    """MediaStorageSOPClassUID from a Part-10 file's meta information ("" if none)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(4096)
    except OSError:
        return ""
    if len(data) < 132 or data[128:132] != b"DICM":
        return ""
    pos = 132
    while pos + 8 <= len(data) and int.from_bytes(data[pos:pos + 2], "little") == 0x0002:
        vr = data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            length = int.from_bytes(data[pos + 8:pos + 12], "little")
            start = pos + 12
        else:
            length = int.from_bytes(data[pos + 6:pos + 8], "little")
            start = pos + 8
        if int.from_bytes(data[pos + 2:pos + 4], "little") == 0x0002:
            return data[start:start + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = start + length
    return ""


def truncation_problem(path: Path) -> str:
    """Where a DICOM file ends inside a data element ("" if it is complete or unsure).

    Also reports a CT/MR/PET image object (by its file meta SOP class) that has no
    pixel data or no SeriesInstanceUID: a damaged slice, not "another kind of file".

    Only Part-10 files (``DICM`` marker) are walked; deflated transfer syntaxes
    and anything the walker does not understand give "" (no claim).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    if len(data) < 132 or data[128:132] != b"DICM":
        return ""
    try:
        # file meta: explicit VR little endian, group 0002
        pos = 132
        ts = ""
        sop_class = ""
        while pos + 8 <= len(data) and int.from_bytes(data[pos:pos + 2], "little") == 0x0002:
            vr = data[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                if pos + 12 > len(data):
                    raise _Truncated("file ends inside the file meta information")
                length = int.from_bytes(data[pos + 8:pos + 12], "little")
                start = pos + 12
            else:
                length = int.from_bytes(data[pos + 6:pos + 8], "little")
                start = pos + 8
            if start + length > len(data):
                raise _Truncated("file ends inside the file meta information")
            element = int.from_bytes(data[pos + 2:pos + 4], "little")
            value = data[start:start + length].rstrip(b"\0 ").decode("ascii", "replace")
            if element == 0x0010:
                ts = value
            elif element == 0x0002:
                sop_class = value
            pos = start + length
        if pos >= len(data):
            return "file ends after the file meta information (no data set)"
        if ts == "1.2.840.10008.1.2.1.99":
            return ""  # deflated: not walked
        implicit = ts == "1.2.840.10008.1.2"
        little = ts != "1.2.840.10008.1.2.2"
        seen: set[int] = set()
        _walk(data, pos, len(data), implicit, little, 0, seen)
        if sop_class in VOLUME_SOP_CLASSES and _PIXEL_DATA not in seen:
            return (f"incomplete: a {UID(sop_class).name} object that ends before its pixel "
                    "data")
        if sop_class in VOLUME_SOP_CLASSES and _SERIES_UID not in seen:
            return (f"damaged: a {UID(sop_class).name} object without SeriesInstanceUID "
                    "(0020,000E)")
    except _Truncated as exc:
        return f"truncated: {exc}"
    except _Unsure:
        return ""
    return ""


def check_rescale(path: Path, slope: float, intercept: float) -> None:
    """Refuse a RescaleSlope/RescaleIntercept that is not finite, zero or absurd.

    Raises
    ------
    ImageReadError
        Naming the file and the attribute.
    """
    if not math.isfinite(slope) or slope == 0 or abs(slope) > 1e12:
        raise ImageReadError(
            f"{path}: RescaleSlope (0028,1053) is {slope!r}; it must be a finite, non-zero "
            "number of sensible size (the stored values cannot be converted)"
        )
    if not math.isfinite(intercept) or abs(intercept) > 1e12:
        raise ImageReadError(
            f"{path}: RescaleIntercept (0028,1052) is {intercept!r}; it must be finite and "
            "of sensible size"
        )


def check_series_files(
    files: Iterable[tuple[Path, int | None, int, int, int, np.dtype]],
    *,
    n_frames_total: int,
    rows: int,
    cols: int,
    out_shape: tuple[int, int, int],
    stack_itemsize: int,
    label: str,
) -> None:
    """Declared pixel bytes against bytes present, and the stack against the budget.

    Parameters
    ----------
    files : iterable of (path, pixel_offset, n_frames, rows, cols, dtype)
        Native (uncompressed) files give the offset of their pixel values;
        compressed ones give None (their decoder checks the length).
    n_frames_total, rows, cols : int
        The stack to allocate (frames × rows × cols).
    out_shape : tuple of int
        The output grid (slices, rows, columns) after resampling.
    stack_itemsize : int
        Bytes per stacked value.
    label : str
        The series, for messages.

    Raises
    ------
    ImageReadError
        A file holds fewer pixel bytes than its header declares (names it), or
        the volume exceeds the memory budget.
    """
    stack_bytes = n_frames_total * rows * cols * stack_itemsize
    out_bytes = out_shape[0] * out_shape[1] * out_shape[2] * 4
    total = stack_bytes + (out_bytes if out_shape != (n_frames_total, rows, cols) else 0)
    if total > 0:
        try:
            check_allocation(label, total, "volume")
        except ImageReadError as exc:
            raise ImageReadError(
                f"{exc} ({n_frames_total} frames of {cols}×{rows} read onto a "
                f"{out_shape[2]}×{out_shape[1]}×{out_shape[0]} grid)"
            ) from None
    for path, offset, n_frames, f_rows, f_cols, dtype in files:
        if offset is None:
            continue
        need = n_frames * f_rows * f_cols * np.dtype(dtype).itemsize
        try:
            present = path.stat().st_size - offset
            with open(path, "rb") as fh:  # the element's length precedes its value
                fh.seek(max(offset - 4, 0))
                declared = int.from_bytes(fh.read(4), "little")
        except OSError as exc:
            raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        if declared > need + 1 and offset >= 4:
            raise ImageReadError(
                f"{path}: PixelData holds {declared} bytes but Rows × Columns × frames "
                f"({f_rows} × {f_cols} × {n_frames}) needs {need}: Rows, Columns or "
                "BitsAllocated is damaged (the image would be read scrambled)"
            )
        if present < need:
            raise ImageReadError(
                f"{path}: pixel data truncated: Rows × Columns × frames ({f_rows} × {f_cols} × "
                f"{n_frames}) needs {need} bytes but only {max(present, 0)} are present; the "
                "file is damaged or incompletely copied"
            )
