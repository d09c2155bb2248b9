"""The guidance session: one Qt-free object that live sources feed and views listen to.

Inputs (thread-safe, from any source thread):

* :meth:`GuidanceSession.submit_series` — a control scan (DICOM receiver, watch
  folder, replay) → read → patient check → rigid registration to the planning CT
  (optionally B-spline) → plan mapped into the scan → needle detection →
  deviation from the plan;
* :meth:`GuidanceSession.igtl_message` — OpenIGTLink TRANSFORM (tracked needle:
  deviation at tracking rate, latest pose per device wins when the peer floods),
  IMAGE (a volume is treated as a scan; slices are announced for display), POINT,
  STRING;
* :meth:`GuidanceSession.register_manual` — the point-pair fallback.

Outputs: :class:`LiveEvent` objects passed to every listener registered with
:meth:`GuidanceSession.connect` (called from the session's worker threads; a GUI
marshals them to its own thread). Every event is JSON-ready
(:meth:`LiveEvent.to_json`), so the headless CLI writes them as JSON lines. The
session never stops because of one input: a failure becomes a ``warning``,
``scan_rejected`` or ``registration_failed`` event and the last good state is
kept.

Frames: ``plan`` (planning CT, LPS mm), ``intraop`` (the control scan, LPS mm),
``tracker`` (the tracking system's reference, LPS after the RAS→LPS conversion
at the OpenIGTLink boundary). ``tracker_to_plan`` (4×4) maps tracker to plan
(identity when the peer sends poses already in the planning CT's patient frame).
A tracked TRANSFORM is ``needle_to_tracker``: its origin is the needle tip and
``tool_axis`` (default +z of the tool) points from the hub towards the tip.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ir_planner.core.errors import InputError, IRPlannerError
from ir_planner.core.plan import Plan, TrajectoryRecord
from ir_planner.core.volume import ImageVolume
from ir_planner.intraop.deviation import Deviation, NeedlePose, Thresholds, deviation
from ir_planner.intraop.dicom_receiver import SeriesArrival
from ir_planner.intraop.igtl import (
    ImageMessage,
    Message,
    PointMessage,
    StringMessage,
    TransformMessage,
    UnknownMessage,
)
from ir_planner.intraop.needle import NeedleDetection, detect_needles
from ir_planner.intraop.recorder import Recorder
from ir_planner.intraop.registration import (
    RegistrationError,
    RegistrationResult,
    RigidSettings,
    register_deformable,
    register_points,
    register_rigid,
)
from ir_planner.io.load import load_image
from ir_planner.planning.engine import PlanningEngine

__all__ = ["LiveEvent", "GuidanceSession", "GuidanceSettings", "EVENT_KINDS"]

#: Every event kind the session emits (see docs/live.md for their fields).
EVENT_KINDS = (
    "session_started", "session_stopped", "source", "warning", "series_received",
    "scan_rejected", "registration", "registration_failed", "plan_mapped", "needle",
    "deviation", "tracking", "tracking_stale", "tracking_resumed", "image", "points", "text",
)


@dataclass(frozen=True)
class LiveEvent:
    """One thing that happened in the session.

    Attributes
    ----------
    seq : int
        1, 2, 3… in emission order.
    kind : str
        One of :data:`EVENT_KINDS`.
    t_s : float
        Seconds since the session started (monotonic clock).
    t_wall : str
        ISO 8601 UTC time.
    data : dict
        Kind-specific, JSON-ready; keys carry units and frames.
    """

    seq: int
    kind: str
    t_s: float
    t_wall: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict (``seq``, ``kind``, ``t_s``, ``t_wall`` then the data)."""
        return {"seq": self.seq, "kind": self.kind, "t_s": round(self.t_s, 6),
                "t_wall": self.t_wall, **self.data}

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(self.to_dict(), default=_json_default)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


