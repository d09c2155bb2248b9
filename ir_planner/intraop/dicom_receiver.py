"""A DICOM C-STORE receiver (storage SCP) for control scans pushed by the CT scanner.

* Listens on 127.0.0.1 unless configured otherwise; answers C-ECHO.
* Accepts associations only from the AE titles in ``allowed_aets`` (empty list:
  any caller) and only when called as ``ae_title``; a refused caller is reported.
* Each instance is written to ``storage/STUDY/SERIES/SOP.dcm`` **before** the
  success status is returned (temporary file, fsync, rename): a crash after the
  scanner was told "stored" cannot lose the slice, and a failed write answers
  "out of resources" so the scanner knows to resend.
* A series is *complete* when no instance of it has arrived for ``quiet_s``
  seconds; ``on_series(SeriesArrival)`` is then called (from the monitor
  thread) with its folder and files.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from ir_planner.core.errors import InputError
from ir_planner.core.fileio import atomic_write_bytes

__all__ = ["SeriesArrival", "DicomReceiver", "safe_uid"]

_UID = re.compile(r"^[0-9.]{1,64}$")


def safe_uid(uid: Any, fallback: str) -> str:
    """A UID usable as a file name (digits and dots, ≤ 64 chars) or ``fallback``."""
    s = str(uid or "").strip().rstrip("\0")
    return s if _UID.match(s) and ".." not in s and not s.startswith(".") else fallback


@dataclass
class SeriesArrival:
    """A series that has (probably) finished arriving."""

    folder: Path
    files: list[Path]
    series_uid: str
    study_uid: str
    patient_id: str
    calling_aet: str
    source: str = "dicom"
    first_s: float = 0.0
    last_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"folder": str(self.folder), "n_files": len(self.files),
                "series_uid": self.series_uid, "study_uid": self.study_uid,
                "patient_id": self.patient_id, "calling_aet": self.calling_aet,
                "source": self.source}


@dataclass
class _Pending:
    folder: Path
    study_uid: str
    patient_id: str
    calling_aet: str
    files: list[Path] = field(default_factory=list)
    first: float = 0.0
    last: float = 0.0


class DicomReceiver:
    """C-STORE SCP in a background thread.

    Parameters
    ----------
    storage : path
        Folder received instances are stored under (created).
    on_series : callable
        Called with a :class:`SeriesArrival` after the quiet period.
    on_status : callable
        Called with (kind, one-line detail) for association events and problems.
    port : int
        0 picks a free port (read :attr:`port` after :meth:`start`).
    ae_title : str
        Our AE title (callers must call us by it).
    allowed_aets : list of str
        Calling AE titles accepted (empty: any).
    host : str
        Interface to bind (loopback by default).
    quiet_s : float
        Seconds without a new instance after which a series is complete.
    """

    def __init__(self, storage: str | os.PathLike[str], on_series: Callable[[SeriesArrival], None],
                 on_status: Callable[[str, str], None], *, port: int = 11112,
                 ae_title: str = "IRPLANNER", allowed_aets: list[str] | None = None,
                 host: str = "127.0.0.1", quiet_s: float = 2.0) -> None:
        title = ae_title.strip()
        if not title or len(title) > 16 or not all(32 <= ord(c) < 127 and c != "\\"
                                                   for c in title):
            raise InputError(f"--dicom-ae must be 1-16 printable ASCII characters; got "
                             f"{ae_title!r}")
        self.storage = Path(storage)
        self.on_series = on_series
        self.on_status = on_status
        self.port = int(port)
        self.ae_title = title
        self.allowed = [a.strip() for a in (allowed_aets or []) if a.strip()]
        self.host = host
        self.quiet_s = float(quiet_s)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._monitor: threading.Thread | None = None
        self.stored = 0
        self.failed = 0

    def start(self) -> "DicomReceiver":
        """Start listening."""
        try:
            self.storage.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"DICOM storage folder {self.storage}: cannot create it "
                             f"({exc.strerror or exc})") from exc
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        ae.require_called_aet = True
        if self.allowed:
            ae.require_calling_aet = self.allowed
        ae.maximum_pdu_size = 0
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REQUESTED, self._on_requested),
                    (evt.EVT_ABORTED, self._on_aborted)]
        try:
            self._server = ae.start_server((self.host, self.port), block=False,
                                           evt_handlers=handlers)
        except OSError as exc:
            raise InputError(f"DICOM receiver: cannot listen on {self.host}:{self.port} "
                             f"({exc.strerror or exc})") from exc
        self.port = self._server.server_address[1]
        self._monitor = threading.Thread(target=self._watch, name="dicom-series", daemon=True)
        self._monitor.start()
        self.on_status("listening", f"DICOM receiver {self.ae_title} on {self.host}:{self.port}"
                       + (f", accepting {', '.join(self.allowed)}" if self.allowed else ""))
        return self

    # -- handlers (pynetdicom threads) ------------------------------------------------
    def _on_requested(self, event: Any) -> None:
        prim = event.assoc.requestor.primitive
        calling = str(getattr(prim, "calling_ae_title", "") or "").strip()
        called = str(getattr(prim, "called_ae_title", "") or "").strip()
        if self.allowed and calling not in self.allowed:
            self.on_status("refused", f"DICOM association from AE {calling!r} "
                           f"({event.assoc.requestor.address}) refused: not in the allow-list")
        elif called and called != self.ae_title:
            self.on_status("refused", f"DICOM association from AE {calling!r} refused: it "
                           f"called {called!r}, we are {self.ae_title!r}")

    def _on_aborted(self, event: Any) -> None:
        self.on_status("aborted", f"DICOM association from "
                       f"{str(event.assoc.requestor.ae_title).strip()!r} aborted")

    def _on_store(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            ds = event.dataset
            sop = safe_uid(getattr(ds, "SOPInstanceUID", ""), "")
            series = safe_uid(getattr(ds, "SeriesInstanceUID", ""), "")
            study = safe_uid(getattr(ds, "StudyInstanceUID", ""), "unknown-study")
            patient = str(getattr(ds, "PatientID", "") or "")
            if not sop or not series:
                self.failed += 1
                self.on_status("rejected", f"instance from {calling!r} without valid "
                               "SOPInstanceUID/SeriesInstanceUID refused")
                return 0xA900  # dataset does not match SOP class
            folder = self.storage / study / series
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{sop}.dcm"
            data = event.encoded_dataset()
            atomic_write_bytes(path, data, what="received DICOM instance")
        except Exception as exc:  # noqa: BLE001 - answer the scanner, never crash the SCP
            self.failed += 1
            self.on_status("store-failed", f"could not store an instance from {calling!r}: "
                           f"{type(exc).__name__}: {exc}")
            return 0xA700  # out of resources: the sender keeps it and may retry
        now = time.monotonic()
        with self._lock:
            p = self._pending.get(series)
            if p is None:
                p = self._pending[series] = _Pending(folder, study, patient, calling, first=now)
            if path not in p.files:
                p.files.append(path)
            p.last = now
        self.stored += 1
        return 0x0000

    # -- series completion ------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            self.flush(older_than_s=self.quiet_s)

    def flush(self, *, older_than_s: float = 0.0) -> int:
        """Hand over series quiet for ``older_than_s``; returns how many."""
        now = time.monotonic()
        done: list[tuple[str, _Pending]] = []
        with self._lock:
            for uid, p in list(self._pending.items()):
                if now - p.last >= older_than_s:
                    done.append((uid, self._pending.pop(uid)))
        for uid, p in done:
            self.on_series(SeriesArrival(p.folder, sorted(p.files), uid, p.study_uid,
                                         p.patient_id, p.calling_aet, "dicom", p.first, p.last))
        return len(done)

    def stop(self) -> None:
        """Stop listening (associations in progress are closed)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._monitor is not None:
            self._monitor.join(timeout=3.0)


def series_of(path: Path) -> tuple[str, str, str] | None:
    """(series UID, study UID, patient ID) of a DICOM file, None if it is not one."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=[
            "SeriesInstanceUID", "StudyInstanceUID", "PatientID"])
    except Exception:  # noqa: BLE001 - any unreadable file is simply not DICOM here
        return None
    uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
    if not uid:
        return None
    return uid, str(getattr(ds, "StudyInstanceUID", "") or ""), str(getattr(ds, "PatientID", "") or "")
