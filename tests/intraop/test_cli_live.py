"""``ir-planner live --headless``: real peers (storescu, pyigtl) against the command, events
as JSON lines, record then replay, and clear errors for bad arguments."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyigtl
import pytest

from ir_planner.sample.case import SampleCase
from tests.intraop.peers import read_events


def _wait_for(path: Path, pred, timeout: float = 400.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            ev = read_events(path)
            hit = pred(ev)
            if hit:
                return hit
        time.sleep(0.2)
    raise AssertionError(f"timed out; events: {[e['kind'] for e in read_events(path)] if path.exists() else None}")


def _port(events: list[dict], source: str) -> int | None:  # type: ignore[type-arg]
    for e in events:
        if e["kind"] == "source" and e.get("source") == source and e.get("state") == "listening":
            return int(re.search(r":(\d+)", e["detail"]).group(1))  # type: ignore[union-attr]
    return None


def test_headless_live_session_then_replay(plan_file: Path, sample_case: SampleCase,
                                           tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    rec = tmp_path / "rec"
    cmd = [sys.executable, "-m", "ir_planner", "-q", "live", str(plan_file), "--dicom-port", "0",
           "--dicom-ae", "IRP", "--dicom-allow", "CT01", "--igtl-port", "0", "--headless",
           "--events", str(events), "--record", str(rec), "--quiet-s", "1",
           "--exit-after", "600"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    try:
        dport = _wait_for(events, lambda ev: _port(ev, "dicom"), timeout=300)
        iport = _wait_for(events, lambda ev: _port(ev, "igtl"), timeout=60)
        files = sorted(sample_case.intraop_dicom_dir.glob("*.dcm"))
        out = subprocess.run(["storescu", "-aet", "CT01", "-aec", "IRP", "127.0.0.1", str(dport),
                              *map(str, files)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=iport)
        try:
            for k in range(5):
                m = np.eye(4)
                m[:3, 3] = [100.0 + k, 20.0, 13.8]  # RAS: tip at (-100-k, -20, 13.8) LPS
                client.send_message(pyigtl.TransformMessage(m, device_name="Needle"), wait=True)
                time.sleep(0.05)
        finally:
            client.stop()
        _wait_for(events, lambda ev: any(e["kind"] == "deviation" for e in ev)
                  and any(e["kind"] == "tracking" for e in ev))
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    ev = read_events(events)
    kinds = [e["kind"] for e in ev]
    assert kinds[0] == "session_started" and kinds[-1] == "session_stopped"
    assert [e["seq"] for e in ev] == list(range(1, len(ev) + 1))
    dev = next(e for e in ev if e["kind"] == "deviation")
    assert dev["tip_to_target_mm"] < 5.0 and "clearance_current" in dev
    track = [e for e in ev if e["kind"] == "tracking"]
    assert track[-1]["tip_plan_lps_mm"] == pytest.approx([-104.0, -20.0, 13.8], abs=1e-3)
    assert all("latency_ms" in t for t in track)
    # the recording replays into a new session with the same results
    events2 = tmp_path / "replayed.jsonl"
    out = subprocess.run([sys.executable, "-m", "ir_planner", "-q", "live", str(plan_file),
                          "--replay", str(rec), "--headless", "--events", str(events2)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    ev2 = read_events(events2)
    dev2 = next(e for e in ev2 if e["kind"] == "deviation")
    # the same scan, registered again: the multi-threaded metric sums in a different order,
    # so the optimiser's path (not its accuracy) may differ by a fraction of a millimetre
    assert np.linalg.norm(np.subtract(dev2["tip_plan_lps_mm"], dev["tip_plan_lps_mm"])) < 0.5
    assert dev2["series_uid"] == dev["series_uid"]
    assert [e for e in ev2 if e["kind"] == "tracking"][-1]["tip_plan_lps_mm"] == \
        track[-1]["tip_plan_lps_mm"]
    lines = (rec / "recording.jsonl").read_text().splitlines()
    assert sum(json.loads(x)["channel"] == "igtl" for x in lines) == 5


@pytest.mark.parametrize("extra, message", [
    (["--events", "E"], "give at least one source"),
    (["--events", "E", "--igtl-port", "70000"], "--igtl-port must be 0-65535"),
    (["--events", "E", "--watch", "/nonexistent/dir"], "--watch"),
    (["--events", "E", "--igtl-port", "0"], "--headless"),
    (["--events", "E", "--source", "nosuch:port=1"], "nosuch"),
])
def test_bad_arguments_one_line_errors(plan_file: Path, tmp_path: Path, extra: list[str],
                                       message: str) -> None:
    args = [a if a != "E" else str(tmp_path / "e.jsonl") for a in extra]
    if message != "--headless":
        args.append("--headless")
    out = subprocess.run([sys.executable, "-m", "ir_planner", "-q", "live", str(plan_file), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_existing_events_file_is_not_overwritten(plan_file: Path, tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text("keep me\n")
    out = subprocess.run([sys.executable, "-m", "ir_planner", "-q", "live", str(plan_file),
                          "--igtl-port", "0", "--headless", "--events", str(events)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "exists" in out.stderr
    assert events.read_text() == "keep me\n"
