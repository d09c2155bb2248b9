"""Exporters contributed by a plugin: ``ir-planner export --format ID`` (subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ir_planner.core.plan import CaseRef, Plan, TrajectoryRecord
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import write_image_file

MANIFEST = """
schema = "ir-planner-plugin/1"
name = "csv-export"

[[exporters]]
id = "trajectories-csv"
python_name = "csv_export.impl:render"
title = "Trajectories as CSV (LPS mm)"
filename_patterns = ["*.csv"]

[[exporters]]
id = "broken-export"
python_name = "csv_export.impl:explode"

[[exporters]]
id = "text-export"
python_name = "csv_export.impl:text"
"""

IMPL = """
def render(case):
    rows = ["name,entry_x,entry_y,entry_z,target_x,target_y,target_z,image_voxels"]
    for t in case.plan.trajectories:
        rows.append(",".join([t.name, *(f"{v:.2f}" for v in (*t.entry_lps, *t.target_lps)),
                              str(case.image.array.size)]))
    return ("\\n".join(rows) + "\\n").encode()

def explode(case):
    raise ZeroDivisionError("no trajectories to divide by")

def text(case):
    return "not bytes"
"""


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    grid = ImageVolume(np.zeros((6, 7, 8), np.int16), np.eye(4), modality="CT")
    write_image_file(grid, tmp_path / "ct.nii.gz")
    plan = Plan(case=CaseRef(image_path=str(tmp_path / "ct.nii.gz")))
    plan.add_trajectory(TrajectoryRecord(name="T1", entry_lps=(1.0, -2.5, 3.0),
                                         target_lps=(4.0, 5.0, 6.25)))
    plan.save(tmp_path / "plan.json")
    return tmp_path / "plan.json"


def _export(plan_file: Path, fmt: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ir_planner", "-q", "export", str(plan_file),
                           "--format", fmt, "-o", str(out)], capture_output=True, text=True,
                          timeout=300)


def test_plugin_format_written(fake_plugin, plan_file, tmp_path) -> None:
    fake_plugin("csv-export", MANIFEST, {"impl.py": IMPL})
    out = tmp_path / "traj.csv"
    proc = _export(plan_file, "trajectories-csv", out)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().splitlines() == [
        "name,entry_x,entry_y,entry_z,target_x,target_y,target_z,image_voxels",
        "T1,1.00,-2.50,3.00,4.00,5.00,6.25,336"]


def test_broken_exporters_one_line_no_file(fake_plugin, plan_file, tmp_path) -> None:
    fake_plugin("csv-export", MANIFEST, {"impl.py": IMPL})
    for fmt, message in (
        ("broken-export", "exporters 'broken-export' of plugin 'csv-export' "
                          "(csv_export.impl:explode) failed: export raised ZeroDivisionError"),
        ("text-export", "returned str, not bytes"),
    ):
        out = tmp_path / f"{fmt}.out"
        proc = _export(plan_file, fmt, out)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert message in proc.stderr and not out.exists()
    # the built-in formats still work beside them
    proc = _export(plan_file, "mrk", tmp_path / "plan.mrk.json")
    assert proc.returncode == 0, proc.stderr
