"""Registry of public real datasets: list, download (verified) and verify them.

The registry (``ir_planner/data/datasets.json``) names, for every dataset, its
licence, home page and files; each file has a raw-file URL at a fixed commit,
its SHA-256 and its size. Files live under a cache folder at their registry
``path`` (``<cache>/totalseg-ct/example_ct.nii.gz``); the cache folder is the
``cache_dir`` argument, else ``$IR_PLANNER_DATA_DIR``, else
``~/.cache/ir-planner/data``.

Downloads go to ``<file>.part``, are hashed while streaming, and are renamed into
place only when size and SHA-256 match, so a file at its final path is always
complete and verified. An interrupted download is resumed (HTTP Range) or
restarted on the next call; a failed one leaves no partial file behind.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ir_planner.core.errors import DatasetError
from ir_planner.core.jsonfile import JsonFileError, loads_strict
from ir_planner.core.progress import ProgressCallback, report

__all__ = [
    "DATA_DIR_ENV",
    "DatasetFile",
    "Dataset",
    "FileStatus",
    "load_registry",
    "get_dataset",
    "default_cache_dir",
    "verify_dataset",
    "fetch_dataset",
    "sha256_file",
]

#: Environment variable naming the dataset cache folder.
DATA_DIR_ENV = "IR_PLANNER_DATA_DIR"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetFile:
    """One file of a dataset: relative ``path`` in the cache, ``url``, ``sha256``, size."""

    path: str
    url: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Dataset:
    """A public dataset: name, description, licence, home page, source and files."""

    name: str
    description: str
    licence: str
    homepage: str
    files: tuple[DatasetFile, ...]
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        """Total size of the files in bytes."""
        return sum(f.size_bytes for f in self.files)


@dataclass(frozen=True)
class FileStatus:
    """Verification result of one file: ``state`` is ok, missing, wrong_size or wrong_hash."""

    file: DatasetFile
    local_path: Path
    state: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether the file is present and verified."""
        return self.state == "ok"


def load_registry(path: str | os.PathLike[str] | None = None) -> dict[str, Dataset]:
    """Read the dataset registry (default: the one shipped in ``ir_planner/data``).

    Raises
    ------
    DatasetError
        If the file is missing, not JSON, or an entry is malformed.
    """
    try:
        if path is None:
            text = resources.files("ir_planner").joinpath("data/datasets.json").read_text(
                encoding="utf-8")
            where = "ir_planner/data/datasets.json"
        else:
            where = str(path)
            if Path(path).is_file() and Path(path).stat().st_size > 4 * 2**20:
                raise DatasetError(f"dataset registry {where} is larger than 4 MiB")
            text = Path(path).read_text(encoding="utf-8")
        data = loads_strict(text, source=f"dataset registry {where}")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"dataset registry {where} is unreadable: {exc}") from exc
    except JsonFileError as exc:
        raise DatasetError(str(exc)) from exc
    out: dict[str, Dataset] = {}
    try:
        for entry in data["datasets"]:
            files = tuple(
                DatasetFile(path=str(f["path"]), url=str(f["url"]), sha256=str(f["sha256"]).lower(),
                            size_bytes=int(f["size_bytes"]))
                for f in entry["files"]
            )
            for f in files:
                p = Path(f.path)
                if p.is_absolute() or ".." in p.parts:
                    raise DatasetError(f"dataset registry {where}: file path {f.path!r} must be "
                                       "relative and stay inside the cache folder")
                _check_url(f.url, where)
            out[entry["name"]] = Dataset(
                name=str(entry["name"]), description=str(entry.get("description", "")),
                licence=str(entry.get("licence", "")), homepage=str(entry.get("homepage", "")),
                files=files, source=dict(entry.get("source", {})))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"dataset registry {where} is malformed: {exc!r}") from exc
    return out


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _check_url(url: str, where: str) -> None:
    """Registry URLs are https (plain http only to this machine's loopback, for tests)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme == "http" and parsed.hostname in _LOOPBACK:
        return
    raise DatasetError(
        f"dataset registry {where}: URL {url!r} is not https; only https downloads are allowed "
        "(file://, ftp:// and plain http are refused)"
    )


def get_dataset(name: str, registry: dict[str, Dataset] | None = None) -> Dataset:
    """The dataset called ``name``; the error lists the known names."""
    reg = load_registry() if registry is None else registry
    if name not in reg:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(reg))}")
    return reg[name]


def default_cache_dir() -> Path:
    """``$IR_PLANNER_DATA_DIR`` or ``~/.cache/ir-planner/data`` (honouring ``$XDG_CACHE_HOME``)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ir-planner" / "data"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _check(f: DatasetFile, local: Path) -> FileStatus:
    if not local.is_file():
        return FileStatus(f, local, "missing", "not in the cache")
    size = local.stat().st_size
    if size != f.size_bytes:
        return FileStatus(f, local, "wrong_size", f"{size} bytes, expected {f.size_bytes}")
    digest = sha256_file(local)
    if digest != f.sha256:
        return FileStatus(f, local, "wrong_hash", f"sha256 {digest}, expected {f.sha256}")
    return FileStatus(f, local, "ok")