@dataclass
class GuidanceSettings:
    """Session options.

    Attributes
    ----------
    trajectory : str or None
        Planned trajectory to guide along (default: the first safe one, else the
        first caution, else the first).
    deformable : bool
        Refine each rigid registration with a B-spline.
    tracker_to_plan : array (4, 4)
        Tracker (LPS) → plan (LPS).
    tool_axis : tuple
        Needle direction (hub → tip) in the tracked tool's frame.
    stale_after_s : float
        A tracked device silent this long is reported stale.
    check_patient : bool
        Refuse scans whose PatientID differs from the plan's.
    metal_hu : float
        Needle detection threshold (HU).
    thresholds : Thresholds
    rigid : RigidSettings
    """

    trajectory: str | None = None
    deformable: bool = False
    tracker_to_plan: NDArray[np.float64] = field(default_factory=lambda: np.eye(4))
    tool_axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    stale_after_s: float = 1.0
    check_patient: bool = True
    metal_hu: float = 2000.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    rigid: RigidSettings = field(default_factory=RigidSettings)


def _r(v: ArrayLike, n: int = 3) -> list[float]:
    return [round(float(x), n) for x in np.asarray(v, dtype=float).ravel()]


def choose_trajectory(plan: Plan, name: str | None) -> TrajectoryRecord:
    """The trajectory to guide along (by name, else best verdict first)."""
    if name:
        return plan.trajectory(name)
    if not plan.trajectories:
        raise InputError("the plan has no trajectory to guide along; plan one first")
    for verdict in ("safe", "caution"):
        for t in plan.trajectories:
            if t.metrics.get("verdict") == verdict:
                return t
    return plan.trajectories[0]


