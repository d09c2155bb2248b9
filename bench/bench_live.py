"""Benchmark: intra-procedural guidance (registration, detection, tracking latency, endurance).

Every figure is printed next to a baseline measured in the same run:

* rigid registration of the sample intra-op scan (36 × 256 × 256) to the planning CT
  (96 × 256 × 256) vs one trilinear resampling of the planning CT onto the scan (the least work
  any registration must do once);
* needle detection vs thresholding the scan once;
* scan → deviation: from a control scan handed to the session (after the receiver's quiet
  period) to the ``deviation`` event, minus the registration's own time;
* TRANSFORM receive → processed latency (p50 / p95 / max) through the real OpenIGTLink server
  and the guidance session (deviation + planning-engine clearance of the needle), vs decoding
  alone;
* a sustained stream at 60 TRANSFORM/s for ``--seconds`` (default 60; the issue's goal is 600):
  resident memory and latency in the first and last tenth of the run (drift).

Run: ``python bench/bench_live.py [--seconds 600]``; numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ir_planner.bridge.sitk import to_sitk
from ir_planner.core.plan import CaseRef, Plan, TrajectoryRecord
from ir_planner.intraop.igtl import HEADER_SIZE, decode_body, decode_header, encode_transform
from ir_planner.intraop.igtl_net import IgtlServer
from ir_planner.intraop.live import build_session
from ir_planner.intraop.needle import detect_needles
from ir_planner.intraop.registration import register_rigid
from ir_planner.intraop.session import LiveEvent
from ir_planner.io.load import load_image
from ir_planner.sample.case import generate_sample_case


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def timed(fn, repeat: int = 3) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def pose(tip: np.ndarray, axis: np.ndarray) -> np.ndarray:
    z = axis / np.linalg.norm(axis)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    m = np.eye(4)
    m[:3, :3] = np.column_stack([x, np.cross(z, x), z])
    m[:3, 3] = tip
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ m  # NeedleToRas


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0, help="sustained 60 msg/s duration")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_live_"))
    case = generate_sample_case(tmp / "case", seed=0)
    truth = case.read_truth()
    plan_ct = load_image(case.planning_dicom_dir)
    intra = load_image(case.intraop_dicom_dir)
    target = np.array(truth["target"]["centre_plan_lps_mm"])

    # -- registration ---------------------------------------------------------------------
    fixed, moving = to_sitk(intra, intra.array.astype(np.float32)), to_sitk(
        plan_ct, plan_ct.array.astype(np.float32))
    t_base, _ = timed(lambda: sitk.Resample(moving, fixed, sitk.Transform(3, sitk.sitkIdentity),
                                            sitk.sitkLinear, -1024.0))
    regs = []
    for _ in range(3):
        t = time.perf_counter()
        r = register_rigid(intra, plan_ct, target_plan_lps=target)
        regs.append(time.perf_counter() - t)
    err = np.linalg.norm(r.to_plan(truth["target"]["centre_intraop_lps_mm"]) - target)
    t_reg = min(regs)
    print(f"rigid registration: best {t_reg:.2f} s (runs {', '.join(f'{x:.2f}' for x in regs)}), "
          f"{r.iterations} iterations, error at target {err:.2f} mm; baseline one resampling "
          f"{t_base * 1000:.0f} ms; ratio {t_reg / t_base:.0f}x")

    # -- detection -------------------------------------------------------------------------
    ti = truth["target"]["centre_intraop_lps_mm"]
    t_thr, _ = timed(lambda: int((intra.array > 2000).sum()), repeat=5)
    t_det, det = timed(lambda: detect_needles(intra, expected_target_lps=ti), repeat=5)
    tip_err = np.linalg.norm(np.array(det.needle.tip_lps) - truth["needle"]["tip_intraop_lps_mm"])  # type: ignore[union-attr]
    print(f"needle detection: {t_det * 1000:.0f} ms (tip error {tip_err:.2f} mm); baseline "
          f"threshold {t_thr * 1000:.1f} ms; ratio {t_det / t_thr:.0f}x")

    # -- session: scan -> deviation, tracking latency ----------------------------------------
    plan = Plan(case=CaseRef(image_path=str(case.planning_dicom_dir),
                             labels_path=str(case.planning_labels),
                             patient_id=case.read_manifest()["patient_id"]))
    plan.add_trajectory(TrajectoryRecord(name="T1", entry_lps=tuple(
        truth["needle"]["entry_plan_lps_mm"]), target_lps=tuple(target)))
    plan.save(tmp / "plan.json")
    session = build_session(tmp / "plan.json")
    events: list[LiveEvent] = []
    lock = threading.Lock()

    def listen(ev: LiveEvent) -> None:
        with lock:
            events.append(ev)

    session.connect(listen)
    session.start()
    from ir_planner.intraop.dicom_receiver import SeriesArrival
    files = sorted(case.intraop_dicom_dir.glob("*.dcm"))
    t0 = time.monotonic()
    session.submit_series(SeriesArrival(case.intraop_dicom_dir, files, truth["intraop_series_uid"],
                                        "", plan.case.patient_id, "BENCH"))
    session.wait_idle(600)
    t_scan = time.monotonic() - t0
    with lock:
        reg_ev = next(e for e in events if e.kind == "registration")
    overhead = t_scan - reg_ev.data["elapsed_s"]
    print(f"scan handed over -> deviation event: {t_scan:.2f} s = registration "
          f"{reg_ev.data['elapsed_s']:.2f} s + {overhead:.2f} s (read, detect, map, clearances); "
          "plus the receiver's quiet period (default 2 s)")

    srv = IgtlServer(session, port=0).start()
    entry = np.array(truth["needle"]["entry_plan_lps_mm"])
    axis = (target - entry) / np.linalg.norm(target - entry)
    msgs = [encode_transform(pose(target - (k % 200) * 0.1 * axis, axis), device="Needle")
            for k in range(600)]
    t_dec, _ = timed(lambda: [decode_body(decode_header(m[:HEADER_SIZE]), m[HEADER_SIZE:])
                              for m in msgs[:200]], repeat=3)
    sock = socket.create_connection(("127.0.0.1", srv.port))

    def stream(seconds: float, rate: float) -> list[tuple[float, float, float]]:
        """Send at ``rate``; returns (t, latency_ms, rss_mb) samples of processed poses."""
        with lock:
            start = len(events)
        t_start = time.monotonic()
        n = 0
        rss = []
        while True:
            now = time.monotonic()
            if now - t_start >= seconds:
                break
            due = t_start + n / rate
            if now < due:
                time.sleep(due - now)
            sock.sendall(msgs[n % len(msgs)])
            n += 1
            if n % int(rate) == 0:
                rss.append((time.monotonic() - t_start, rss_mb()))
        session.wait_idle(30)
        with lock:
            track = [e for e in events[start:] if e.kind == "tracking"]
        out = []
        for e in track:
            t = e.t_s
            r = min(rss, key=lambda x: abs(x[0] - (t - track[0].t_s)))[1] if rss else float("nan")
            out.append((t, e.data["latency_ms"], r))
        return out

    warm = stream(3.0, 60.0)
    lat = [x[1] for x in warm]
    print(f"TRANSFORM receive -> processed (60/s, 3 s warm-up, {len(lat)} poses): p50 "
          f"{statistics.median(lat):.2f} ms, p95 {np.percentile(lat, 95):.2f} ms, max "
          f"{max(lat):.2f} ms; baseline decode alone {t_dec / 200 * 1000:.3f} ms per message")
    rss0 = rss_mb()
    run = stream(args.seconds, 60.0)
    n = len(run)
    tenth = max(1, n // 10)
    first, last = run[:tenth], run[-tenth:]
    c = session.counters
    print(f"sustained 60 TRANSFORM/s for {args.seconds:.0f} s: {n} processed, "
          f"{c['transforms_coalesced']} coalesced; latency p50 first tenth "
          f"{statistics.median(x[1] for x in first):.2f} ms, last tenth "
          f"{statistics.median(x[1] for x in last):.2f} ms (p95 "
          f"{np.percentile([x[1] for x in first], 95):.2f} -> "
          f"{np.percentile([x[1] for x in last], 95):.2f} ms); RSS {rss0:.0f} MB at start, "
          f"{first[-1][2]:.0f} MB after the first tenth, {rss_mb():.0f} MB at the end")
    sock.close()
    srv.stop()
    session.stop()


if __name__ == "__main__":
    main()
