"""OpenIGTLink framing: a strict decoder and an encoder for TRANSFORM, IMAGE, POINT, STRING.

The wire format (OpenIGTLink v1/v2/v3 header, big-endian)::

    version u16 | type char[12] | device char[20] | timestamp u32 sec + u32 frac |
    body size u64 | CRC-64 (ECMA-182) u64 | body

Header version 2 bodies start with a 12-byte extended header and end with
metadata. Every byte is distrusted: a body larger than the type's limit, a CRC
mismatch, a truncated or nonsensical body raise :class:`IgtlError` with a
one-line reason; the stream stays in sync whenever the header itself was sound,
so one bad message never costs the next one.

Coordinates: OpenIGTLink peers (3D Slicer, PLUS) use **RAS**. Everything inside
IR Planner is LPS; :func:`ras_to_lps_matrix` converts at this boundary and the
decoded objects name their frame (``matrix_ras`` / ``ijk_to_ras`` or
``ijk_to_lps`` for an IMAGE that declares LPS).
"""

from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import crcmod
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ir_planner.core.errors import IRPlannerError

__all__ = [
    "IgtlError", "Header", "TransformMessage", "ImageMessage", "PointMessage", "StringMessage",
    "UnknownMessage", "decode_header", "decode_body", "encode_transform", "encode_image",
    "encode_point", "encode_string", "encode_message", "ras_to_lps_matrix", "HEADER_SIZE",
    "BODY_LIMITS", "DEFAULT_UNKNOWN_LIMIT", "crc64",
]

HEADER_SIZE = 58
_HEADER = struct.Struct(">H12s20sIIQQ")
#: ``diag(-1, -1, 1, 1)``: maps RAS to LPS (and back; it is its own inverse).
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Largest body accepted per type (bytes, incl. v2 extended header and metadata).
BODY_LIMITS: dict[str, int] = {
    "TRANSFORM": 48 + 12 + 4096,
    "STRING": 4 + 65535 + 12 + 4096,
    "POINT": 136 * 1024 + 12 + 4096,
    "IMAGE": 72 + 64 * 1024 * 1024 + 12 + 4096,
    "STATUS": 30 + 4096 + 12 + 4096,
}
#: Bodies of unknown types up to this size are read and skipped (larger: disconnect).
DEFAULT_UNKNOWN_LIMIT = 1024 * 1024

crc64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, rev=False, initCrc=0, xorOut=0)


class IgtlError(IRPlannerError):
    """A malformed or refused OpenIGTLink message."""


@dataclass(frozen=True)
class Header:
    """A decoded message header."""

    version: int
    type: str
    device: str
    timestamp: float
    body_size: int
    crc: int


@dataclass(frozen=True)
class TransformMessage:
    """TRANSFORM: a 4×4 rigid/affine matrix as sent (``matrix_ras``: the peer's RAS frame)."""

    device: str
    timestamp: float
    matrix_ras: NDArray[np.float64]

    @property
    def matrix_lps(self) -> NDArray[np.float64]:
        """The same transform with its output (reference) frame converted to LPS.

        A tool pose ``ToolToRas`` becomes ``ToolToLps = F · ToolToRas`` with
        ``F = diag(−1, −1, 1, 1)``; the tool's own axes are left as they are.
        """
        return _FLIP @ self.matrix_ras


@dataclass(frozen=True)
class ImageMessage:
    """IMAGE: a scalar volume (k, j, i) with its index→world matrix in the declared frame."""

    device: str
    timestamp: float
    array: NDArray[Any]
    ijk_to_world: NDArray[np.float64]
    frame: str  # "RAS" or "LPS"

    @property
    def ijk_to_lps(self) -> NDArray[np.float64]:
        """Index → LPS mm (converted from RAS when the message declared RAS)."""
        return _FLIP @ self.ijk_to_world if self.frame == "RAS" else self.ijk_to_world.copy()