class GuidanceSession:
    """The live guidance session (see the module docstring).

    Parameters
    ----------
    plan : Plan
    plan_ct : ImageVolume
        The planning CT (registration target, frame ``plan``).
    engine : PlanningEngine, optional
        The planning engine on the plan's labels: clearances of the needle. None
        (no labels) → deviation without clearances, with a warning.
    settings : GuidanceSettings, optional
    recorder : Recorder, optional
        Records every incoming message.
    """

    def __init__(self, plan: Plan, plan_ct: ImageVolume, *, engine: PlanningEngine | None = None,
                 settings: GuidanceSettings | None = None, recorder: Recorder | None = None
                 ) -> None:
        self.plan = plan
        self.plan_ct = plan_ct
        self.engine = engine
        self.settings = settings or GuidanceSettings()
        self.recorder = recorder
        self.trajectory = choose_trajectory(plan, self.settings.trajectory)
        t2p = np.asarray(self.settings.tracker_to_plan, dtype=float)
        if t2p.shape != (4, 4) or not np.all(np.isfinite(t2p)):
            raise InputError("tracker_to_plan must be a finite 4x4 matrix")
        axis = np.asarray(self.settings.tool_axis, dtype=float)
        if axis.shape != (3,) or not np.isfinite(axis).all() or np.linalg.norm(axis) < 1e-9:
            raise InputError(f"tool_axis must be a non-zero 3-vector; got {self.settings.tool_axis}")
        self._tool_axis = axis / np.linalg.norm(axis)
        self._listeners: list[Callable[[LiveEvent], None]] = []
        self._emit_lock = threading.Lock()
        self._seq = 0
        self._t0 = time.monotonic()
        self._scans: queue.Queue[SeriesArrival | tuple[str, ImageVolume] | None] = queue.Queue()
        self._poses: dict[str, tuple[NDArray[np.float64], float, str]] = {}
        self._pose_cv = threading.Condition()
        self._last_pose_t: dict[str, float] = {}
        self._stale: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # state (read by views; replaced whole, never mutated in place)
        self.registration: RegistrationResult | None = None
        self.scan: ImageVolume | None = None
        self.detection: NeedleDetection | None = None
        self.last_deviation: Deviation | None = None
        self.tracked: dict[str, Deviation] = {}
        self.counters: dict[str, int] = {"transforms": 0, "transforms_processed": 0,
                                         "transforms_coalesced": 0, "scans": 0, "problems": 0}

    # -- events -------------------------------------------------------------------------
    def connect(self, listener: Callable[[LiveEvent], None]) -> None:
        """Call ``listener(event)`` for every event (from the session's threads)."""
        self._listeners.append(listener)

    def disconnect(self, listener: Callable[[LiveEvent], None]) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, kind: str, **data: Any) -> LiveEvent:
        """Emit an event to every listener (a failing listener is dropped from that call)."""
        with self._emit_lock:
            self._seq += 1
            ev = LiveEvent(self._seq, kind, time.monotonic() - self._t0,
                           datetime.now(UTC).isoformat(), data)
            for cb in list(self._listeners):
                try:
                    cb(ev)
                except Exception:  # noqa: BLE001 - a view's bug must not stop guidance
                    traceback.print_exc()
        return ev

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> "GuidanceSession":
        """Start the worker threads and announce the session."""
        for name, fn in (("guidance-scans", self._scan_worker),
                         ("guidance-tracking", self._tracking_worker),
                         ("guidance-watchdog", self._watchdog)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        t = self.trajectory
        self.emit("session_started", trajectory=t.name, entry_plan_lps_mm=_r(t.entry_lps),
                  target_plan_lps_mm=_r(t.target_lps), patient_id=self.plan.case.patient_id,
                  clearances=self.engine is not None,
                  tracker_to_plan=np.asarray(self.settings.tracker_to_plan).tolist(),
                  tool_axis=list(self._tool_axis))
        if self.engine is None:
            self.emit("warning", source="session", reason="no-labels",
                      detail="no label map: deviation is shown without clearances to structures")
        return self

    def stop(self, *, drain: bool = True, timeout_s: float = 120.0) -> None:
        """Stop (after processing scans already queued when ``drain``)."""
        if drain:
            deadline = time.monotonic() + timeout_s
            while self._scans.unfinished_tasks and time.monotonic() < deadline:
                time.sleep(0.05)
        self._stop.set()
        self._scans.put(None)
        with self._pose_cv:
            self._pose_cv.notify_all()
        for t in self._threads:
            t.join(timeout=5.0)
        self.emit("session_stopped", counters=dict(self.counters))

    def wait_idle(self, timeout_s: float = 120.0) -> bool:
        """Wait until queued scans and poses are processed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._pose_cv:
                poses = bool(self._poses)
            if not self._scans.unfinished_tasks and not poses:
                return True
            time.sleep(0.02)
        return False

    # -- source callbacks ---------------------------------------------------------------
    def source_status(self, source: str, kind: str, detail: str) -> None:
        """A source's connection state or problem (becomes a ``source``/``warning`` event)."""
        problems = {"malformed", "oversized", "refused", "rejected", "store-failed", "aborted",
                    "skipped", "watch-error", "unreachable", "replay"}
        if kind in problems or "mid-message" in detail or "stalled" in detail:
            self.counters["problems"] += 1
            self.emit("warning", source=source, reason=kind, detail=detail)
        else:
            self.emit("source", source=source, state=kind, detail=detail)

    def submit_series(self, arrival: SeriesArrival) -> None:
        """Queue a control scan that has arrived (any thread)."""
        if self.recorder is not None:
            self.recorder.series(arrival)
        self._scans.put(arrival)

    def submit_volume(self, volume: ImageVolume, source: str = "api") -> None:
        """Queue a control-scan volume already in memory."""
        self._scans.put((source, volume))

    # IgtlSink
    def raw(self, peer: str, data: bytes, t_mono: float, complete: bool) -> None:
        """Recorder hook for OpenIGTLink bytes."""
        if self.recorder is not None:
            self.recorder.igtl(peer, data, complete=complete)

    def message(self, peer: str, msg: Message, t_mono: float) -> None:
        """A decoded OpenIGTLink message."""
        self.igtl_message(peer, msg, t_mono)

    def status(self, kind: str, detail: str) -> None:
        """OpenIGTLink connection state or problem."""
        self.source_status("igtl", kind, detail)

    def igtl_problem(self, kind: str, detail: str) -> None:
        """A problem found while replaying."""
        self.source_status("igtl", kind, detail)

    def igtl_message(self, peer: str, msg: Message, t_mono: float) -> None:
        """Dispatch a decoded OpenIGTLink message."""
        if isinstance(msg, TransformMessage):
            self.counters["transforms"] += 1
            with self._pose_cv:
                if msg.device in self._poses:
                    self.counters["transforms_coalesced"] += 1
                self._poses[msg.device] = (msg.matrix_lps, t_mono, peer)
                self._pose_cv.notify()
        elif isinstance(msg, ImageMessage):
            vol = ImageVolume(msg.array, msg.ijk_to_lps, modality="",
                              metadata={"source": f"OpenIGTLink {msg.device} from {peer}"})
            self.emit("image", device=msg.device, peer=peer, size_ijk=list(vol.shape_ijk),
                      spacing_mm=_r(vol.spacing_mm), origin_lps_mm=_r(vol.origin_lps),
                      frame_on_wire=msg.frame)
            if vol.shape[0] >= 8:
                self.submit_volume(vol, f"igtl:{msg.device}")
        elif isinstance(msg, PointMessage):
            self.emit("points", device=msg.device, peer=peer, names=list(msg.names),
                      positions_lps_mm=[_r(p) for p in msg.positions_lps])
        elif isinstance(msg, StringMessage):
            self.emit("text", device=msg.device, peer=peer, text=msg.text[:1000])
        elif isinstance(msg, UnknownMessage):
            self.counters["problems"] += 1
            self.emit("warning", source="igtl", reason="unknown-type",
                      detail=f"{peer}: message type {msg.type!r} from {msg.device!r} "
                      f"({msg.size} bytes) is not handled; skipped")

    # -- scans ---------------------------------------------------------------------------
    def _scan_worker(self) -> None:
        while True:
            job = self._scans.get()
            try:
                if job is None:
                    return
                self._process_scan(job)
            except Exception as exc:  # noqa: BLE001 - one scan must not end the session
                self.emit("scan_rejected", reason="internal-error",
                          detail=f"{type(exc).__name__}: {exc}")
            finally:
                self._scans.task_done()

    def _read(self, job: SeriesArrival | tuple[str, ImageVolume]) -> tuple[ImageVolume, str] | None:
        if isinstance(job, tuple):
            return job[1], job[0]
        self.emit("series_received", **job.to_dict())
        try:
            if job.folder.is_file():  # an image file from the watch folder
                vol = load_image(job.folder)
            else:
                vol = load_image(job.folder, series_uid=job.series_uid or None)
        except IRPlannerError as exc:
            self.emit("scan_rejected", reason="unreadable", series_uid=job.series_uid,
                      detail=str(exc))
            return None
        return vol, job.source

    def _process_scan(self, job: SeriesArrival | tuple[str, ImageVolume]) -> None:
        got = self._read(job)
        if got is None:
            return
        vol, source = got
        self.counters["scans"] += 1
        expected = self.plan.case.patient_id
        pid = str(vol.metadata.get("patient_id", "") or
                  (job.patient_id if isinstance(job, SeriesArrival) else ""))
        if self.settings.check_patient and expected and pid and pid != expected:
            self.emit("scan_rejected", reason="other-patient", series_uid=vol.series_uid,
                      detail=f"scan of patient {pid!r}, plan is for {expected!r}: not registered "
                      "and not overlaid; the last good state is kept")
            return
        if self.settings.check_patient and not (expected and pid):
            self.emit("warning", source=source, reason="patient-unverified",
                      detail="patient identity not verified: "
                      + ("the plan has no patient ID" if not expected else "the scan has no "
                         "PatientID") + "; check that this scan is of the planned patient")
        if vol.modality and vol.modality not in ("CT", "OT"):
            self.emit("warning", source=source, reason="modality",
                      detail=f"{vol.modality} scan: needle detection expects CT (HU)")
        target_plan = np.asarray(self.trajectory.target_lps, dtype=float)
        reg = self._register(vol, target_plan)
        if reg is None:
            return
        self.registration, self.scan = reg, vol
        self.emit("registration", series_uid=vol.series_uid, source=source, **reg.to_dict())
        self._emit_mapped(reg)
        target_i = reg.to_intraop(target_plan)
        det = detect_needles(vol, metal_hu=self.settings.metal_hu,
                             needle_diameter_mm=self._needle_diameter(),
                             expected_target_lps=target_i)
        self.detection = det
        needles = []
        for n in det.needles:
            tip_p = reg.to_plan(np.asarray(n.tip_lps))
            hub_p = reg.to_plan(np.asarray(n.hub_end_lps))
            skin_p = None if n.skin_lps is None else reg.to_plan(np.asarray(n.skin_lps))
            axis_p = (tip_p - hub_p) / max(float(np.linalg.norm(tip_p - hub_p)), 1e-9)
            needles.append({**n.to_dict(), "tip_plan_lps_mm": _r(tip_p),
                            "axis_plan": _r(axis_p, 5),
                            "skin_plan_lps_mm": None if skin_p is None else _r(skin_p)})
        self.emit("needle", series_uid=vol.series_uid, count=len(det.needles), needles=needles,
                  other_metal_voxels=det.other_metal_voxels, warnings=list(det.warnings))
        for w in det.warnings:
            self.emit("warning", source="needle", reason="needle", detail=w)
        if det.needle is None:
            return
        n = det.needle
        tip_p = reg.to_plan(np.asarray(n.tip_lps))
        hub_p = reg.to_plan(np.asarray(n.hub_end_lps))
        skin_p = None if n.skin_lps is None else reg.to_plan(np.asarray(n.skin_lps))
        pose = NeedlePose.from_points(hub_p, tip_p, source="detected", skin_lps=skin_p)
        dev = self._deviation(pose)
        self.last_deviation = dev
        self.emit("deviation", series_uid=vol.series_uid, **dev.to_dict())

    def _needle_diameter(self) -> float:
        if self.engine is not None:
            return float(self.engine.needle.outer_radius_mm * 2.0)
        return 1.47

    def _register(self, vol: ImageVolume, target_plan: NDArray[np.float64]
                  ) -> RegistrationResult | None:
        starts: list[tuple[str, NDArray[np.float64] | None]] = [("identity", None)]
        if self.registration is not None:
            starts.insert(0, ("last good", self.registration.intraop_to_plan))
        last_reason = ""
        for label, init in starts:
            try:
                reg = register_rigid(vol, self.plan_ct, target_plan_lps=target_plan,
                                     initial_intraop_to_plan=init, settings=self.settings.rigid)
            except (RegistrationError, InputError) as exc:
                last_reason = str(exc)
                continue
            if reg.ok:
                if self.settings.deformable:
                    try:
                        d = register_deformable(vol, self.plan_ct, reg, target_plan_lps=target_plan)
                        if d.ok:
                            return d
                        self.emit("warning", source="registration", reason="deformable",
                                  detail="B-spline refinement rejected; using the rigid result")
                    except RegistrationError as exc:
                        self.emit("warning", source="registration", reason="deformable",
                                  detail=str(exc))
                return reg
            last_reason = "; ".join(reg.warnings) or "quality too low"
            if label == "last good":
                continue
        self.emit("registration_failed", series_uid=vol.series_uid, reason=last_reason,
                  detail="the scan did not register to the planning CT; nothing is overlaid and "
                  "the last good registration is kept" + (
                      "" if self.registration is None else
                      f" (method {self.registration.method})"),
                  kept_last_good=self.registration is not None)
        return None

    def _emit_mapped(self, reg: RegistrationResult) -> None:
        trajectories = {}
        for t in self.plan.trajectories:
            trajectories[t.name] = {"entry_intraop_lps_mm": _r(reg.to_intraop(t.entry_lps)),
                                    "target_intraop_lps_mm": _r(reg.to_intraop(t.target_lps))}
        ablations = []
        for a in self.plan.ablations:
            tip = a.metrics.get("tip_lps")
            if tip is not None:
                ablations.append({"trajectory": a.trajectory, "device_id": a.device_id,
                                  "tip_intraop_lps_mm": _r(reg.to_intraop(tip))})
        target = self.plan.target_lps or self.trajectory.target_lps
        self.emit("plan_mapped", target_intraop_lps_mm=_r(reg.to_intraop(target)),
                  trajectories=trajectories, ablations=ablations)

    def register_manual(self, intraop_points_lps: ArrayLike, plan_points_lps: ArrayLike
                        ) -> RegistrationResult:
        """Point-pair registration of the current scan (the fallback); re-detects the needle."""
        reg = register_points(intraop_points_lps, plan_points_lps)
        if not reg.ok:
            self.emit("registration_failed", reason="; ".join(reg.warnings),
                      detail="manual registration not applied", kept_last_good=True)
            return reg
        self.registration = reg
        self.emit("registration", series_uid=self.scan.series_uid if self.scan else "",
                  source="manual", **reg.to_dict())
        self._emit_mapped(reg)
        return reg

    def _deviation(self, pose: NeedlePose) -> Deviation:
        t = self.trajectory
        return deviation(pose, t.entry_lps, t.target_lps, trajectory=t.name, engine=self.engine,
                         thresholds=self.settings.thresholds)

    # -- tracking ------------------------------------------------------------------------
    def _tracking_worker(self) -> None:
        while not self._stop.is_set():
            with self._pose_cv:
                while not self._poses and not self._stop.is_set():
                    self._pose_cv.wait(0.2)
                if self._stop.is_set():
                    return
                device, (m_lps, t_recv, peer) = next(iter(self._poses.items()))
                del self._poses[device]
            try:
                self._process_pose(device, m_lps, t_recv, peer)
            except Exception as exc:  # noqa: BLE001
                self.emit("warning", source="tracking", reason="internal-error",
                          detail=f"{device}: {type(exc).__name__}: {exc}")

    def _process_pose(self, device: str, needle_to_tracker: NDArray[np.float64], t_recv: float,
                      peer: str) -> None:
        m = np.asarray(self.settings.tracker_to_plan, dtype=float) @ needle_to_tracker
        tip = m[:3, 3]
        axis = m[:3, :3] @ self._tool_axis
        norm = float(np.linalg.norm(axis))
        if norm < 1e-9:
            self.emit("warning", source="tracking", reason="degenerate",
                      detail=f"{device}: transform maps the needle axis to zero; ignored")
            return
        axis = axis / norm
        pose = NeedlePose(tuple(float(v) for v in tip), tuple(float(v) for v in axis),  # type: ignore[arg-type]
                          None, "tracked")
        dev = self._deviation(pose)
        self.tracked[device] = dev
        self._last_pose_t[device] = time.monotonic()
        if device in self._stale:
            self._stale.discard(device)
            self.emit("tracking_resumed", device=device)
        self.counters["transforms_processed"] += 1
        latency_ms = (time.monotonic() - t_recv) * 1000.0
        self.emit("tracking", device=device, peer=peer, latency_ms=round(latency_ms, 3),
                  **dev.to_dict())

    def _watchdog(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for device, t in list(self._last_pose_t.items()):
                if device not in self._stale and now - t > self.settings.stale_after_s:
                    self._stale.add(device)
                    self.emit("tracking_stale", device=device,
                              silent_s=round(now - t, 2),
                              detail=f"no pose from {device} for {now - t:.1f} s: the needle "
                              "shown is not live")


def angle_deg(a: ArrayLike, b: ArrayLike) -> float:
    """Angle between two directions (degrees, 0–180)."""
    u = np.asarray(a, dtype=float)
    v = np.asarray(b, dtype=float)
    c = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))
