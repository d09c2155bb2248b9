"""Plan: undo/redo, events, atomic save, clear errors on bad files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ir_planner.core.errors import PlanError
from ir_planner.core.plan import PLAN_SCHEMA_VERSION, Plan, TrajectoryRecord


def _traj(name: str = "T1") -> TrajectoryRecord:
    return TrajectoryRecord(name=name, entry_lps=(10, -80, 5), target_lps=(60, 20, 0))


def test_undo_redo_and_events() -> None:
    plan = Plan()
    seen: list[str] = []
    plan.connect(seen.append)
    plan.add_trajectory(_traj("A"))
    plan.add_trajectory(_traj("B"))
    plan.set_override("liver", margin_mm=2.5)
    assert [t.name for t in plan.trajectories] == ["A", "B"]
    assert plan.undo() and "liver" not in plan.structure_overrides
    assert plan.undo() and [t.name for t in plan.trajectories] == ["A"]
    assert plan.redo() and [t.name for t in plan.trajectories] == ["A", "B"]
    assert seen == ["trajectory A", "trajectory B", "override liver", "undo", "undo", "redo"]
    assert plan.undo() and plan.undo() and not plan.undo()


def test_failed_change_leaves_plan_unchanged() -> None:
    plan = Plan()
    plan.add_trajectory(_traj())

    def bad(p: Plan) -> None:
        p.notes = "half"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        plan.apply("bad", bad)
    assert plan.notes == ""
    with pytest.raises(PlanError):
        plan.set_override("liver", margin_mm=-1)
    assert "liver" not in plan.structure_overrides


def test_save_load_round_trip(tmp_path: Path) -> None:
    plan = Plan()
    plan.add_trajectory(_traj())
    out = plan.save(tmp_path / "plan.json")
    loaded = Plan.load(out)
    assert loaded.trajectories[0].entry_lps == (10.0, -80.0, 5.0)
    assert loaded.schema_version == PLAN_SCHEMA_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_save_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "plan.json"
    Plan(notes="old").save(path)

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        Plan(notes="new").save(path)
    assert json.loads(path.read_text())["notes"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


@pytest.mark.parametrize(
    "content, match",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"schema_version": 99}', "schema_version 99"),
        ('{"schema_version": 1, "trajectories": [{"name": 3}]}', "invalid"),
    ],
)
def test_bad_plan_files(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(PlanError, match=match):
        Plan.load(p)
    with pytest.raises(PlanError, match="does not exist"):
        Plan.load(tmp_path / "missing.json")
