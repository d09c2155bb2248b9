"""A watch folder: scans dropped into a folder become series for the guidance session.

The folder is polled (no OS-specific notification: works on network shares).
A file counts once its size and modification time have not changed for
``quiet_s`` seconds (a copy in progress is not read half-written). DICOM files
are grouped by SeriesInstanceUID; a series is handed over when none of its files
changed for ``quiet_s``. Image files (NIfTI, NRRD, MHA) are handed over one by
one. Files already present when watching starts are ignored unless
``include_existing``; nothing in the folder is modified or deleted.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ir_planner.core.errors import InputError
from ir_planner.intraop.dicom_receiver import SeriesArrival, series_of
from ir_planner.io.image_files import is_image_file

__all__ = ["WatchFolder"]


class WatchFolder:
    """Poll ``folder`` in a background thread.

    Parameters
    ----------
    folder : path
    on_series : callable
        Called with a :class:`SeriesArrival` (``source="watch"``); for an image
        file ``files`` holds that one file and ``series_uid`` is its name.
    on_status : callable
        (kind, detail) for problems (unreadable files are reported once, skipped).
    quiet_s : float
    poll_s : float
    include_existing : bool
    """

    def __init__(self, folder: str | os.PathLike[str], on_series: Callable[[SeriesArrival], None],
                 on_status: Callable[[str, str], None], *, quiet_s: float = 2.0,
                 poll_s: float = 0.5, include_existing: bool = False) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"--watch {self.folder}: no such folder")
        self.on_series = on_series
        self.on_status = on_status
        self.quiet_s = float(quiet_s)
        self.poll_s = float(poll_s)
        self._seen: dict[Path, tuple[int, float, float]] = {}  # size, mtime, stable since
        self._done: set[Path] = set()
        self._series: dict[str, tuple[list[Path], float, str, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not include_existing:
            for p in self._files():
                self._done.add(p)

    def _files(self) -> list[Path]:
        out = []
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            out.extend(Path(root) / f for f in files if not f.startswith("."))
        return out

    def start(self) -> "WatchFolder":
        """Start polling."""
        self._thread = threading.Thread(target=self._run, name="watch-folder", daemon=True)
        self._thread.start()
        self.on_status("watching", f"watching {self.folder} (quiet period {self.quiet_s:g} s)")
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - the watcher must keep running
                self.on_status("watch-error", f"watch folder {self.folder}: {type(exc).__name__}: "
                               f"{exc}")

    def poll(self) -> None:
        """One pass: note changes, hand over what has settled."""
        now = time.monotonic()
        for p in self._files():
            if p in self._done:
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            key = (st.st_size, st.st_mtime)
            prev = self._seen.get(p)
            if prev is None or (prev[0], prev[1]) != key:
                self._seen[p] = (st.st_size, st.st_mtime, now)
                continue
            if now - prev[2] < self.quiet_s:
                continue
            self._done.add(p)
            self._seen.pop(p, None)
            if is_image_file(p):
                self.on_series(SeriesArrival(p, [p], p.name, "", "", "", "watch", now, now))
                continue
            info = series_of(p)
            if info is None:
                self.on_status("skipped", f"watch folder: {p.name} is neither DICOM nor an "
                               "image file; ignored")
                continue
            uid, study, patient = info
            files, _last, st_uid, pid = self._series.get(uid, ([], now, study, patient))
            files.append(p)
            self._series[uid] = (files, now, st_uid, pid)
        for uid, (files, last, study, patient) in list(self._series.items()):
            pending = any(self._seen.get(f) for f in files)
            if not pending and now - last >= self.quiet_s and not any(
                    q not in self._done for q in self._seen):
                del self._series[uid]
                self.on_series(SeriesArrival(files[0].parent, sorted(files), uid, study, patient,
                                             "", "watch", now, now))

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
