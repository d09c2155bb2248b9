"""``ir-planner ablate`` on a synthetic case written to disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ir_planner.cli import main
from ir_planner.core.plan import CaseRef, Plan, TrajectoryRecord
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import write_image_file

N = 72
SP = 1.0


def _grid() -> tuple[ImageVolume, np.ndarray]:
    affine = np.diag([SP, SP, SP, 1.0])
    affine[:3, 3] = -(N - 1) / 2 * SP
    grid = ImageVolume(np.zeros((N, N, N), np.int16), affine, modality="CT")
    kk, jj, ii = np.indices(grid.shape)
    return grid, grid.index_to_world(np.stack([ii, jj, kk], axis=-1))


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ablate_case")
    grid, p = _grid()
    body = np.linalg.norm(p[..., :2], axis=-1) <= 34
    image = grid.with_array(np.where(body, 40, -1000).astype(np.int16))
    write_image_file(image, root / "ct.nii.gz")
    masks = root / "masks"
    masks.mkdir()
    shapes = {
        "tumour": np.linalg.norm(p, axis=-1) <= 7.0,
        "big_tumour": np.linalg.norm((p - [0, 0, 0]) / [20, 7, 7], axis=-1) <= 1.0,
        "colon": (p[..., 1] >= 18) & (p[..., 1] <= 28) & (np.abs(p[..., 0]) <= 10)
        & (np.abs(p[..., 2]) <= 10),
        "hepatic_vein": np.hypot(p[..., 0] - 20.0, p[..., 1]) <= 2.5,
        "liver": body & (np.linalg.norm(p, axis=-1) <= 30),
    }
    for name, m in shapes.items():
        write_image_file(grid.with_array(m.astype(np.uint8)), masks / f"{name}.nii.gz")
    write_image_file(grid.with_array(np.zeros(grid.shape, np.uint8)), masks / "empty.nii.gz")
    plan = Plan(case=CaseRef(image_path=str(root / "ct.nii.gz"), labels_path="masks"),
                target_structure="tumour")
    for x in (-14.0, 0.0, 14.0):
        plan.add_trajectory(TrajectoryRecord(name=f"T{x:+.0f}", entry_lps=(x, -34.0, 0.0),
                                             target_lps=(x, 0.0, 0.0)))
    plan.trajectories = [plan.trajectory("T+0"), plan.trajectory("T-14"), plan.trajectory("T+14")]
    plan.save(root / "plan.json")
    return root


def _plan_with(case: Path, name: str, **changes) -> Path:
    plan = Plan.load(case / "plan.json")
    for k, v in changes.items():
        setattr(plan, k, v)
    out = case / name
    plan.save(out)
    return out


def test_ablate_fixed_setting(case: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.json"
    before = (case / "plan.json").read_text()
    rc = main(["-q", "ablate", str(case / "plan.json"), "--device", "neuwave-pr", "--setting",
               "65W-10min-CT", "--depth-offset", "12", "--out", str(out)])
    assert rc == 0
    assert (case / "plan.json").read_text() == before  # --out leaves the input alone
    plan = Plan.load(out)
    (rec,) = plan.ablations
    assert rec.trajectory == "T+0" and rec.device_id == "neuwave-pr"
    assert rec.setting == "65W-10min-CT" and rec.tip_depth_offset_mm == 12.0
    m = rec.metrics
    # zone 36 x 27 mm centred 12 mm behind the tip = at the tumour centre: margin 13.5 - 7
    # (the voxelised sphere's cells reach up to half a voxel diagonal beyond r = 7)
    assert 13.5 - 7.0 - 0.9 <= m["min_margin_mm"] <= 13.5 - 7.0 + 0.05
    assert m["coverage_pct"] == pytest.approx(100.0, abs=0.01)
    assert "mathy2024" in " ".join(m["sources"])
    (sink,) = m["heat_sink"]
    assert sink["structure"] == "hepatic_vein"
    assert sink["diameter_mm"] == pytest.approx(4.0, abs=0.5)  # a 4 x 4 voxel cross-section
    text = capsys.readouterr().out
    assert "minimal margin" in text and "heat sink" in text


def test_ablate_optimize_subprocess(case: Path, tmp_path: Path) -> None:
    out = tmp_path / "opt.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ir_planner", "-q", "ablate", str(case / "plan.json"),
         "--device", "neuwave-pr", "--optimize", "--json", "--out", str(out)],
        capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:  # pragma: no cover - diagnostics
        print(proc.stderr)
    assert proc.returncode == 0
    res = json.loads(proc.stdout)
    assert res["goal_met"] and res["metrics"]["min_margin_mm"] >= 5.0
    assert res["metrics"]["structure_volumes_ml"].get("colon", 0.0) < 0.05
    plan = Plan.load(out)
    assert plan.ablations[0].metrics["goal_met"] is True
    assert plan.ablations[0].metrics["reasons"]


def test_ablate_multi_probe(case: Path, tmp_path: Path) -> None:
    src = _plan_with(case, "plan_big.json", target_structure="big_tumour")
    rc = main(["-q", "ablate", str(src), "--device", "neuwave-pr", "--setting", "65W-10min",
               "--optimize", "--max-probes", "3", "--no-safety"])
    assert rc == 0
    plan = Plan.load(src)
    assert len(plan.ablations) >= 2
    groups = {a.metrics["group"] for a in plan.ablations}
    assert len(groups) == 1
    assert plan.ablations[0].metrics["min_margin_mm"] > 3.0
    tips = np.array([a.metrics["tip_lps"] for a in plan.ablations])
    assert min(np.linalg.norm(a - b) for i, a in enumerate(tips) for b in tips[i + 1:]) >= 10


def test_ablate_multi_probe_with_planning_engine(case: Path) -> None:
    """One path in the plan: the engine's search adds safe paths; all saved, all vetted."""
    plan = Plan.load(case / "plan.json")
    plan.target_structure = "big_tumour"
    plan.trajectories = plan.trajectories[:1]
    src = case / "plan_big_one.json"
    plan.save(src)
    rc = main(["-q", "ablate", str(src), "--device", "neuwave-pr", "--setting", "65W-10min",
               "--optimize", "--max-probes", "3", "--search-candidates", "1"])
    assert rc == 0
    out = Plan.load(src)
    names = {t.name for t in out.trajectories}
    assert all(a.trajectory in names for a in out.ablations)
    assert len(out.ablations) >= 2
    reasons = " ".join(out.ablations[0].metrics["reasons"])
    assert "planning engine" in reasons
    # no probe tip inside the colon (the engine vetoes such positions)
    for a in out.ablations:
        x, y, z = a.metrics["tip_lps"]
        assert not (18 <= y <= 28 and abs(x) <= 10 and abs(z) <= 10)


