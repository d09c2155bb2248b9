"""Atomic binary writes for pictures.

Temporary until ``ir_planner.core.fileio.atomic_write_bytes`` (the project's one
atomic writer, being extended for binary outputs) lands; then this module goes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ir_planner.core.fileio import default_mode

__all__ = ["atomic_write_bytes"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    out = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
