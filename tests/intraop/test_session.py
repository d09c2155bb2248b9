"""The guidance session end to end: storescu → receiver → registration → needle → deviation;
tracking from a pyigtl peer; bad scans; watchdog; record and replay."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyigtl
import pytest
from pydicom import dcmread

from ir_planner.intraop.dicom_receiver import DicomReceiver, SeriesArrival
from ir_planner.intraop.igtl_net import IgtlServer
from ir_planner.intraop.live import build_session
from ir_planner.intraop.recorder import Recorder, replay
from ir_planner.intraop.session import GuidanceSession, LiveEvent
from ir_planner.intraop.watch import WatchFolder
from ir_planner.io.load import load_image
from ir_planner.sample.case import SampleCase


class Events:
    def __init__(self) -> None:
        self.items: list[LiveEvent] = []
        self.lock = threading.Lock()

    def __call__(self, ev: LiveEvent) -> None:
        with self.lock:
            self.items.append(ev)

    def kinds(self) -> list[str]:
        with self.lock:
            return [e.kind for e in self.items]

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e.data for e in self.items if e.kind == kind]

    def wait(self, pred, timeout: float = 300.0) -> bool:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred(self):
                return True
            time.sleep(0.05)
        return False


@pytest.fixture(scope="module")
def base(plan_file: Path) -> GuidanceSession:
    """One loaded plan / planning CT / engine shared by the sessions of this module."""
    return build_session(plan_file)


def _session(base: GuidanceSession, **kw: Any) -> tuple[GuidanceSession, Events]:
    s = GuidanceSession(base.plan, base.plan_ct, engine=base.engine, settings=base.settings, **kw)
    ev = Events()
    s.connect(ev)
    return s.start(), ev


def test_storescu_to_deviation(base, sample_case: SampleCase, truth, tmp_path: Path
                               ) -> None:  # type: ignore[no-untyped-def]
    s, ev = _session(base)
    rx = DicomReceiver(tmp_path / "store", s.submit_series,
                       lambda k, d: s.source_status("dicom", k, d), port=0, ae_title="IRP",
                       quiet_s=1.0).start()
    try:
        files = sorted(sample_case.intraop_dicom_dir.glob("*.dcm"))
        out = subprocess.run(["storescu", "-aet", "CT01", "-aec", "IRP", "127.0.0.1",
                              str(rx.port), *map(str, files)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert ev.wait(lambda e: "deviation" in e.kinds() or "scan_rejected" in e.kinds())
    finally:
        rx.stop()
        s.stop()
    kinds = ev.kinds()
    for k in ("session_started", "series_received", "registration", "plan_mapped", "needle",
              "deviation", "session_stopped"):
        assert k in kinds, (k, kinds)
    reg = ev.of("registration")[0]
    assert reg["ok"] and reg["quality"]["ncc"] > 0.9
    m = np.array(reg["intraop_to_plan"])
    target_i = np.array(truth["target"]["centre_intraop_lps_mm"])
    assert np.linalg.norm(m[:3, :3] @ target_i + m[:3, 3]
                          - truth["target"]["centre_plan_lps_mm"]) <= 1.0
    mapped = ev.of("plan_mapped")[0]
    assert np.linalg.norm(np.array(mapped["target_intraop_lps_mm"]) - target_i) <= 1.0
    needle = ev.of("needle")[0]
    assert needle["count"] == 1
    tip_plan = np.array(needle["needles"][0]["tip_plan_lps_mm"])
    assert np.linalg.norm(tip_plan - truth["needle"]["tip_plan_lps_mm"]) <= 1.5 + 1.0
    dev = ev.of("deviation")[0]
    # the generator put the tip 3 mm short of the target centre, on the planned path
    assert dev["tip_to_target_mm"] == pytest.approx(3.0, abs=1.5)
    assert dev["remaining_depth_mm"] == pytest.approx(3.0, abs=1.5)
    assert dev["angle_to_plan_deg"] < 2.0 and dev["predicted_miss_mm"] < 1.5
    assert dev["clearance_current"]["verdict"] in ("safe", "caution")
    assert dev["clearance_extended"] is not None
    assert s.last_deviation is not None and s.registration is not None


def _copy_series(src: Path, dst: Path, **changes: Any) -> list[Path]:
    dst.mkdir(parents=True)
    out = []
    for f in sorted(src.glob("*.dcm")):
        ds = dcmread(f)
        for k, v in changes.items():
            setattr(ds, k, v)
        ds.save_as(dst / f.name)
        out.append(dst / f.name)
    return out


def test_other_patient_unregistrable_and_no_needle(base, sample_case: SampleCase,
                                                   tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s, ev = _session(base)
    try:
        files = _copy_series(sample_case.intraop_dicom_dir, tmp_path / "other",
                             PatientID="SOMEONE-ELSE")
        s.submit_series(SeriesArrival(tmp_path / "other", files, "", "", "SOMEONE-ELSE", "CT01"))
        assert ev.wait(lambda e: "scan_rejected" in e.kinds())
        rej = ev.of("scan_rejected")[0]
        assert rej["reason"] == "other-patient" and "SOMEONE-ELSE" in rej["detail"]
        assert "registration" not in ev.kinds() and s.registration is None
        # a good scan with the needle removed: registers, says "no needle", no deviation
        intra = load_image(sample_case.intraop_dicom_dir)
        no_metal = intra.with_array(np.minimum(intra.array, 400).astype(np.int16))
        s.submit_volume(no_metal, "test")
        assert ev.wait(lambda e: "needle" in e.kinds())
        assert ev.of("needle")[0]["count"] == 0
        assert any("no needle" in w["detail"] for w in ev.of("warning"))
        good = s.registration
        assert good is not None and "deviation" not in ev.kinds()
        # a scan that will not register: reported, the last good state kept
        rng = np.random.default_rng(0)
        s.submit_volume(intra.with_array(rng.normal(0, 400, intra.shape).astype(np.float32)),
                        "noise")
        assert ev.wait(lambda e: "registration_failed" in e.kinds())
        failed = ev.of("registration_failed")[0]
        assert failed["kept_last_good"] is True
        assert s.registration is good
        # an unreadable series
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "x.dcm").write_bytes(b"not dicom")
        s.submit_series(SeriesArrival(bad, [bad / "x.dcm"], "1.2.3", "", "", "CT01"))
        assert ev.wait(lambda e: any(r["reason"] == "unreadable" for r in e.of("scan_rejected")))
    finally:
        s.stop()


def _ras_pose(tip_lps: np.ndarray, axis_lps: np.ndarray) -> np.ndarray:
    """NeedleToRas with the tool's +z along the needle (hub → tip) and origin at the tip."""
    z = axis_lps / np.linalg.norm(axis_lps)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, :3] = np.column_stack([x, y, z])
    m[:3, 3] = tip_lps
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ m


