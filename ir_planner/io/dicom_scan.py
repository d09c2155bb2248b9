"""Find DICOM files and series, reading headers only.

A folder (or tree) is scanned file by file with ``stop_before_pixels``; every
image frame becomes a :class:`FrameHeader` with its geometry (LPS, mm) and its
rescale, and files are grouped into series by SeriesInstanceUID. Files that are
not DICOM are *skipped* (listed with the reason); files that look like DICOM but
cannot be parsed are *broken* (listed with the reason; reading a series they may
belong to is refused).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ir_planner.core.errors import ImageReadError
from ir_planner.core.progress import ProgressCallback, report

__all__ = [
    "FrameHeader", "FileHeader", "DicomScan", "scan_dicom", "read_file_header",
    "VOLUME_SOP_CLASSES",
]

#: SOP classes read as planning volumes (classic and enhanced CT/MR/PET).
VOLUME_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
}
_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_PIXEL_TAG_LE = b"\xe0\x7f\x10\x00"


@dataclass
class FrameHeader:
    """Geometry and intensity mapping of one image frame (one slice)."""

    path: Path
    frame: int
    position_lps: NDArray[np.float64]
    row_cos: NDArray[np.float64]
    col_cos: NDArray[np.float64]
    row_spacing_mm: float
    col_spacing_mm: float
    rows: int
    cols: int
    slope: float
    intercept: float
    instance_number: int | None = None
    thickness_mm: float | None = None


@dataclass
class FileHeader:
    """What one DICOM file holds (header only)."""

    path: Path
    sop_class: str
    study_uid: str
    series_uid: str
    modality: str
    description: str
    series_number: int | None
    image_type: tuple[str, ...]
    patient_position: str
    frames: list[FrameHeader]
    #: why this file cannot contribute to a volume ("" if it can)
    problem: str = ""
    #: pixel layout: native little-endian offset of the pixel value, else None
    pixel_offset: int | None = None
    pixel_dtype: str = ""
    n_frames: int = 1
    bits_stored: int = 16
    pixel_representation: int = 0
    padding: tuple[int, int] | None = None
    gantry_tilt_deg: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    sop_instance_uid: str = ""

    @property
    def is_localizer(self) -> bool:
        """ImageType says LOCALIZER (scout / topogram)."""
        return "LOCALIZER" in self.image_type


@dataclass
class DicomScan:
    """Result of scanning a file or folder."""

    root: Path
    files: list[FileHeader]
    #: (path, reason) for files that are not DICOM
    skipped: list[tuple[Path, str]]
    #: (path, reason) for files that look like DICOM but cannot be parsed
    broken: list[tuple[Path, str]]


def _float_list(value: Any, n: int) -> NDArray[np.float64] | None:
    try:
        arr = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        return None
    return arr


def _get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    try:
        value = ds.get(keyword, default)
    except _NeedPydicom:
        raise
    except Exception:  # noqa: BLE001 - malformed values are reported as missing
        return default
    return default if value is None else value


#: Elements read for every file, with how to decode their raw bytes quickly.
_FAST: dict[str, tuple[int, str]] = {
    "ImageType": (0x00080008, "strs"),
    "SOPClassUID": (0x00080016, "str"),
    "SOPInstanceUID": (0x00080018, "str"),
    "Modality": (0x00080060, "str"),
    "SliceThickness": (0x00180050, "ds"),
    "GantryDetectorTilt": (0x00181120, "ds"),
    "PatientPosition": (0x00185100, "str"),
    "StudyInstanceUID": (0x0020000D, "str"),
    "SeriesInstanceUID": (0x0020000E, "str"),
    "SeriesNumber": (0x00200011, "is"),
    "InstanceNumber": (0x00200013, "is"),
    "ImagePositionPatient": (0x00200032, "ds"),
    "ImageOrientationPatient": (0x00200037, "ds"),
    "SamplesPerPixel": (0x00280002, "us"),
    "NumberOfFrames": (0x00280008, "is"),
    "Rows": (0x00280010, "us"),
    "Columns": (0x00280011, "us"),
    "PixelSpacing": (0x00280030, "ds"),
    "BitsAllocated": (0x00280100, "us"),
    "BitsStored": (0x00280101, "us"),
    "HighBit": (0x00280102, "us"),
    "PixelRepresentation": (0x00280103, "us"),
    "RescaleIntercept": (0x00281052, "ds"),
    "RescaleSlope": (0x00281053, "ds"),
    "PixelPaddingValue": (0x00280120, "us"),
    "PixelPaddingRangeLimit": (0x00280121, "us"),
}


def _padding_value(ds: Any, keyword: str, pixel_representation: int) -> int | None:
    """PixelPaddingValue-like element (US or SS depending on PixelRepresentation)."""
    value = _int_or_none(_fast_get(ds, keyword))
    if value is not None and pixel_representation == 1 and value >= 32768:
        value -= 65536  # raw bytes decoded as unsigned; the element is SS here
    return value


def _fast_get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """Like :func:`_get`, decoding common little-endian raw elements without pydicom's
    conversion machinery (about 5× faster for a header scan); anything unusual
    falls back to pydicom."""
    spec = _FAST.get(keyword)
    if spec is None:
        return _get(ds, keyword, default)
    tag, kind = spec
    try:
        elem = ds.get_item(tag)
    except _NeedPydicom:
        raise
    except Exception:  # noqa: BLE001
        return _get(ds, keyword, default)
    if elem is None:
        return default
    if not isinstance(elem, RawDataElement) or not elem.is_little_endian:
        return _get(ds, keyword, default)
    raw = elem.value
    if raw is None or len(raw) == 0:
        return default
    try:
        if kind == "us":
            if len(raw) != 2:
                return _get(ds, keyword, default)
            return int.from_bytes(raw, "little")
        text = raw.decode("ascii").strip(" \0")
        if kind == "str":
            return text
        parts = [p.strip() for p in text.split("\\")]
        if kind == "strs":
            return parts
        if kind == "is":
            values: list[Any] = [int(float(p)) for p in parts]
        else:
            values = [float(p) for p in parts]
        return values[0] if len(values) == 1 else values
    except (UnicodeDecodeError, ValueError):
        return _get(ds, keyword, default)


def _first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    if ds is None:
        return None
    seq = _get(ds, keyword)
    try:
        return seq[0] if seq is not None and len(seq) else None
    except (TypeError, IndexError):
        return None


def _number(value: Any, default: float | None) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _rescale_optional(value: Any) -> float | None:
    """RescaleSlope/Intercept as stored; None only when absent.

    A present but unusable value (NaN, text, 0 slope) is kept (NaN when it cannot
    be parsed) so that :func:`ir_planner.io.dicom_checks.check_rescale` refuses it
    instead of silently replacing it.
    """
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _rescale_value(value: Any, default: float) -> float:
    """Like :func:`_rescale_optional`, with ``default`` when absent."""
    got = _rescale_optional(value)
    return default if got is None else got


def _meta(ds: Dataset) -> dict[str, Any]:
    """Descriptive metadata kept with the volume (strings and numbers only)."""
    keys = {
        "patient_name": "PatientName",
        "patient_id": "PatientID",
        "patient_position": "PatientPosition",
        "study_date": "StudyDate",
        "study_description": "StudyDescription",
        "series_description": "SeriesDescription",
        "series_number": "SeriesNumber",
        "manufacturer": "Manufacturer",
        "manufacturer_model": "ManufacturerModelName",
        "body_part": "BodyPartExamined",
        "kvp": "KVP",
        "convolution_kernel": "ConvolutionKernel",
        "frame_of_reference_uid": "FrameOfReferenceUID",
        "sop_class_uid": "SOPClassUID",
    }
    out: dict[str, Any] = {}
    for name, keyword in keys.items():
        value = _get(ds, keyword)
        if value is None or value == "":
            continue
        if isinstance(value, pydicom.multival.MultiValue):
            value = "\\".join(str(v) for v in value)
        out[name] = str(value)
    thickness = _number(_get(ds, "SliceThickness"), None)
    if thickness is not None:
        out["slice_thickness_mm"] = thickness
    return out


def _frames_classic(ds: Dataset, path: Path) -> tuple[list[FrameHeader], str]:
    ipp = _float_list(_fast_get(ds, "ImagePositionPatient", ()), 3)
    iop = _float_list(_fast_get(ds, "ImageOrientationPatient", ()), 6)
    ps = _float_list(_fast_get(ds, "PixelSpacing", ()), 2)
    missing = [
        name
        for name, v in (("ImagePositionPatient", ipp), ("ImageOrientationPatient", iop),
                        ("PixelSpacing", ps))
        if v is None
    ]
    if missing:
        return [], f"no usable geometry ({', '.join(missing)} missing or invalid)"
    assert ipp is not None and iop is not None and ps is not None
    frame = FrameHeader(
        path=path,
        frame=0,
        position_lps=ipp,
        row_cos=iop[:3],
        col_cos=iop[3:],
        row_spacing_mm=float(ps[0]),
        col_spacing_mm=float(ps[1]),
        rows=int(_fast_get(ds, "Rows", 0)),
        cols=int(_fast_get(ds, "Columns", 0)),
        slope=_rescale_value(_fast_get(ds, "RescaleSlope"), 1.0),
        intercept=_rescale_value(_fast_get(ds, "RescaleIntercept"), 0.0),
        instance_number=_int_or_none(_fast_get(ds, "InstanceNumber")),
        thickness_mm=_number(_fast_get(ds, "SliceThickness"), None),
    )
    n_frames = _int_or_none(_fast_get(ds, "NumberOfFrames")) or 1
    if n_frames != 1:
        return [], (
            f"{n_frames} frames but no per-frame geometry (not an enhanced image); "
            "cannot place the frames in space"
        )
    return [frame], ""


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _frames_enhanced(ds: Dataset, path: Path) -> tuple[list[FrameHeader], str]:
    n_frames = _int_or_none(_get(ds, "NumberOfFrames")) or 1
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n_frames:
        return [], (
            f"enhanced multi-frame image without a Per-frame Functional Groups Sequence "
            f"of {n_frames} items; cannot place the frames in space"
        )
    top_slope = _rescale_value(_get(ds, "RescaleSlope"), 1.0)
    top_intercept = _rescale_value(_get(ds, "RescaleIntercept"), 0.0)
    frames: list[FrameHeader] = []
    for f, item in enumerate(per_frame):

        def pick(seq_kw: str, item: Dataset = item) -> Dataset | None:
            return _first_item(item, seq_kw) or _first_item(shared, seq_kw)

        pos = pick("PlanePositionSequence")
        ori = pick("PlaneOrientationSequence")
        meas = pick("PixelMeasuresSequence")
        pvt = pick("PixelValueTransformationSequence")
        ipp = _float_list(_get(pos, "ImagePositionPatient", ()) if pos else (), 3)
        iop = _float_list(_get(ori, "ImageOrientationPatient", ()) if ori else (), 6)
        ps = _float_list(_get(meas, "PixelSpacing", ()) if meas else (), 2)
        if ipp is None or iop is None or ps is None:
            return [], (
                f"frame {f + 1}: no usable geometry in the functional groups "
                "(PlanePosition/PlaneOrientation/PixelMeasures missing)"
            )
        slope = _rescale_optional(_get(pvt, "RescaleSlope")) if pvt else None
        intercept = _rescale_optional(_get(pvt, "RescaleIntercept")) if pvt else None
        frames.append(
            FrameHeader(
                path=path,
                frame=f,
                position_lps=ipp,
                row_cos=iop[:3],
                col_cos=iop[3:],
                row_spacing_mm=float(ps[0]),
                col_spacing_mm=float(ps[1]),
                rows=int(_get(ds, "Rows", 0)),
                cols=int(_get(ds, "Columns", 0)),
                slope=top_slope if slope is None else slope,
                intercept=top_intercept if intercept is None else intercept,
                instance_number=_int_or_none(_get(ds, "InstanceNumber")),
                thickness_mm=_number(_get(meas, "SliceThickness"), None) if meas else None,
            )
        )
    return frames, ""


def _pixel_layout(ds: Dataset, fp_offset: int, head: bytes) -> tuple[int | None, str]:
    """Offset of the native little-endian pixel value, if the fast path applies."""
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if not ts:
        implicit, little = getattr(ds, "original_encoding", (None, None))
        if little is not True or implicit is None:
            return None, ""
        ts = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    if ts not in _NATIVE_LE:
        return None, ""
    bits = _int_or_none(_fast_get(ds, "BitsAllocated"))
    stored = _int_or_none(_fast_get(ds, "BitsStored"))
    high = _int_or_none(_fast_get(ds, "HighBit"))
    rep = _int_or_none(_fast_get(ds, "PixelRepresentation"))
    spp = _int_or_none(_fast_get(ds, "SamplesPerPixel")) or 1
    if bits not in (8, 16, 32) or spp != 1 or rep not in (0, 1) or stored is None:
        return None, ""
    if not (1 <= stored <= bits) or high != stored - 1:
        return None, ""  # unusual bit layout: leave it to pydicom
    if len(head) < 12 or head[:4] != _PIXEL_TAG_LE:
        return None, ""
    if ts == "1.2.840.10008.1.2":
        length = int.from_bytes(head[4:8], "little")
        value_offset = fp_offset + 8
    else:
        length = int.from_bytes(head[8:12], "little")
        value_offset = fp_offset + 12
    if length == 0xFFFFFFFF:
        return None, ""
    kind = "i" if rep == 1 else "u"
    return value_offset, f"<{kind}{bits // 8}"


class _NeedPydicom(Exception):
    """The fast header walker met something it leaves to pydicom."""


class _NeedData(Exception):
    """The fast header walker needs more bytes of the file."""


_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_WANTED_TAGS = frozenset(tag for tag, _ in _FAST.values())
_ENHANCED_TAGS = frozenset({0x52009229, 0x52009230})
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class _FastDataset:
    """The few top-level raw elements collected by :func:`_fast_parse`."""

    def __init__(self, elements: dict[int, RawDataElement], ts: str) -> None:
        self._elements = elements
        self.file_meta = Dataset()
        self.file_meta.TransferSyntaxUID = ts
        self.original_encoding = (ts == "1.2.840.10008.1.2", True)

    def get_item(self, tag: int) -> RawDataElement | None:
        return self._elements.get(tag)

    def __contains__(self, tag: int) -> bool:
        return tag in self._elements

    def get(self, keyword: str, default: Any = None) -> Any:
        raise _NeedPydicom(keyword)


def _u16(data: bytes, pos: int) -> int:
    if pos + 2 > len(data):
        raise _NeedData
    return data[pos] | (data[pos + 1] << 8)


def _u32(data: bytes, pos: int) -> int:
    if pos + 4 > len(data):
        raise _NeedData
    return int.from_bytes(data[pos : pos + 4], "little")


def _element(data: bytes, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR bytes or None, value length, value position) of the element at ``pos``."""
    tag = (_u16(data, pos) << 16) | _u16(data, pos + 2)
    if implicit or (tag >> 16) == 0xFFFE:
        return tag, None, _u32(data, pos + 4), pos + 8
    if pos + 6 > len(data):
        raise _NeedData
    vr = data[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        return tag, vr, _u32(data, pos + 8), pos + 12
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise _NeedPydicom("not an explicit VR")
    return tag, vr, _u16(data, pos + 6), pos + 8


def _skip_sequence(data: bytes, pos: int, implicit: bool, depth: int = 0) -> int:
    """Position after an undefined-length sequence whose items start at ``pos``."""
    if depth > 16:
        raise _NeedPydicom("sequences nested too deep")
    while True:
        tag, _vr, length, vpos = _element(data, pos, True)
        if tag == _SEQ_END:
            return vpos
        if tag != _ITEM:
            raise _NeedPydicom("unexpected element in a sequence")
        if length != 0xFFFFFFFF:
            pos = vpos + length
            continue
        pos = vpos
        while True:  # undefined-length item: walk its elements
            tag, vr, length, vpos = _element(data, pos, implicit)
            if tag == _ITEM_END:
                pos = vpos
                break
            if length == 0xFFFFFFFF:
                pos = _skip_sequence(data, vpos, implicit or vr == b"UN", depth + 1)
            else:
                pos = vpos + length
            if pos > len(data):
                raise _NeedData


def _walk(data: bytes) -> tuple[_FastDataset, int, bytes]:
    if len(data) < 132 or data[128:132] != b"DICM":
        raise _NeedPydicom("no DICM marker")
    pos = 132
    ts = ""
    while True:  # File Meta Information: always explicit VR little endian
        if _u16(data, pos) != 0x0002:
            break
        tag, _vr, length, vpos = _element(data, pos, False)
        if tag == 0x00020010:
            ts = data[vpos : vpos + length].decode("ascii", "replace").strip(" \0")
        pos = vpos + length
    if ts not in _NATIVE_LE:
        raise _NeedPydicom("not a native little-endian transfer syntax")
    implicit = ts == "1.2.840.10008.1.2"
    elements: dict[int, RawDataElement] = {}
    while True:
        if pos + 8 > len(data):
            raise _NeedData
        tag, vr, length, vpos = _element(data, pos, implicit)
        if tag == 0x7FE00010:
            return _FastDataset(elements, ts), pos, data[pos : pos + 12]
        if tag > 0x7FE00010 or tag in _ENHANCED_TAGS:
            raise _NeedPydicom("no pixel data or enhanced image")
        if length == 0xFFFFFFFF:
            pos = _skip_sequence(data, vpos, implicit or vr == b"UN")
            continue
        if tag in _WANTED_TAGS:
            if vpos + length > len(data):
                raise _NeedData
            elements[tag] = RawDataElement(
                tag, vr.decode() if vr else None, length, data[vpos : vpos + length], vpos,
                implicit, True,
            )
        pos = vpos + length


def _fast_parse(path: Path) -> tuple[_FastDataset, int, bytes] | None:
    """Walk the top-level elements of an uncompressed little-endian Part-10 file.

    Returns the collected elements, the file offset of the PixelData element and
    its first 12 bytes; raises :class:`_NeedPydicom` for anything else.
    """
    with open(path, "rb") as fp:
        data = fp.read(32768)
        try:
            return _walk(data)
        except _NeedData:
            data += fp.read()
    try:
        return _walk(data)
    except _NeedData:
        raise _NeedPydicom("file ends before the pixel data") from None


def _looks_like_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def _read_header(
    path: Path, seen_series: set[str] | None = None
) -> tuple[FileHeader | None, str, bool]:
    """Parse one file. Returns (header or None, problem, looks_like_dicom).

    Uncompressed little-endian files of a series already seen are parsed by a
    small element walker (:func:`_fast_parse`); everything else (the first file
    of each series, enhanced multi-frame, compressed, big endian, anything
    unusual) by pydicom. Descriptive metadata is decoded only for the first file
    of each series (``seen_series`` collects the series already described).
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, f"cannot access ({exc.strerror or exc})", False
    if size == 0:
        return None, "empty file", False
    if seen_series:
        try:
            fast = _fast_parse(path)
            if fast is not None:
                return _build_header(path, fast[0], fast[1], fast[2], True, seen_series)
        except _NeedPydicom:
            pass
        except OSError as exc:
            return None, f"cannot read ({exc.strerror or exc})", False
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
            dicm = _looks_like_dicom(head)
            fp.seek(0)
            with warnings.catch_warnings():
                # pydicom warns about oddities it tolerates; problems we care about are
                # detected below and reported with the file name.
                warnings.simplefilter("ignore")
                try:
                    ds = pydicom.dcmread(fp, stop_before_pixels=True)
                except InvalidDicomError:
                    if dicm or head[:2] not in (b"\x08\x00", b"\x02\x00"):
                        return None, "not a DICOM file (no 'DICM' marker)", False
                    fp.seek(0)
                    ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            pixel_pos = fp.tell()
            fp.seek(pixel_pos)
            pixel_head = fp.read(12)
    except PermissionError as exc:
        return None, f"permission denied ({exc.strerror})", False
    except Exception as exc:  # noqa: BLE001 - any parser failure is a reportable problem
        reason = f"cannot parse DICOM header ({type(exc).__name__}: {str(exc)[:160]})"
        return None, reason, _looks_like_dicom_path(path)
    return _build_header(path, ds, pixel_pos, pixel_head, dicm, seen_series)


def _build_header(
    path: Path,
    ds: Any,
    pixel_pos: int,
    pixel_head: bytes,
    dicm: bool,
    seen_series: set[str] | None,
) -> tuple[FileHeader | None, str, bool]:
    header, problem, dicom_like = _build_header_inner(
        path, ds, pixel_pos, pixel_head, dicm, seen_series
    )
    if header is not None and seen_series is not None:
        seen_series.add(header.series_uid)
    return header, problem, dicom_like


def _build_header_inner(
    path: Path,
    ds: Any,
    pixel_pos: int,
    pixel_head: bytes,
    dicm: bool,
    seen_series: set[str] | None,
) -> tuple[FileHeader | None, str, bool]:
    sop = str(_fast_get(ds, "SOPClassUID", "") or "")
    series_uid = str(_fast_get(ds, "SeriesInstanceUID", "") or "")
    if not sop and not series_uid:
        if dicm:
            meta_sop = str(_get(getattr(ds, "file_meta", Dataset()), "MediaStorageSOPClassUID", ""))
            kind = UID(meta_sop).name if meta_sop else "no SOP class"
            return None, f"DICOM object without SeriesInstanceUID ({kind}); ignored", False
        return None, "not a DICOM file (no 'DICM' marker and no DICOM identifiers)", False
    if not series_uid:
        name = UID(sop).name if sop else "unknown SOP class"
        return None, f"DICOM object without SeriesInstanceUID ({name}); ignored", False
    image_type = tuple(str(v).upper() for v in (_as_list(_fast_get(ds, "ImageType", ()))))
    describe = seen_series is None or series_uid not in seen_series
    if describe and isinstance(ds, _FastDataset):
        raise _NeedPydicom  # descriptive metadata is decoded by pydicom
    modality = str(_fast_get(ds, "Modality", "") or "")
    header = FileHeader(
        path=path,
        sop_class=sop,
        study_uid=str(_fast_get(ds, "StudyInstanceUID", "") or ""),
        series_uid=series_uid,
        modality=modality,
        description=str(_get(ds, "SeriesDescription", "") or "") if describe else "",
        series_number=_int_or_none(_fast_get(ds, "SeriesNumber")),
        image_type=image_type,
        patient_position=str(_fast_get(ds, "PatientPosition", "") or ""),
        frames=[],
        n_frames=_int_or_none(_fast_get(ds, "NumberOfFrames")) or 1,
        bits_stored=_int_or_none(_fast_get(ds, "BitsStored")) or 16,
        pixel_representation=_int_or_none(_fast_get(ds, "PixelRepresentation")) or 0,
        gantry_tilt_deg=_number(_fast_get(ds, "GantryDetectorTilt"), None),
        meta=_meta(ds) if describe else {},
        sop_instance_uid=str(_fast_get(ds, "SOPInstanceUID", "") or ""),
    )
    if sop not in VOLUME_SOP_CLASSES:
        name = UID(sop).name if sop else "no SOP Class UID"
        header.problem = f"not a CT/MR/PET image ({name})"
        return header, "", True
    if pixel_head[:4] != _PIXEL_TAG_LE:
        header.problem = "no pixel data"
        return header, "", True
    rows = _int_or_none(_fast_get(ds, "Rows")) or 0
    cols = _int_or_none(_fast_get(ds, "Columns")) or 0
    if rows <= 0 or cols <= 0:
        header.problem = "no valid Rows/Columns"
        return header, "", True
    spp = _int_or_none(_fast_get(ds, "SamplesPerPixel")) or 1
    if spp != 1:
        header.problem = f"colour image ({spp} samples per pixel), not a grey-scale volume"
        return header, "", True
    if "MOSAIC" in image_type:
        # Siemens fMRI/diffusion: several slices tiled side by side in one frame; read as
        # one slice the tiles would be placed wrongly in space.
        header.problem = (
            "Siemens MOSAIC image (several slices tiled in one frame, fMRI/diffusion); "
            "not supported yet: convert it with dcm2niix"
        )
        return header, "", True
    pad = _padding_value(ds, "PixelPaddingValue", header.pixel_representation)
    if pad is not None:
        limit = _padding_value(ds, "PixelPaddingRangeLimit", header.pixel_representation)
        header.padding = (min(pad, limit), max(pad, limit)) if limit is not None else (pad, pad)
    enhanced = 0x52009230 in ds or 0x52009229 in ds  # Per-frame / Shared Functional Groups
    frames, problem = (_frames_enhanced if enhanced else _frames_classic)(ds, path)
    header.frames = frames
    header.problem = problem
    offset, dtype = _pixel_layout(ds, pixel_pos, pixel_head)
    header.pixel_offset, header.pixel_dtype = offset, dtype
    return header, "", True


def read_file_header(
    path: Path, seen_series: set[str] | None = None
) -> tuple[FileHeader | None, str, bool]:
    """Header of one file: (header or None, why not, looks like DICOM).

    ``seen_series``: series already described (their files take the fast path
    and skip descriptive metadata); updated in place.
    """
    return _read_header(path, seen_series)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _looks_like_dicom_path(path: Path) -> bool:
    try:
        with open(path, "rb") as fp:
            return _looks_like_dicom(fp.read(132))
    except OSError:
        return False


def _iter_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return out


def scan_dicom(path: str | Path, *, progress: ProgressCallback | None = None) -> DicomScan:
    """Read the headers of every file under ``path`` (a file or a folder tree).

    Hidden files and folders (name starting with ``.``) are ignored.

    Raises
    ------
    ImageReadError
        If ``path`` does not exist, or no DICOM file is found (the message lists
        the files examined and why each was rejected).
    """
    root = Path(path)
    if not root.exists():
        raise ImageReadError(f"{root}: no such file or folder")
    paths = _iter_files(root)
    if not paths:
        raise ImageReadError(f"{root}: folder is empty (no files to read)")
    headers: list[FileHeader] = []
    skipped: list[tuple[Path, str]] = []
    broken: list[tuple[Path, str]] = []
    n = len(paths)
    step = max(1, n // 50)
    seen_series: set[str] = set()
    for count, p in enumerate(paths, start=1):
        header, problem, dicom_like = _read_header(p, seen_series)
        if header is not None:
            headers.append(header)
        elif dicom_like:
            broken.append((p, problem))
        else:
            skipped.append((p, problem))
        if count % step == 0 or count == n:
            report(progress, count / n, "reading DICOM headers")
    if not headers:
        problems = broken + skipped
        listed = "; ".join(f"{p.name}: {why}" for p, why in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        where = f"{root}" if root.is_file() else f"{root} ({n} file(s) examined)"
        raise ImageReadError(f"no readable DICOM found in {where}: {listed}{more}")
    return DicomScan(root=root, files=headers, skipped=skipped, broken=broken)
