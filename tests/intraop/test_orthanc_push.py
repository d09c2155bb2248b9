"""A real Orthanc (PACS) pushes the sample intra-op series to the DICOM receiver (C-STORE).

Orthanc is started by the test on loopback ports (its own DICOM server disabled: it only
acts as the sender) and stopped at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ir_planner.intraop.dicom_receiver import DicomReceiver, SeriesArrival
from ir_planner.sample.case import SampleCase
from tests.intraop.peers import free_port

ORTHANC = shutil.which("Orthanc")


def _http(port: int, path: str, data: bytes | None = None, method: str | None = None) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def test_orthanc_sends_the_series(sample_case: SampleCase, tmp_path: Path) -> None:
    if ORTHANC is None:
        pytest.fail("Orthanc not found: run scripts/setup_env.sh test (Debian package orthanc)")
    got: list[SeriesArrival] = []
    statuses: list[tuple[str, str]] = []
    lock = threading.Lock()

    def on_series(a: SeriesArrival) -> None:
        with lock:
            got.append(a)

    rx = DicomReceiver(tmp_path / "store", on_series, lambda k, d: statuses.append((k, d)),
                       port=0, ae_title="IRP", allowed_aets=["ORTHANC"], quiet_s=1.0).start()
    http = free_port()
    config = {
        "Name": "irp-test", "StorageDirectory": str(tmp_path / "db"),
        "IndexDirectory": str(tmp_path / "db"), "HttpPort": http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomServerEnabled": False, "DicomAet": "ORTHANC",
        "Plugins": [], "DicomModalities": {"irp": ["IRP", "127.0.0.1", rx.port]},
    }
    cfg = tmp_path / "orthanc.json"
    cfg.write_text(json.dumps(config))
    log = (tmp_path / "orthanc.log").open("w")
    proc = subprocess.Popen([str(ORTHANC), str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                _http(http, "/system")
                break
            except OSError:
                if time.monotonic() > end or proc.poll() is not None:
                    raise AssertionError((tmp_path / "orthanc.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        files = sorted(sample_case.intraop_dicom_dir.glob("*.dcm"))
        ids = [json.loads(_http(http, "/instances", f.read_bytes(), "POST"))["ID"] for f in files]
        series = json.loads(_http(http, f"/instances/{ids[0]}"))["ParentSeries"]
        out = json.loads(_http(http, "/modalities/irp/store", json.dumps(series).encode(),
                               "POST"))
        assert out.get("FailedInstancesCount", 0) == 0, out
        end = time.monotonic() + 60
        while not got and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        rx.stop()
    assert len(got) == 1 and len(got[0].files) == len(files), statuses
    assert got[0].calling_aet == "ORTHANC"