def verify_dataset(dataset: str | Dataset, cache_dir: str | os.PathLike[str] | None = None, *,
                   registry: dict[str, Dataset] | None = None,
                   progress: ProgressCallback | None = None) -> list[FileStatus]:
    """Check every file of a dataset in the cache (presence, size, SHA-256); no network.

    Returns
    -------
    list of FileStatus
        One per file, in registry order.
    """
    ds = dataset if isinstance(dataset, Dataset) else get_dataset(dataset, registry)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = []
    for n, f in enumerate(ds.files):
        out.append(_check(f, root / f.path))
        report(progress, (n + 1) / len(ds.files), f"verified {f.path}")
    return out


def fetch_dataset(dataset: str | Dataset, cache_dir: str | os.PathLike[str] | None = None, *,
                  registry: dict[str, Dataset] | None = None, timeout_s: float = 30.0,
                  progress: ProgressCallback | None = None) -> list[Path]:
    """Download the files of a dataset that are missing or wrong, verifying each.

    Files already present with the right hash are kept. Each download streams to
    ``<file>.part`` (resumed with an HTTP Range request if a previous run was
    killed), and is renamed into place only after size and SHA-256 match.

    Returns
    -------
    list of Path
        Local paths of all the dataset's files.

    Raises
    ------
    DatasetError
        Offline / unreachable server, HTTP error, size or hash mismatch, or an
        unwritable cache; one line naming the file and what to do. No partial
        file is left behind.
    """
    ds = dataset if isinstance(dataset, Dataset) else get_dataset(dataset, registry)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    total = max(1, ds.size_bytes)
    done = 0
    paths = []
    for f in ds.files:
        local = root / f.path
        paths.append(local)
        if _check(f, local).ok:
            done += f.size_bytes
            report(progress, done / total, f"{f.path} already verified")
            continue
        _download(f, local, timeout_s=timeout_s, progress=progress, done=done, total=total)
        done += f.size_bytes
    report(progress, 1.0, f"{ds.name}: {len(ds.files)} files verified")
    return paths


def _download(f: DatasetFile, local: Path, *, timeout_s: float,
              progress: ProgressCallback | None, done: int, total: int) -> None:
    try:
        local.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create cache folder {local.parent}: {exc.strerror or exc}; "
                           f"choose another one with --cache-dir or ${DATA_DIR_ENV}") from exc
    part = local.with_name(local.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if have > f.size_bytes:
        part.unlink()
        have = 0
    request = urllib.request.Request(f.url, headers={"User-Agent": "ir-planner"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            mode = "wb"
            if have and getattr(response, "status", 200) == 206:
                with open(part, "rb") as fh:  # resume: hash what we already have
                    for block in iter(lambda: fh.read(_CHUNK), b""):
                        digest.update(block)
                mode = "ab"
            else:
                have = 0
            received = have
            with open(part, mode) as out:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    if received > f.size_bytes:
                        break
                    report(progress, (done + received) / total,
                           f"downloading {f.path} ({received / 1e6:.1f} MB)")
        if received != f.size_bytes:
            raise DatasetError(f"download of {f.url} has {received} bytes, expected "
                               f"{f.size_bytes}; the file was rejected")
        if digest.hexdigest() != f.sha256:
            raise DatasetError(f"download of {f.url} has sha256 {digest.hexdigest()}, expected "
                               f"{f.sha256}; the file was rejected (the source changed or the "
                               "download was corrupted)")
        os.replace(part, local)
    except urllib.error.HTTPError as exc:
        _discard(part)
        raise DatasetError(f"cannot download {f.url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        _discard(part)
        reason = getattr(exc, "reason", exc)
        raise DatasetError(
            f"cannot download {f.url}: {reason} (offline?); connect to the network or put the "
            f"file at {local} yourself (sha256 {f.sha256})") from exc
    except DatasetError:
        _discard(part)
        raise
    except OSError as exc:
        _discard(part)
        raise DatasetError(f"cannot write {local}: {exc.strerror or exc}") from exc


def _discard(part: Path) -> None:
    try:
        part.unlink()
    except FileNotFoundError:
        pass
