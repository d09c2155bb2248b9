"""Shared pieces of the image integrity checks: memory budget, streamed decompression.

See :mod:`ir_planner.io.integrity` for what is checked per format.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ir_planner.core.errors import ImageReadError

__all__ = [
    "MAX_DIM", "HeaderCheck", "memory_budget_bytes", "check_allocation", "gzip_pieces",
    "inflate_size", "finite",
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


def inflate_size(p: Path, start: int, limit: int, *, wbits: int = 31) -> int:
    """Decompressed size of the zlib/gzip stream starting at byte ``start`` (verified).

    ``wbits`` 31 reads gzip, 47 gzip or zlib. The stream is read in 1 MiB pieces.

    Raises
    ------
    ImageReadError
        Truncated or corrupt stream, or more than ``limit`` bytes of output (a
        damaged header or a decompression bomb), naming the file.
    """
    total = 0
    with open(p, "rb") as fh:
        fh.seek(start)
        inflater = zlib.decompressobj(wbits)
        while True:
            chunk = fh.read(_PIECE)
            if not chunk:
                if not inflater.eof:
                    raise ImageReadError(
                        f"{p}: compressed data is truncated; the file is damaged or "
                        "incompletely copied"
                    )
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


def finite(values: tuple[float, ...] | list[float]) -> bool:
    return all(math.isfinite(v) for v in values)
