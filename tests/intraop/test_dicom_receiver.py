"""The DICOM receiver against DCMTK's storescu/echoscu (real peers, loopback)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from ir_planner.core.errors import InputError
from ir_planner.intraop.dicom_receiver import DicomReceiver, SeriesArrival, safe_uid
from ir_planner.sample.case import SampleCase


class Collector:
    def __init__(self) -> None:
        self.series: list[SeriesArrival] = []
        self.statuses: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def on_series(self, a: SeriesArrival) -> None:
        with self.lock:
            self.series.append(a)

    def on_status(self, kind: str, detail: str) -> None:
        with self.lock:
            self.statuses.append((kind, detail))

    def wait(self, pred, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if pred(self):
                    return True
            time.sleep(0.05)
        return False


@pytest.fixture()
def receiver(tmp_path: Path):  # type: ignore[no-untyped-def]
    col = Collector()
    rx = DicomReceiver(tmp_path / "store", col.on_series, col.on_status, port=0,
                       ae_title="IRPTEST", allowed_aets=["SCANNER"], quiet_s=1.0).start()
    yield rx, col
    rx.stop()


def _storescu(port: int, files: list[Path], aet: str, aec: str = "IRPTEST"
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["storescu", "-aet", aet, "-aec", aec, "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=120)


def test_storescu_series_is_stored_whole_and_completed(receiver, sample_case: SampleCase
                                                       ) -> None:  # type: ignore[no-untyped-def]
    rx, col = receiver
    files = sorted(sample_case.intraop_dicom_dir.glob("*.dcm"))
    out = _storescu(rx.port, files, "SCANNER")
    assert out.returncode == 0, out.stderr
    assert col.wait(lambda c: len(c.series) == 1)
    arrival = col.series[0]
    assert len(arrival.files) == len(files) and arrival.calling_aet == "SCANNER"
    assert arrival.patient_id == sample_case.read_manifest()["patient_id"]
    # every instance stored, pixel data identical to what was sent
    sent = {dcmread(f).SOPInstanceUID: dcmread(f).PixelData for f in files}
    got = {dcmread(f).SOPInstanceUID: dcmread(f).PixelData for f in arrival.files}
    assert got == sent
    assert not list(arrival.folder.glob(".*.tmp")), "no temporary file left behind"
    assert rx.stored == len(files)


def test_disallowed_ae_is_refused_and_reported(receiver, sample_case: SampleCase
                                               ) -> None:  # type: ignore[no-untyped-def]
    rx, col = receiver
    files = sorted(sample_case.intraop_dicom_dir.glob("*.dcm"))[:2]
    out = _storescu(rx.port, files, "INTRUDER")
    assert out.returncode != 0 or "Rejected" in out.stderr + out.stdout
    assert col.wait(lambda c: any(k == "refused" and "INTRUDER" in d for k, d in c.statuses))
    time.sleep(1.5)
    assert col.series == [] and rx.stored == 0
    # wrong called AE title
    out = _storescu(rx.port, files, "SCANNER", aec="SOMEONE")
    assert rx.stored == 0


def test_echo(receiver) -> None:  # type: ignore[no-untyped-def]
    rx, _col = receiver
    out = subprocess.run(["echoscu", "-aet", "SCANNER", "-aec", "IRPTEST", "127.0.0.1",
                          str(rx.port)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="dicom-ae"):
        DicomReceiver(tmp_path, print, print, ae_title="A" * 17)
    assert safe_uid("1.2.3", "x") == "1.2.3"
    assert safe_uid("../../etc", "x") == "x" and safe_uid("", "y") == "y"
