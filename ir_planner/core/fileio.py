"""The one atomic writer and the output guard.

Every file the project writes goes through :func:`atomic_output` (or the
``atomic_write_*`` helpers built on it): the data goes to a temporary file
beside the target (same file system, so the final ``os.replace`` is atomic),
which gets a normal file mode (``0666 & ~umask``) rather than ``mkstemp``'s
private 0600. An output is therefore either the old file or the complete new
one; a failure names the *output*, never the temporary file.

The **output guard** refuses an output that is the same file as an input, whatever
the spelling (symbolic link, ``./``, ``..``, relative or absolute path, hard link):

* :func:`check_outputs` compares the outputs a command was given with its inputs
  before any work is done (the CLI does this for every command);
* inside :func:`guarded_inputs` (entered by the CLI around a command), readers
  record every file they open with :func:`register_input` (the sidecar of a label
  map, its layer files, the slices of a DICOM series, ...) and the atomic writer
  refuses to replace any of them. An in-place update (``ablate PLAN`` without
  ``--out``) is allowed explicitly with :func:`allow_in_place`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ir_planner.core.errors import InputError, OutputError

__all__ = [
    "default_mode",
    "same_file",
    "file_key",
    "register_input",
    "allow_in_place",
    "guarded_inputs",
    "check_output",
    "check_outputs",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
]


def default_mode(*, directory: bool = False) -> int:
    """The mode a new file (or folder) gets under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


FileKey = tuple[str, int, int]


def file_key(path: str | os.PathLike[str]) -> FileKey:
    """Identity of a file: resolved path plus (device, inode) when it exists.

    Two spellings of one file (symbolic link, ``./``, ``..``, hard link) give
    keys that :func:`_keys_match` considers equal.
    """
    real = os.path.realpath(os.path.abspath(os.fspath(path)))
    try:
        st = os.stat(real)
    except OSError:
        return (real, -1, -1)
    return (real, st.st_dev, st.st_ino)


