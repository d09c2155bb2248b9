"""Strict reading of the project's JSON inputs (plans, names tables, device files).

:func:`read_json_file` refuses what :func:`json.loads` silently accepts: files larger
than a limit (checked before reading), duplicate keys (the last would win
silently), ``NaN`` / ``Infinity`` (not JSON; they would switch checks off), and
nesting deeper than a limit (a compiled parser could overflow its stack).
:func:`condense_validation_error` turns a multi-line pydantic error into one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ir_planner.core.errors import InputError

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "JsonFileError",
    "read_json_file",
    "loads_strict",
    "condense_validation_error",
]

#: Largest JSON input read (64 MiB): a plan or a names table is a few hundred kB.
MAX_JSON_BYTES = 64 * 1024 * 1024
#: Deepest nesting accepted.
MAX_JSON_DEPTH = 64


class JsonFileError(InputError):
    """A JSON input is too large, not valid strict JSON, or has duplicate keys."""


class _Strict(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Strict(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _Strict(f"{name} is not a JSON number")


def _depth_ok(text: str, limit: int) -> bool:
    depth = 0
    in_string = False
    escape = False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def loads_strict(
    text: str, *, source: str, max_depth: int = MAX_JSON_DEPTH, allow_nan: bool = False
) -> Any:
    """Parse ``text`` as strict JSON (no duplicate keys, no NaN/Infinity).

    ``allow_nan`` accepts ``NaN``/``Infinity`` (for files whose typed fields are
    validated afterwards, e.g. plans with free-form metrics).

    Raises
    ------
    JsonFileError
        Naming ``source`` and what is wrong (with line and column when known).
    """
    if not _depth_ok(text, max_depth):
        raise JsonFileError(f"{source}: JSON nested deeper than {max_depth} levels")
    try:
        if allow_nan:
            return json.loads(text, object_pairs_hook=_no_duplicates)
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _Strict as exc:
        raise JsonFileError(f"{source}: {exc}; not accepted") from exc
    except json.JSONDecodeError as exc:
        raise JsonFileError(
            f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise JsonFileError(f"{source}: JSON nested too deeply") from exc


def read_json_file(
    path: str | os.PathLike[str],
    *,
    what: str = "JSON file",
    max_bytes: int = MAX_JSON_BYTES,
    allow_nan: bool = False,
) -> Any:
    """Read a strict JSON file, refusing files over ``max_bytes`` before reading them.

    Parameters
    ----------
    path : path
        The file.
    what : str
        What the file is, for messages ("plan file", "names table").
    max_bytes : int
        Size limit in bytes.

    Raises
    ------
    JsonFileError
        Missing, not a regular file, too large, not UTF-8, not strict JSON.
    """
    p = Path(path)
    if not p.exists():
        raise JsonFileError(f"{what} {p} does not exist")
    if not p.is_file():
        raise JsonFileError(f"{what} {p} is not a regular file")
    size = p.stat().st_size
    if size > max_bytes:
        raise JsonFileError(
            f"{what} {p} is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB "
            "(is this really a {what}?)".replace("{what}", what)
        )
    try:
        with open(p, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise JsonFileError(f"{what} {p}: cannot read ({exc.strerror or exc})") from exc
    if len(raw) > max_bytes:
        raise JsonFileError(f"{what} {p} is larger than {max_bytes / 2**20:.0f} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JsonFileError(f"{what} {p} is not UTF-8 text (byte {exc.start})") from exc
    return loads_strict(text, source=f"{what} {p}", allow_nan=allow_nan)


def condense_validation_error(exc: Exception, *, limit: int = 3) -> str:
    """One line from a pydantic ``ValidationError``: ``field.path: message; ...``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return " ".join(str(exc).split())
    try:
        items = errors()
    except Exception:  # noqa: BLE001 - fall back to the flattened text
        return " ".join(str(exc).split())
    parts = []
    for item in items[:limit]:
        loc = ".".join(str(v) for v in item.get("loc", ())) or "(top level)"
        parts.append(f"{loc}: {item.get('msg', 'invalid')}")
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(parts) + more