@dataclass(frozen=True)
class PointMessage:
    """POINT: named points (``positions_ras`` in the peer's RAS frame, mm)."""

    device: str
    timestamp: float
    names: tuple[str, ...]
    positions_ras: NDArray[np.float64]
    groups: tuple[str, ...] = ()

    @property
    def positions_lps(self) -> NDArray[np.float64]:
        """Positions converted to LPS mm."""
        return self.positions_ras * np.array([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class StringMessage:
    """STRING: text."""

    device: str
    timestamp: float
    text: str


@dataclass(frozen=True)
class UnknownMessage:
    """A message of a type this receiver does not handle (skipped, reported)."""

    device: str
    timestamp: float
    type: str
    size: int


Message = TransformMessage | ImageMessage | PointMessage | StringMessage | UnknownMessage


def ras_to_lps_matrix(matrix_ras: ArrayLike) -> NDArray[np.float64]:
    """``diag(−1, −1, 1, 1) @ matrix``: a matrix whose output frame is RAS → LPS."""
    return _FLIP @ np.asarray(matrix_ras, dtype=float)


def _text(raw: bytes, what: str) -> str:
    s = raw.split(b"\0", 1)[0]
    try:
        return s.decode("ascii").strip()
    except UnicodeDecodeError:
        raise IgtlError(f"{what} is not ASCII text") from None


def _frac_to_seconds(frac: int) -> float:
    return frac / 4294967296.0


def decode_header(raw: bytes) -> Header:
    """Parse the 58-byte header; :class:`IgtlError` when it makes no sense."""
    if len(raw) != HEADER_SIZE:
        raise IgtlError(f"header has {len(raw)} bytes, expected {HEADER_SIZE}")
    version, mtype, device, sec, frac, size, crc = _HEADER.unpack(raw)
    if version not in (1, 2, 3):
        raise IgtlError(f"unsupported header version {version}")
    mtype_s = _text(mtype, "message type")
    if not mtype_s or not all(c.isalnum() or c in "_-" for c in mtype_s):
        raise IgtlError(f"nonsensical message type {mtype!r}")
    return Header(version, mtype_s, _text(device, "device name"), sec + _frac_to_seconds(frac),
                  int(size), int(crc))


def body_limit(mtype: str, unknown_limit: int = DEFAULT_UNKNOWN_LIMIT) -> int:
    """Largest body (bytes) accepted for a message type."""
    return BODY_LIMITS.get(mtype, unknown_limit)


def _content(header: Header, body: bytes) -> bytes:
    """The body without the v2 extended header and metadata."""
    if header.version < 2:
        return body
    if len(body) < 12:
        raise IgtlError("v2 body shorter than its 12-byte extended header")
    ext_size, meta_header_size, meta_size, _msg_id = struct.unpack(">HHII", body[:12])
    if ext_size < 12 or ext_size > len(body):
        raise IgtlError(f"v2 extended header size {ext_size} is invalid")
    meta = meta_header_size + meta_size
    if ext_size + meta > len(body):
        raise IgtlError("v2 metadata larger than the body")
    return body[ext_size:len(body) - meta] if meta else body[ext_size:]


def decode_body(header: Header, body: bytes, *, check_crc: bool = True) -> Message:
    """Decode a message body; :class:`IgtlError` names what is wrong.

    Parameters
    ----------
    header : Header
    body : bytes
        Exactly ``header.body_size`` bytes.
    check_crc : bool
        Verify the CRC-64 (peers that send 0 are refused too: OpenIGTLink
        requires it).
    """
    if len(body) != header.body_size:
        raise IgtlError(f"{header.type} body has {len(body)} of {header.body_size} bytes")
    if check_crc and crc64(body) != header.crc:
        raise IgtlError(f"{header.type} from {header.device!r}: CRC-64 mismatch (corrupted)")
    t = header.type
    content = _content(header, body)
    if t == "TRANSFORM":
        if len(content) != 48:
            raise IgtlError(f"TRANSFORM body has {len(content)} bytes, expected 48")
        v = struct.unpack(">12f", content)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = v[0:3], v[3:6], v[6:9], v[9:12]
        if not np.all(np.isfinite(m)):
            raise IgtlError(f"TRANSFORM from {header.device!r} holds NaN or infinity")
        if abs(np.linalg.det(m[:3, :3])) < 1e-6:
            raise IgtlError(f"TRANSFORM from {header.device!r} is singular")
        return TransformMessage(header.device, header.timestamp, m)
    if t == "STRING":
        if len(content) < 4:
            raise IgtlError("STRING body shorter than 4 bytes")
        enc, n = struct.unpack(">HH", content[:4])
        if 4 + n > len(content):
            raise IgtlError(f"STRING says {n} bytes but carries {len(content) - 4}")
        raw = content[4:4 + n]
        codec = {3: "ascii", 106: "utf-8"}.get(enc)
        if codec is None:
            raise IgtlError(f"STRING encoding {enc} not supported (3 = ASCII, 106 = UTF-8)")
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError as exc:
            raise IgtlError(f"STRING is not valid {codec}: {exc.reason}") from exc
        return StringMessage(header.device, header.timestamp, text)
    if t == "POINT":
        item = 136
        if len(content) % item:
            raise IgtlError(f"POINT body of {len(content)} bytes is not a multiple of {item}")
        names, groups, pos = [], [], []
        for k in range(len(content) // item):
            rec = content[k * item:(k + 1) * item]
            name = rec[:64].split(b"\0", 1)[0].decode("utf-8", "replace")
            group = rec[64:96].split(b"\0", 1)[0].decode("utf-8", "replace")
            xyz = struct.unpack(">3f", rec[100:112])
            if not all(math.isfinite(v) for v in xyz):
                raise IgtlError(f"POINT {name!r} holds NaN or infinity")
            names.append(name)
            groups.append(group)
            pos.append(xyz)
        return PointMessage(header.device, header.timestamp, tuple(names),
                            np.asarray(pos, dtype=float).reshape(-1, 3), tuple(groups))
    if t == "IMAGE":
        return _decode_image(header, content)
    return UnknownMessage(header.device, header.timestamp, t, header.body_size)


_SCALARS = {2: np.int8, 3: np.uint8, 4: np.int16, 5: np.uint16, 6: np.int32, 7: np.uint32,
            10: np.float32, 11: np.float64}
_IMAGE_HEAD = struct.Struct(">HBBBBHHH12fHHHHHH")


def _decode_image(header: Header, content: bytes) -> ImageMessage:
    if len(content) < _IMAGE_HEAD.size:
        raise IgtlError(f"IMAGE body has {len(content)} bytes, shorter than its header "
                        f"({_IMAGE_HEAD.size})")
    v = _IMAGE_HEAD.unpack(content[:_IMAGE_HEAD.size])
    _ver, ncomp, stype, endian, coord = v[0], v[1], v[2], v[3], v[4]
    size = np.array(v[5:8], dtype=np.int64)
    mat = v[8:20]
    sub_start, sub_size = v[20:23], np.array(v[23:26], dtype=np.int64)
    if ncomp != 1:
        raise IgtlError(f"IMAGE with {ncomp} components: only scalar images are accepted")
    if stype not in _SCALARS:
        raise IgtlError(f"IMAGE scalar type {stype} unknown")
    if endian not in (1, 2):
        raise IgtlError(f"IMAGE endianness {endian} invalid (1 big, 2 little)")
    if coord not in (1, 2):
        raise IgtlError(f"IMAGE coordinate system {coord} invalid (1 RAS, 2 LPS)")
    if np.any(size < 1):
        raise IgtlError(f"IMAGE size {size.tolist()} has a zero axis")
    if tuple(sub_start) != (0, 0, 0) or np.any(sub_size != size):
        raise IgtlError("IMAGE sub-volumes are not supported: send the whole image")
    dt = np.dtype(_SCALARS[stype]).newbyteorder(">" if endian == 1 else "<")
    need = int(np.prod(size)) * dt.itemsize
    data = content[_IMAGE_HEAD.size:]
    if len(data) != need:
        raise IgtlError(f"IMAGE {size.tolist()} of {dt.name} needs {need} bytes of pixels; "
                        f"got {len(data)}")
    if not all(math.isfinite(x) for x in mat):
        raise IgtlError("IMAGE matrix holds NaN or infinity")
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2] = mat[0:3], mat[3:6], mat[6:9]
    centre = np.asarray(mat[9:12], dtype=float)
    if abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise IgtlError("IMAGE matrix is singular (zero spacing or parallel axes)")
    m[:3, 3] = centre - m[:3, :3] @ ((size.astype(float) - 1.0) / 2.0)
    arr = np.frombuffer(data, dtype=dt).reshape(int(size[2]), int(size[1]), int(size[0]))
    return ImageMessage(header.device, header.timestamp, arr.astype(dt.newbyteorder("=")), m,
                        "RAS" if coord == 1 else "LPS")


# -- encoding ---------------------------------------------------------------------------------
def _header(mtype: str, device: str, body: bytes, timestamp: float | None) -> bytes:
    ts = time.time() if timestamp is None else float(timestamp)
    sec = int(ts)
    frac = min(int((ts - sec) * 4294967296.0), 0xFFFFFFFF)
    return _HEADER.pack(1, mtype.encode("ascii")[:12], device.encode("ascii")[:20], sec, frac,
                        len(body), crc64(body))


def encode_message(mtype: str, device: str, content: bytes, *, timestamp: float | None = None
                   ) -> bytes:
    """Header (version 1) + body for any type."""
    return _header(mtype, device, content, timestamp) + content


def encode_transform(matrix: ArrayLike, *, device: str = "Needle",
                     timestamp: float | None = None) -> bytes:
    """A TRANSFORM message (``matrix`` in the frame the peer expects, RAS for Slicer)."""
    m = np.asarray(matrix, dtype=float)
    if m.shape != (4, 4):
        raise IgtlError(f"TRANSFORM needs a 4x4 matrix; got {m.shape}")
    body = struct.pack(">12f", *m[:3, 0], *m[:3, 1], *m[:3, 2], *m[:3, 3])
    return encode_message("TRANSFORM", device, body, timestamp=timestamp)


def encode_string(text: str, *, device: str = "Status", timestamp: float | None = None) -> bytes:
    """A STRING message (UTF-8)."""
    raw = text.encode("utf-8")
    if len(raw) > 65535:
        raise IgtlError("STRING longer than 65535 bytes")
    return encode_message("STRING", device, struct.pack(">HH", 106, len(raw)) + raw,
                          timestamp=timestamp)


def encode_point(names: list[str], positions: ArrayLike, *, device: str = "Points",
                 timestamp: float | None = None) -> bytes:
    """A POINT message (positions in the frame the peer expects, RAS for Slicer)."""
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    body = b"".join(struct.pack(">64s32s4B3ff20s", n.encode("utf-8")[:64], b"", 255, 255, 0, 255,
                                *p, 0.0, b"") for n, p in zip(names, pos))
    return encode_message("POINT", device, body, timestamp=timestamp)


def encode_image(array: ArrayLike, ijk_to_world: ArrayLike, *, frame: str = "LPS",
                 device: str = "Image", timestamp: float | None = None) -> bytes:
    """An IMAGE message from a (k, j, i) array and its index→world matrix."""
    a = np.ascontiguousarray(array)
    if a.ndim != 3:
        raise IgtlError(f"IMAGE needs a 3-D (k, j, i) array; got {a.ndim}-D")
    rev = {np.dtype(v).name: k for k, v in _SCALARS.items()}
    if a.dtype.name not in rev:
        raise IgtlError(f"IMAGE dtype {a.dtype} not supported")
    m = np.asarray(ijk_to_world, dtype=float)
    size = np.array([a.shape[2], a.shape[1], a.shape[0]])
    centre = m[:3, :3] @ ((size - 1.0) / 2.0) + m[:3, 3]
    little = a.dtype.byteorder in ("<", "|") or (a.dtype.byteorder == "=" and
                                                 np.little_endian)
    head = _IMAGE_HEAD.pack(1, 1, rev[a.dtype.name], 2 if little else 1,
                            1 if frame.upper() == "RAS" else 2, *[int(s) for s in size],
                            *m[:3, 0], *m[:3, 1], *m[:3, 2], *centre, 0, 0, 0,
                            *[int(s) for s in size])
    return encode_message("IMAGE", device, head + a.tobytes(), timestamp=timestamp)


@dataclass
class StreamStats:
    """Counters of one stream (for the session's status)."""

    messages: int = 0
    bytes: int = 0
    errors: int = 0
    unknown: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