def _keys_match(a: FileKey, b: FileKey) -> bool:
    if a[0] == b[0]:
        return True
    return a[1] >= 0 and b[1] >= 0 and (a[1], a[2]) == (b[1], b[2])


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same file (existing or not)."""
    return _keys_match(file_key(a), file_key(b))


# Files read by the running command (shared by its threads; off outside guarded_inputs)
_SHARED: dict[FileKey, str] = {}
_IN_PLACE: list[FileKey] = []
_SHARED_LOCK = threading.Lock()
_ACTIVE_COUNT = [0]


def register_input(path: str | os.PathLike[str]) -> None:
    """Record that the running command reads ``path`` (no-op outside :func:`guarded_inputs`)."""
    if _ACTIVE_COUNT[0] <= 0:
        return
    key = file_key(path)
    with _SHARED_LOCK:
        _SHARED.setdefault(key, os.fspath(path))


def allow_in_place(path: str | os.PathLike[str]) -> None:
    """Allow the running command to replace the input ``path`` (an explicit in-place update)."""
    with _SHARED_LOCK:
        _IN_PLACE.append(file_key(path))


@contextlib.contextmanager
def guarded_inputs(inputs: Iterable[str | os.PathLike[str]] = ()) -> Iterator[None]:
    """Within this block, no atomic write may replace a file that was read.

    Parameters
    ----------
    inputs : iterable of path
        Inputs known up front (command-line arguments); readers add the rest
        with :func:`register_input`.
    """
    with _SHARED_LOCK:
        _ACTIVE_COUNT[0] += 1
        saved = dict(_SHARED)
        saved_in_place = list(_IN_PLACE)
    try:
        for p in inputs:
            register_input(p)
        yield
    finally:
        with _SHARED_LOCK:
            _ACTIVE_COUNT[0] -= 1
            _SHARED.clear()
            _SHARED.update(saved)
            _IN_PLACE[:] = saved_in_place


def _registered_input(out: Path) -> str | None:
    if _ACTIVE_COUNT[0] <= 0:
        return None
    key = file_key(out)
    with _SHARED_LOCK:
        if any(_keys_match(key, k) for k in _IN_PLACE):
            return None
        for k, name in _SHARED.items():
            if _keys_match(key, k):
                return name
    return None


def check_output(
    path: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
    what: str = "output",
) -> Path:
    """Refuse an output that would replace an input, a folder or a special file.

    Parameters
    ----------
    path : path
        The output file.
    inputs : iterable of path
        Files (or folders) the command reads.
    what : str
        How the output is named in messages (e.g. ``"--labels-out"``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        The output is an input (any spelling), a registered input of the running
        command, a folder or not a regular file, or its folder does not exist.
    """
    out = Path(path)
    key = file_key(out)
    for inp in inputs:
        if _keys_match(key, file_key(inp)):
            raise OutputError(
                f"{what} {out} is the input {inp}; refusing to overwrite an input "
                "(choose another output file)"
            )
    read = _registered_input(out)
    if read is not None:
        raise OutputError(
            f"{what} {out} is the file {read} that this command reads; refusing to "
            "overwrite an input (choose another output file)"
        )
    if out.is_dir():
        raise OutputError(f"{what} {out} is a folder; give a file name")
    if out.exists() and not out.is_file():
        raise OutputError(f"{what} {out} is not a regular file (device, FIFO or socket)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{what} {out}: folder {parent} does not exist")
    return out


def check_outputs(
    outputs: Iterable[tuple[str, str | os.PathLike[str]]],
    inputs: Iterable[str | os.PathLike[str]],
) -> None:
    """Check several outputs (``(what, path)`` pairs) against the inputs and each other.

    Raises
    ------
    OutputError
        See :func:`check_output`; also when two outputs are the same file.
    """
    inputs = list(inputs)
    seen: list[tuple[str, Path]] = []
    for what, path in outputs:
        out = check_output(path, inputs=inputs, what=what)
        for other_what, other in seen:
            if same_file(out, other):
                raise OutputError(f"{what} {out} and {other_what} {other} are the same file")
        seen.append((what, out))


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file keeps the output's suffix (``.nii.gz``, ``.dcm``, ...) so
    writers that choose a format by suffix work. On any error the temporary file
    is removed and ``path`` is untouched. Operating-system errors are re-raised
    as :class:`OutputError` naming ``path``.

    Raises
    ------
    OutputError
        See :func:`check_output`, or the write failed (disk full, permission).
    """
    out = check_output(path, what=what)
    name = out.name
    suffix = "".join(out.suffixes[-2:]) if name.lower().endswith(".gz") else out.suffix
    stem = name[: len(name) - len(suffix)] if suffix else name
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}",
                                        dir=out.parent if str(out.parent) else ".")
    except OSError as exc:
        raise OutputError(f"cannot write {what} {out}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.is_file():
            raise OutputError(f"cannot write {what} {out}: the writer produced no file")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, default_mode())
        check_output(out, what=what)  # still not an input (re-checked just before replacing)
        os.replace(tmp, out)
    except OSError as exc:
        raise OutputError(f"cannot write {what} {out}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, what: str = "output"
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, what=what) as tmp:
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise OutputError(f"cannot write {what} {path}: {exc.strerror or exc}") from exc
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", what: str = "output"
) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename).

    Raises
    ------
    OutputError
        If the folder is missing or not writable, or the output is an input; no
        partial file is left.
    """
    return atomic_write_bytes(path, text.encode(encoding), what=what)


def atomic_write_json(
    path: str | os.PathLike[str], data: Any, *, indent: int = 2, what: str = "output"
) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically.

    NaN and infinities are refused (JSON has no such numbers; writing them as
    ``NaN`` or ``null`` would change their meaning on reading).

    Raises
    ------
    InputError
        ``data`` holds a NaN or infinite number.
    """
    try:
        text = json.dumps(data, indent=indent, default=str, allow_nan=False)
    except ValueError as exc:
        raise InputError(f"cannot write {path}: {exc} (NaN or infinite value)") from exc
    return atomic_write_text(path, text + "\n", what=what)
