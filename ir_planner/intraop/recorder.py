"""Record every incoming message of a live session, and replay a recording.

A recording is a folder::

    recording.jsonl   one line per incoming item, in arrival order
    igtl.bin          the raw OpenIGTLink bytes, concatenated as received
    dicom/...         (the DICOM receiver's storage, when it records there)

Each line holds ``t_s`` (seconds since the recording started, monotonic clock),
``t_wall`` (ISO time), ``channel`` ("igtl", "dicom", "watch"), ``peer`` and, for
OpenIGTLink, ``offset``/``size`` into ``igtl.bin`` and ``complete`` (False for a
message cut by a disconnect or refused at its header); for a series, its folder
and files. Lines are flushed as they are written, so a crash loses at most the
line being written.

:func:`replay` feeds a recording back into a session: OpenIGTLink bytes go
through the same decoder as live traffic, series are re-read from their files.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ir_planner.core.errors import InputError
from ir_planner.intraop.dicom_receiver import SeriesArrival
from ir_planner.intraop.igtl import HEADER_SIZE, IgtlError, Message, decode_body, decode_header

__all__ = ["Recorder", "replay", "read_recording", "ReplayTarget"]


class Recorder:
    """Append-only recorder (thread-safe)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--record {self.folder}: cannot create the folder "
                             f"({exc.strerror or exc})") from exc
        index = self.folder / "recording.jsonl"
        if index.exists() and index.stat().st_size > 0:
            raise InputError(f"--record {self.folder}: already holds a recording; choose a new "
                             "folder (recordings are never overwritten)")
        self._index = index.open("a", encoding="utf-8")
        self._bin = (self.folder / "igtl.bin").open("ab")
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self.count = 0

    def _line(self, record: dict[str, Any]) -> None:
        record = {"t_s": round(time.monotonic() - self._t0, 6),
                  "t_wall": datetime.now(UTC).isoformat(), **record}
        self._index.write(json.dumps(record) + "\n")
        self._index.flush()
        self.count += 1

    def igtl(self, peer: str, data: bytes, *, complete: bool) -> None:
        """Record raw OpenIGTLink bytes (a whole message or a fragment)."""
        with self._lock:
            offset = self._bin.tell()
            self._bin.write(data)
            self._bin.flush()
            self._line({"channel": "igtl", "peer": peer, "offset": offset, "size": len(data),
                        "complete": complete})

    def series(self, arrival: SeriesArrival) -> None:
        """Record a series hand-over (its files stay where they were stored)."""
        with self._lock:
            self._line({"channel": arrival.source, "series_uid": arrival.series_uid,
                        "patient_id": arrival.patient_id, "folder": str(arrival.folder),
                        "files": [str(f) for f in arrival.files],
                        "calling_aet": arrival.calling_aet})

    def close(self) -> None:
        """Flush and close."""
        with self._lock:
            self._index.close()
            self._bin.close()


def read_recording(folder: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The lines of a recording (skips a torn last line)."""
    index = Path(folder) / "recording.jsonl"
    if not index.is_file():
        raise InputError(f"{folder}: not a recording (no recording.jsonl)")
    with index.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class ReplayTarget(Protocol):
    """What :func:`replay` feeds (the guidance session implements it)."""

    def igtl_message(self, peer: str, msg: Message, t_mono: float) -> None: ...

    def igtl_problem(self, kind: str, detail: str) -> None: ...

    def submit_series(self, arrival: SeriesArrival) -> None: ...


def replay(folder: str | os.PathLike[str], target: ReplayTarget, *, speed: float | None = None
           ) -> int:
    """Feed a recording into ``target``; returns the number of items replayed.

    ``speed`` None replays as fast as possible; 1.0 at the recorded pace.
    """
    root = Path(folder)
    data = (root / "igtl.bin").read_bytes() if (root / "igtl.bin").is_file() else b""
    n = 0
    t_start = time.monotonic()
    for rec in read_recording(root):
        if speed:
            wait = rec.get("t_s", 0.0) / speed - (time.monotonic() - t_start)
            if wait > 0:
                time.sleep(wait)
        ch = rec.get("channel")
        if ch == "igtl":
            raw = data[int(rec["offset"]):int(rec["offset"]) + int(rec["size"])]
            n += 1
            if not rec.get("complete", True) or len(raw) < HEADER_SIZE:
                target.igtl_problem("replay", f"recorded fragment of {len(raw)} bytes from "
                                    f"{rec.get('peer')} (cut or refused when live)")
                continue
            try:
                header = decode_header(raw[:HEADER_SIZE])
                msg = decode_body(header, raw[HEADER_SIZE:])
            except IgtlError as exc:
                target.igtl_problem("malformed", f"replay: {exc}")
                continue
            target.igtl_message(str(rec.get("peer", "replay")), msg, time.monotonic())
        elif ch in ("dicom", "watch"):
            files = [Path(f) for f in rec.get("files", [])]
            target.submit_series(SeriesArrival(Path(rec.get("folder", ".")), files,
                                               str(rec.get("series_uid", "")), "",
                                               str(rec.get("patient_id", "")),
                                               str(rec.get("calling_aet", "")), str(ch)))
            n += 1
    return n