def test_ablate_two_cryo_probes_by_hand(case: Path, tmp_path: Path) -> None:
    out = tmp_path / "cryo.json"
    rc = main(["-q", "ablate", str(case / "plan.json"), "--device", "cryo-17g",
               "--trajectory", "T-14", "--trajectory", "T+0", "--out", str(out)])
    assert rc == 0
    recs = Plan.load(out).ablations
    assert [r.trajectory for r in recs] == ["T-14", "T+0"]
    assert recs[0].metrics["group"] == recs[1].metrics["group"]
    assert recs[0].metrics["probes_in_group"] == 2
    assert recs[0].metrics["coverage_pct"] == pytest.approx(100.0, abs=0.01)


@pytest.mark.parametrize("argv,message", [
    (["--device", "emprint"], "known devices:"),
    (["--device", "neuwave-pr", "--setting", "150W"], "known settings: 65W-10min"),
    (["--device", "biopsy-18g"], "biopsy needle"),
    (["--device", "neuwave-pr", "--calibration", "0"], "--calibration"),
    (["--device", "neuwave-pr", "--trajectory", "nope"], "no trajectory named 'nope'"),
])
def test_ablate_bad_arguments(case: Path, argv, message: str, capsys) -> None:
    assert main(["-q", "ablate", str(case / "plan.json"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_ablate_without_tumour_or_empty_tumour(case: Path, capsys) -> None:
    no_target = _plan_with(case, "plan_no_target.json", target_structure="")
    assert main(["-q", "ablate", str(no_target), "--device", "neuwave-pr"]) == 2
    assert "needs a tumour" in capsys.readouterr().err
    empty = _plan_with(case, "plan_empty.json", target_structure="empty")
    proc = subprocess.run([sys.executable, "-m", "ir_planner", "-q", "ablate", str(empty),
                           "--device", "neuwave-pr"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "'empty' is not in the label map" in proc.stderr
    assert "Traceback" not in proc.stderr
