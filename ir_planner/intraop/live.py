"""Building a guidance session from a plan file, and writing its events as JSON lines."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO, Any

from ir_planner.core.errors import InputError, IRPlannerError, PlanError
from ir_planner.core.plan import Plan
from ir_planner.intraop.recorder import Recorder
from ir_planner.intraop.session import GuidanceSession, GuidanceSettings, LiveEvent
from ir_planner.io.load import load_image
from ir_planner.io.segmentation import load_labels
from ir_planner.planning.devices import DEFAULT_NEEDLE, Needle
from ir_planner.planning.engine import PlanningEngine

__all__ = ["build_session", "EventLog", "describe"]


def _needle(plan: Plan) -> Needle:
    info = plan.settings.get("planning", {}).get("needle") if isinstance(
        plan.settings.get("planning"), dict) else None
    if isinstance(info, dict) and "gauge" in info:
        try:
            return Needle(gauge=int(info["gauge"]),
                          usable_length_mm=float(info.get("usable_length_mm",
                                                          DEFAULT_NEEDLE.usable_length_mm)))
        except (IRPlannerError, TypeError, ValueError):
            pass
    return DEFAULT_NEEDLE


def build_session(plan_path: str | os.PathLike[str], *, trajectory: str | None = None,
                  deformable: bool = False, stale_after_s: float = 1.0,
                  recorder: Recorder | None = None, progress_out: IO[str] | None = None
                  ) -> GuidanceSession:
    """A :class:`GuidanceSession` for a plan file: its planning CT, labels and engine.

    Raises
    ------
    PlanError, ImageReadError, InputError
        Unreadable plan, missing planning CT, unknown trajectory.
    """
    plan = Plan.load(plan_path)
    if not plan.case.image_path:
        raise PlanError(f"plan {plan_path}: it names no planning CT (case.image_path)")
    base = Path(plan_path).resolve().parent

    def resolve(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else base / q

    def say(msg: str) -> None:
        if progress_out is not None:
            progress_out.write(msg + "\n")
            progress_out.flush()

    say(f"loading the planning CT {plan.case.image_path}")
    image = load_image(resolve(plan.case.image_path))
    engine = None
    if plan.case.labels_path:
        say(f"loading labels {plan.case.labels_path} and preparing the planning engine")
        labels = load_labels(resolve(plan.case.labels_path), image=image)
        engine = PlanningEngine(image, labels, overrides=plan.structure_overrides,
                                needle=_needle(plan))
    settings = GuidanceSettings(trajectory=trajectory, deformable=deformable,
                                stale_after_s=stale_after_s)
    return GuidanceSession(plan, image, engine=engine, settings=settings, recorder=recorder)


def describe(event: LiveEvent) -> str:
    """A one-line human summary of an event (for a terminal)."""
    d = event.data
    if event.kind in ("deviation", "tracking"):
        return (f"{event.kind} ({d['source']}): tip {d['tip_to_target_mm']:.1f} mm from target, "
                f"{d['remaining_depth_mm']:+.1f} mm to go, predicted miss "
                f"{d['predicted_miss_mm']:.1f} mm, {d['angle_to_plan_deg']:.1f}° off plan "
                f"[{d['level']}]")
    if event.kind == "registration":
        q = d["quality"]
        return (f"registration ({d['method']}): {d['rotation_deg']:.2f}°, "
                f"{d['translation_mm']:.1f} mm, NCC {q.get('ncc')}, ok={d['ok']}")
    if event.kind == "needle":
        return f"needle: {d['count']} found" + (f" ({'; '.join(d['warnings'])})"
                                                if d["warnings"] else "")
    return f"{event.kind}: " + str(d.get("detail") or d.get("reason") or d.get("state") or "")


class EventLog:
    """Writes each event as one JSON line to a new file (flushed per line).

    ``echo`` (a text stream) also gets a one-line summary of every event except
    tracking updates (too many).
    """

    def __init__(self, path: str | os.PathLike[str], *, echo: IO[str] | None = None) -> None:
        self.path = Path(path)
        try:
            self._fh = self.path.open("x", encoding="utf-8")
        except FileExistsError:
            raise InputError(f"--events {self.path}: the file exists; choose a new file (event "
                             "logs are never overwritten)") from None
        except OSError as exc:
            raise InputError(f"--events {self.path}: cannot create it ({exc.strerror or exc})"
                             ) from exc
        self.echo = echo
        self._lock = threading.Lock()
        self.count = 0

    def write(self, event: LiveEvent) -> None:
        """Append one event."""
        line = event.to_json()
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line + "\n")
            self._fh.flush()
            self.count += 1
        if self.echo is not None and event.kind != "tracking":
            try:
                self.echo.write(describe(event) + "\n")
                self.echo.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._fh.close()

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
