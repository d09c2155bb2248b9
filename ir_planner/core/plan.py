"""The one planning-state object shared by the GUI, the CLI and the live session.

:class:`Plan` is a versioned, JSON-serialisable pydantic model. All changes go
through :meth:`Plan.apply` (or helpers built on it), which records an undo step
and emits :attr:`Plan.changed` so views update. Saving is atomic: a plan file is
either the old one or the complete new one, never half-written.

All coordinates are LPS millimetres.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ir_planner.core.errors import PlanError
from ir_planner.core.fileio import atomic_write_text, register_input
from ir_planner.core.jsonfile import JsonFileError, condense_validation_error, read_json_file

__all__ = [
    "PLAN_SCHEMA_VERSION",
    "Plan",
    "CaseRef",
    "StructureOverride",
    "TrajectoryRecord",
    "AblationRecord",
]

PLAN_SCHEMA_VERSION = 1
#: Largest plan file read (a plan with many trajectories is well under 1 MiB).
MAX_PLAN_BYTES = 32 * 2**20

Vec3 = tuple[float, float, float]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class CaseRef(_Model):
    """Where the images the plan was made on came from."""

    image_path: str = ""
    labels_path: str = ""
    names_path: str = ""
    series_uid: str = ""
    study_uid: str = ""
    patient_id: str = ""
    description: str = ""


class StructureOverride(_Model):
    """A user's override of a structure's planning defaults (None = keep default)."""

    forbidden: bool | None = None
    margin_mm: float | None = Field(default=None, ge=0, le=100)
    category: str | None = None


class TrajectoryRecord(_Model):
    """A needle trajectory with its metrics.

    ``metrics`` holds the planning engine's full result (length_mm, angles in
    degrees, clearance per structure in mm keyed by name, crossed structures,
    verdict and reasons); keys carry their units.
    """

    name: str
    entry_lps: Vec3
    target_lps: Vec3
    needle: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    source: str = "manual"  # "manual" | "auto" | "intraop"


class AblationRecord(_Model):
    """An ablation zone placed on a trajectory, with its settings and metrics."""

    trajectory: str
    device_id: str
    setting: str = ""
    tip_depth_offset_mm: float = 0.0
    calibration: float = 1.0
    metrics: dict[str, Any] = Field(default_factory=dict)


class Plan(_Model):
    """All planning state for one case.

    Examples
    --------
    >>> plan = Plan()
    >>> plan.add_trajectory(TrajectoryRecord(name="T1", entry_lps=(0, 0, 0),
    ...                                       target_lps=(0, 50, 0)))
    >>> plan.undo()
    True
    >>> plan.trajectories
    []
    """

    schema_version: int = PLAN_SCHEMA_VERSION
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    software: str = "ir-planner"
    case: CaseRef = Field(default_factory=CaseRef)
    target_structure: str = ""
    target_lps: Vec3 | None = None
    structure_overrides: dict[str, StructureOverride] = Field(default_factory=dict)
    trajectories: list[TrajectoryRecord] = Field(default_factory=list)
    ablations: list[AblationRecord] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    notes: str = ""

    _undo: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    _redo: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    _listeners: list[Callable[[str], None]] = PrivateAttr(default_factory=list)

    # -- events ---------------------------------------------------------------------
    def connect(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(what)`` after every change (``what`` names the change)."""
        self._listeners.append(callback)

    def disconnect(self, callback: Callable[[str], None]) -> None:
        """Stop calling ``callback``."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _emit(self, what: str) -> None:
        for cb in list(self._listeners):
            cb(what)

    # -- changes with undo -------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def _restore(self, state: dict[str, Any]) -> None:
        restored = Plan.model_validate(state)
        for name in type(self).model_fields:
            object.__setattr__(self, name, getattr(restored, name))

    def apply(self, what: str, change: Callable[["Plan"], None]) -> None:
        """Apply ``change(plan)`` as one undoable step named ``what``.

        If ``change`` raises, the plan is left exactly as it was.
        """
        before = self._state()
        try:
            change(self)
            Plan.model_validate(self._state())
        except ValidationError as exc:
            self._restore(before)
            raise PlanError(f"{what}: invalid plan change: {exc}") from exc
        except Exception:
            self._restore(before)
            raise
        self._undo.append(before)
        self._redo.clear()
        self._emit(what)

    def undo(self) -> bool:
        """Revert the last change; False if there is nothing to undo."""
        if not self._undo:
            return False
        self._redo.append(self._state())
        self._restore(self._undo.pop())
        self._emit("undo")
        return True

    def redo(self) -> bool:
        """Re-apply the last undone change; False if there is nothing to redo."""
        if not self._redo:
            return False
        self._undo.append(self._state())
        self._restore(self._redo.pop())
        self._emit("redo")
        return True

    def add_trajectory(self, record: TrajectoryRecord) -> None:
        """Add or replace (same name) a trajectory, undoably."""

        def change(plan: Plan) -> None:
            plan.trajectories = [t for t in plan.trajectories if t.name != record.name] + [record]

        self.apply(f"trajectory {record.name}", change)

    def trajectory(self, name: str) -> TrajectoryRecord:
        """The trajectory called ``name``."""
        for t in self.trajectories:
            if t.name == name:
                return t
        names = ", ".join(t.name for t in self.trajectories) or "(none)"
        raise PlanError(f"no trajectory named {name!r} in the plan; available: {names}")

    def set_override(self, structure: str, **values: Any) -> None:
        """Override a structure's forbidden flag, margin (mm) or category, undoably."""

        def change(plan: Plan) -> None:
            current = plan.structure_overrides.get(structure, StructureOverride())
            merged = current.model_copy(update=values)
            plan.structure_overrides = {**plan.structure_overrides,
                                        structure: StructureOverride.model_validate(
                                            merged.model_dump())}

        self.apply(f"override {structure}", change)

    # -- files ----------------------------------------------------------------------------
    def to_json(self) -> str:
        """The plan as indented JSON text."""
        return json.dumps(self._state(), indent=2)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan atomically (temporary file + rename) and return the path."""
        out = Path(path)
        if out.is_dir():
            raise PlanError(f"cannot save plan to {out}: it is a directory")
        if not out.parent.exists():
            raise PlanError(f"cannot save plan to {out}: folder {out.parent} does not exist")
        return atomic_write_text(out, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Plan":
        """Read a plan file, with a clear error for missing, non-JSON or invalid files."""
        p = Path(path)
        if not p.exists():
            raise PlanError(f"plan file {p} does not exist")
        try:  # size limit before reading; duplicate keys refused
            data = read_json_file(p, what="plan file", max_bytes=MAX_PLAN_BYTES, allow_nan=True)
        except JsonFileError as exc:
            raise PlanError(str(exc)) from exc
        register_input(p)
        if not isinstance(data, dict):
            raise PlanError(f"plan file {p} does not hold a JSON object")
        version = data.get("schema_version")
        if version != PLAN_SCHEMA_VERSION:
            raise PlanError(
                f"plan file {p} has schema_version {version!r}; this version reads "
                f"{PLAN_SCHEMA_VERSION}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PlanError(f"plan file {p} is invalid: {condense_validation_error(exc)}") from exc
