"""Deviation of a needle (detected or tracked) from the planned trajectory.

All inputs and outputs are in the planning frame (LPS mm): a detected needle is
mapped there with the registration first. The clearances of the current needle
(skin → tip) and of the needle extended along its own axis to its closest
approach to the target are computed by the planning engine
(:meth:`~ir_planner.planning.engine.PlanningEngine.evaluate`), so the safety rules
are the planner's, not a second copy.

Definitions (``tip``, unit ``axis`` towards the tip; planned ``entry``, ``target``)
------------------------------------------------------------------------------------
* ``tip_to_target_mm``: |target − tip|.
* ``remaining_depth_mm``: (target − tip)·axis, how much further the needle must
  go along its own axis to be level with the target (negative: past it).
* ``target_lateral_mm``: distance of the target from the needle's axis line.
* ``predicted_miss_mm``: the distance by which the needle misses the target if
  advanced along its axis: ``target_lateral_mm`` when the target is ahead, else
  the tip-to-target distance (pushing further only moves away).
* ``angle_to_plan_deg``: between the needle axis and the planned direction.
* ``tip_off_plan_mm``: distance of the tip from the planned path line;
  ``tip_depth_error_mm``: tip position along the planned path relative to the
  target (+ = beyond the target).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ir_planner.core.errors import InputError, IRPlannerError
from ir_planner.planning.engine import PlanningEngine
from ir_planner.planning.metrics import TrajectoryMetrics

__all__ = ["NeedlePose", "Deviation", "ClearanceCheck", "deviation", "Thresholds"]


@dataclass(frozen=True)
class NeedlePose:
    """A needle in the planning frame: tip and unit axis (towards the tip), LPS mm.

    ``skin_lps`` (optional) is where it enters the patient; ``source`` says where
    the pose came from ("detected", "tracked", "truth").
    """

    tip_lps: tuple[float, float, float]
    axis: tuple[float, float, float]
    skin_lps: tuple[float, float, float] | None = None
    source: str = "detected"

    @classmethod
    def from_points(cls, hub_or_entry_lps: ArrayLike, tip_lps: ArrayLike, *,
                    source: str = "detected", skin_lps: ArrayLike | None = None
                    ) -> "NeedlePose":
        """Pose from two points on the needle (entry/hub end and tip)."""
        a = np.asarray(hub_or_entry_lps, dtype=float).reshape(3)
        b = np.asarray(tip_lps, dtype=float).reshape(3)
        d = b - a
        n = float(np.linalg.norm(d))
        if not math.isfinite(n) or n < 1e-6:
            raise InputError("needle pose: the two points coincide or are not finite")
        u = d / n
        skin = None if skin_lps is None else tuple(float(v) for v in np.asarray(skin_lps).reshape(3))
        return cls(tuple(float(v) for v in b), tuple(float(v) for v in u),  # type: ignore[arg-type]
                   skin, source)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Thresholds:
    """Alert thresholds (mm, degrees) for the procedure-room display."""

    miss_warn_mm: float = 3.0
    miss_alert_mm: float = 5.0
    angle_warn_deg: float = 5.0
    angle_alert_deg: float = 10.0


@dataclass
class ClearanceCheck:
    """Planning-engine verdict and closest forbidden structure for one needle segment."""

    segment: str
    verdict: str | None
    closest_forbidden: str | None
    clearance_mm: float | None
    crossed_forbidden: list[str] = field(default_factory=list)
    tip_in: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"segment": self.segment, "verdict": self.verdict,
                "closest_forbidden": self.closest_forbidden,
                "clearance_mm": None if self.clearance_mm is None else round(self.clearance_mm, 2),
                "crossed_forbidden": list(self.crossed_forbidden), "tip_in": list(self.tip_in),
                "note": self.note}


@dataclass
class Deviation:
    """Deviation metrics of one needle pose against one planned trajectory."""

    trajectory: str
    source: str
    tip_lps: tuple[float, float, float]
    axis: tuple[float, float, float]
    tip_to_target_mm: float
    remaining_depth_mm: float
    target_lateral_mm: float
    predicted_miss_mm: float
    angle_to_plan_deg: float
    tip_off_plan_mm: float
    tip_depth_error_mm: float
    extended_tip_lps: tuple[float, float, float]
    current: ClearanceCheck | None = None
    extended: ClearanceCheck | None = None
    level: str = "ok"
    alerts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (keys carry units and frames)."""
        def r(v: Any) -> list[float]:
            return [round(float(x), 3) for x in v]

        return {"trajectory": self.trajectory, "source": self.source,
                "tip_plan_lps_mm": r(self.tip_lps), "axis_plan": [round(v, 5) for v in self.axis],
                "tip_to_target_mm": round(self.tip_to_target_mm, 2),
                "remaining_depth_mm": round(self.remaining_depth_mm, 2),
                "target_lateral_mm": round(self.target_lateral_mm, 2),
                "predicted_miss_mm": round(self.predicted_miss_mm, 2),
                "angle_to_plan_deg": round(self.angle_to_plan_deg, 2),
                "tip_off_plan_mm": round(self.tip_off_plan_mm, 2),
                "tip_depth_error_mm": round(self.tip_depth_error_mm, 2),
                "extended_tip_plan_lps_mm": r(self.extended_tip_lps),
                "clearance_current": None if self.current is None else self.current.to_dict(),
                "clearance_extended": None if self.extended is None else self.extended.to_dict(),
                "level": self.level, "alerts": list(self.alerts)}