def test_tracking_from_pyigtl_with_watchdog_record_and_replay(base, tmp_path: Path
                                                              ) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder(tmp_path / "rec")
    s, ev = _session(base, recorder=rec)
    srv = IgtlServer(s, port=0).start()
    t = s.trajectory
    entry, target = np.array(t.entry_lps), np.array(t.target_lps)
    axis = (target - entry) / np.linalg.norm(target - entry)
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=srv.port)
    try:
        for depth in (20.0, 10.0, 0.0):
            pose = _ras_pose(target - depth * axis, axis)
            client.send_message(pyigtl.TransformMessage(pose, device_name="NeedleToRas"),
                                wait=True)
            time.sleep(0.1)
        assert ev.wait(lambda e: len(e.of("tracking")) >= 1, timeout=60)
        assert ev.wait(lambda e: "tracking_stale" in e.kinds(), timeout=30)
        client.send_message(pyigtl.TransformMessage(_ras_pose(target, axis),
                                                    device_name="NeedleToRas"), wait=True)
        assert ev.wait(lambda e: "tracking_resumed" in e.kinds(), timeout=30)
        s.wait_idle(30)
    finally:
        client.stop()
        srv.stop()
        s.stop()
        rec.close()
    track = ev.of("tracking")
    last = track[-1]
    assert last["tip_to_target_mm"] == pytest.approx(0.0, abs=0.01)
    assert last["angle_to_plan_deg"] == pytest.approx(0.0, abs=0.05)
    assert all(x["latency_ms"] >= 0 for x in track)
    assert track[0]["source"] == "tracked" and track[0]["device"] == "NeedleToRas"
    # depth 20 mm short: the tracked metrics see it
    first = track[0]
    if first["remaining_depth_mm"] > 5:
        assert first["remaining_depth_mm"] == pytest.approx(20.0, abs=0.01)
    # replay the recording into a fresh session: the same final pose
    s2, ev2 = _session(base)
    try:
        n = replay(tmp_path / "rec", s2)
        assert n == 4
        s2.wait_idle(30)
    finally:
        s2.stop()
    assert ev2.of("tracking")[-1]["tip_plan_lps_mm"] == last["tip_plan_lps_mm"]


def test_flood_is_coalesced_and_counted(base) -> None:  # type: ignore[no-untyped-def]
    s, ev = _session(base)
    srv = IgtlServer(s, port=0).start()
    import socket

    from ir_planner.intraop.igtl import encode_transform
    t = s.trajectory
    target = np.array(t.target_lps)
    axis = (target - np.array(t.entry_lps)) / np.linalg.norm(target - np.array(t.entry_lps))
    blob = b"".join(encode_transform(_ras_pose(target - k * 0.01 * axis, axis), device="N")
                    for k in range(2000))
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(blob)
            assert ev.wait(lambda e: s.counters["transforms"] == 2000, timeout=60)
        s.wait_idle(60)
    finally:
        srv.stop()
        s.stop()
    c = s.counters
    assert c["transforms_processed"] + c["transforms_coalesced"] == 2000
    assert c["transforms_processed"] >= 1
    last = ev.of("tracking")[-1]
    assert np.allclose(last["tip_plan_lps_mm"], np.round(target - 19.99 * axis, 3), atol=2e-3)


def test_watch_folder_feeds_the_session(base, sample_case: SampleCase, tmp_path: Path
                                        ) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "old.txt").write_text("present before watching")
    got: list[SeriesArrival] = []
    problems: list[tuple[str, str]] = []
    w = WatchFolder(folder, got.append, lambda k, d: problems.append((k, d)), quiet_s=0.3,
                    poll_s=0.1).start()
    try:
        _copy_series(sample_case.intraop_dicom_dir, folder / "scan")
        (folder / "notes.bin").write_bytes(b"\x00\x01")
        end = time.monotonic() + 30
        while not got and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        w.stop()
    assert len(got) == 1 and len(got[0].files) == 36 and got[0].source == "watch"
    assert any(k == "skipped" and "notes.bin" in d for k, d in problems)