def _check(engine: PlanningEngine, start: NDArray[np.float64], end: NDArray[np.float64],
           segment: str) -> ClearanceCheck:
    """The engine's verdict for the straight needle start → end (skin or hub → tip)."""
    tip_in = engine.labels_at(end)
    try:
        m: TrajectoryMetrics = engine.evaluate(start, end, check_entry=False,
                                               structures="forbidden")
    except IRPlannerError as exc:
        # e.g. the tip lies inside a forbidden structure or outside the planning CT:
        # the engine refuses it as a *plan*; for a needle in place that is an alert.
        bad = [n for n in tip_in if engine.structure(n).forbidden]
        return ClearanceCheck(segment, "unsafe" if bad else None, bad[0] if bad else None,
                              None, bad, tip_in, note=str(exc))
    near = m.min_forbidden_clearance()
    crossed = [c.name for c in m.crossings if c.forbidden]
    return ClearanceCheck(segment, m.verdict.value, near[0] if near else None,
                          near[1] if near else None, crossed, tip_in)


def deviation(pose: NeedlePose, entry_lps: ArrayLike, target_lps: ArrayLike, *,
              trajectory: str = "plan", engine: PlanningEngine | None = None,
              thresholds: Thresholds | None = None) -> Deviation:
    """Deviation metrics of ``pose`` against the planned path entry → target.

    Parameters
    ----------
    pose : NeedlePose
        In the planning frame.
    entry_lps, target_lps : array_like (3,)
        The planned trajectory (planning LPS mm).
    trajectory : str
        Its name (for the read-out).
    engine : PlanningEngine, optional
        When given, the clearances of the current needle (skin, or 150 mm back
        along the axis, → tip) and of the needle extended to its closest approach
        to the target.
    thresholds : Thresholds, optional
        Alert levels.
    """
    th = thresholds or Thresholds()
    tip = np.asarray(pose.tip_lps, dtype=float)
    u = np.asarray(pose.axis, dtype=float)
    u = u / np.linalg.norm(u)
    entry = np.asarray(entry_lps, dtype=float)
    target = np.asarray(target_lps, dtype=float)
    d = target - entry
    if float(np.linalg.norm(d)) < 1e-6:
        raise InputError(f"trajectory {trajectory}: entry and target coincide")
    d = d / np.linalg.norm(d)
    rel = target - tip
    along = float(rel @ u)
    lateral = float(np.linalg.norm(rel - along * u))
    dist = float(np.linalg.norm(rel))
    miss = lateral if along >= 0 else dist
    angle = math.degrees(math.acos(float(np.clip(u @ d, -1.0, 1.0))))
    rel_plan = tip - target
    depth_err = float(rel_plan @ d)
    off = float(np.linalg.norm(rel_plan - depth_err * d))
    ext = tip + max(along, 0.0) * u
    dev = Deviation(trajectory, pose.source, pose.tip_lps, tuple(float(v) for v in u),  # type: ignore[arg-type]
                    dist, along, lateral, miss, angle, off, depth_err,
                    tuple(float(v) for v in ext))  # type: ignore[arg-type]
    if engine is not None:
        start = np.asarray(pose.skin_lps, float) if pose.skin_lps is not None else tip - 150.0 * u
        start = start - 2.0 * u  # from just outside the skin
        dev.current = _check(engine, start, tip, "current")
        if along > 0.5:
            dev.extended = _check(engine, start, ext, "extended")
    level = "ok"
    if miss > th.miss_warn_mm or angle > th.angle_warn_deg:
        level = "warning"
    if miss > th.miss_alert_mm or angle > th.angle_alert_deg:
        level = "alert"
    if along < -1.0:
        dev.alerts.append(f"the tip is {-along:.1f} mm past the target level")
        level = "alert" if dist > th.miss_alert_mm else max(level, "warning", key=_rank)
    if miss > th.miss_warn_mm:
        dev.alerts.append(f"predicted miss {miss:.1f} mm if advanced along the current axis")
    if angle > th.angle_warn_deg:
        dev.alerts.append(f"needle {angle:.1f}° off the planned direction")
    for chk in (dev.current, dev.extended):
        if chk is None:
            continue
        if chk.verdict == "unsafe":
            level = "alert"
            what = ", ".join(chk.crossed_forbidden) or (chk.closest_forbidden or "?")
            dev.alerts.append(f"{chk.segment} needle: unsafe ({what}"
                              + (f", clearance {chk.clearance_mm:.1f} mm" if chk.clearance_mm
                                 is not None else "") + ")")
        elif chk.verdict == "caution":
            level = max(level, "warning", key=_rank)
            dev.alerts.append(f"{chk.segment} needle: caution near {chk.closest_forbidden} "
                              f"({chk.clearance_mm:.1f} mm)" if chk.clearance_mm is not None
                              else f"{chk.segment} needle: caution")
    dev.level = level
    return dev


def _rank(level: str) -> int:
    return {"ok": 0, "warning": 1, "alert": 2}.get(level, 0)
