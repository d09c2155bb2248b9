"""``ir-planner demo`` end to end on the synthetic sample case."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ir_planner.cli import main
from ir_planner.cli.demo import (
    DEMO_STEPS,
    DemoContext,
    DemoStep,
    guidance_readout,
    run_demo,
)
from ir_planner.core.plan import Plan, TrajectoryRecord
from ir_planner.io.image_files import read_image_file
from ir_planner.io.segmentation import load_labels


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, IR_PLANNER_SAMPLE_DIR=str(root / "sample"))
    out = subprocess.run([sys.executable, "-m", "ir_planner", "demo", "--out",
                          str(root / "out")], capture_output=True, text=True, env=env,
                         timeout=300, cwd=root)
    return root, out


def test_demo_subprocess_writes_every_file(demo_run) -> None:  # type: ignore[no-untyped-def]
    root, out = demo_run
    assert out.returncode == 0, out.stderr
    for name in ("summary.json", "planning_ct.nii.gz", "labels.nii.gz", "labels.labels.json",
                 "plan.json", "candidates.csv"):
        assert (root / "out" / name).is_file(), name
    assert (root / "sample" / "case.json").is_file()
    assert "tumour_1" in out.stdout and "Targets" in out.stdout
    for heading in ("Automatic trajectories to tumour_1", "clearance (mm)", "cc angle (°)",
                    "tumour coverage", "minimal ablative margin", "Guidance readout",
                    "ground truth from the synthetic generator", "angle to plan (°)"):
        assert heading in out.stdout, heading
    assert "%" in out.stderr  # progress display
    for step in ("trajectory search", "ablation", "guidance readout"):
        assert step in out.stderr, step


def test_demo_outputs_agree(demo_run) -> None:  # type: ignore[no-untyped-def]
    root, _ = demo_run
    summary = json.loads((root / "out" / "summary.json").read_text())
    assert summary["synthetic_case"] is True
    assert summary["image"]["size_ijk"] == [256, 256, 96]
    names = {s["name"]: s for s in summary["structures"]}
    assert names["liver"]["volume_ml"] > 500 and names["aorta"]["category"] == "vessel"
    targets = summary["targets"]
    assert [t["name"] for t in targets] == ["tumour_1", "tumour_2"]
    plan = Plan.load(root / "out" / "plan.json")
    assert plan.target_structure == "tumour_1"
    assert np.allclose(plan.target_lps, targets[0]["centroid_lps_mm"])
    assert Path(plan.case.image_path).is_dir() and plan.case.series_uid
    # the target centroid agrees with the phantom's ground truth
    manifest = json.loads((root / "sample" / "case.json").read_text())
    truth = manifest["phantom"]["tumours"][0]["centre_lps_mm"]
    assert np.allclose(plan.target_lps, truth, atol=1.5)
    ct = read_image_file(root / "out" / "planning_ct.nii.gz")
    labels = load_labels(root / "out" / "labels.nii.gz", image=ct)
    assert ct.shape_ijk == (256, 256, 96) and not labels.warnings
    assert labels.volume_ml("tumour_1") == pytest.approx(targets[0]["volume_ml"], rel=1e-3)


def test_demo_plan_has_safe_paths_and_ablation(demo_run) -> None:  # type: ignore[no-untyped-def]
    """plan.json holds safe trajectories (re-checked independently on the ground-truth
    labels) and an ablation with coverage and margin metrics."""
    from ir_planner.io.load import load_image
    from ir_planner.planning import PlanningEngine

    root, _ = demo_run
    plan = Plan.load(root / "out" / "plan.json")
    safe = [t for t in plan.trajectories if t.metrics["verdict"] == "safe"]
    assert safe, [t.metrics["verdict"] for t in plan.trajectories]
    ct = load_image(root / "sample" / "planning_ct")
    labels = load_labels(root / "sample" / "planning_labels.nii.gz", image=ct)
    engine = PlanningEngine(ct, labels)
    for t in plan.trajectories:
        assert t.source == "auto" and t.needle["gauge"] == 17
        assert t.metrics["length_mm"] <= 150.0
        m = engine.evaluate(t.entry_lps, t.target_lps)
        assert m.verdict.value == t.metrics["verdict"]
        crossed = [c.name for c in m.crossings]
        assert "tumour_1" == crossed[-1] and "liver" in crossed
        assert m.length_in_structure_mm["liver"] >= 10.0 - 1e-6
        forbidden = [n for n in crossed if engine.structure(n).forbidden]
        assert not forbidden, (t.name, forbidden)
    settings = plan.settings["planning"]
    assert settings["constraints"]["excluded_regions"] == ["posterior"]
    assert settings["constraints"]["min_organ_length_mm"] == {"liver": 10.0}
    rows = list(csv.DictReader((root / "out" / "candidates.csv").open()))
    assert len(rows) == settings["search"]["candidates"]
    assert sum(r["feasible"] == "1" for r in rows) == settings["search"]["feasible"] > 0
    posterior = [r for r in rows if r["rejected_by"] == "excluded region posterior"]
    assert posterior and all(r["feasible"] == "0" for r in posterior)
    feasible_xyz = np.array([[float(r[k]) for k in ("x_lps_mm", "y_lps_mm", "z_lps_mm")]
                             for r in rows if r["feasible"] == "1"])
    for t in plan.trajectories:  # every suggestion is a feasible candidate of the table
        assert np.min(np.linalg.norm(feasible_xyz - np.asarray(t.entry_lps), axis=1)) < 0.01
    # ablation
    assert plan.ablations
    a = plan.ablations[0]
    assert a.device_id == "neuwave-pr" and a.trajectory == safe[0].name  # best safe path
    for key in ("coverage_pct", "min_margin_mm", "shell_coverage_pct", "goal_met"):
        assert key in a.metrics, key
    assert 0.0 <= a.metrics["coverage_pct"] <= 100.0
    assert a.metrics["goal_met"] == (a.metrics["min_margin_mm"] >= 5.0)
    # a zone covering every tumour voxel has a positive margin, and vice versa
    assert (a.metrics["coverage_pct"] >= 99.9) == (a.metrics["min_margin_mm"] > 0)
    # the tip sits on the trajectory axis, depth offset beyond the target
    t = plan.trajectory(a.trajectory)
    d = np.subtract(t.target_lps, t.entry_lps)
    d /= np.linalg.norm(d)
    expected_tip = np.asarray(t.target_lps) + a.tip_depth_offset_mm * d
    assert np.allclose(a.metrics["tip_lps"], expected_tip, atol=0.01)
    summary = json.loads((root / "out" / "summary.json").read_text())
    assert summary["ablation"]["min_margin_mm"] == pytest.approx(a.metrics["min_margin_mm"],
                                                                 abs=0.01)


def test_demo_guidance_against_generator_truth(demo_run) -> None:  # type: ignore[no-untyped-def]
    root, _ = demo_run
    summary = json.loads((root / "out" / "summary.json").read_text())
    truth = json.loads((root / "sample" / "intraop_truth.json").read_text())
    g = summary["guidance"]
    assert "ground truth from the synthetic generator" in g["source"]
    plan = Plan.load(root / "out" / "plan.json")
    ablated = {a.trajectory for a in plan.ablations}
    assert [r["trajectory"] for r in g["per_trajectory"]] == [t.name for t in plan.trajectories]
    for r in g["per_trajectory"]:
        assert 0.0 <= r["angle_deg"] <= 180.0
        if r["trajectory"] not in ablated:
            # planned tip = tumour_1 centroid; the generator put the tip 3 mm from the centre
            assert r["tip_distance_mm"] == pytest.approx(
                truth["needle"]["tip_to_target_centre_mm"], abs=0.5)
    assert g["needle_path_check"]["tip_in"][-1] == "tumour_1"


def test_guidance_readout_analytic() -> None:
    truth = {"needle": {"entry_plan_lps_mm": [-100.0, 0.0, 0.0], "tip_plan_lps_mm": [0, 0, 0]}}
    a30 = math.radians(30.0)
    traj = TrajectoryRecord(name="T", entry_lps=(-100 * math.cos(a30), -100 * math.sin(a30), 0),
                            target_lps=(0.0, 0.0, 3.0))
    (r,) = guidance_readout(truth, [traj])
    entry = np.array(traj.entry_lps)
    d = (np.array(traj.target_lps) - entry) / np.linalg.norm(np.array(traj.target_lps) - entry)
    assert r["angle_deg"] == pytest.approx(math.degrees(math.acos(d[0])), abs=0.01)
    assert r["tip_distance_mm"] == pytest.approx(3.0, abs=0.01)
    along = float(np.dot([0, 0, -3.0], d))
    assert r["tip_depth_error_mm"] == pytest.approx(along, abs=0.01)
    assert r["tip_lateral_offset_mm"] == pytest.approx(math.sqrt(9.0 - along**2), abs=0.01)
    (r2,) = guidance_readout(truth, [traj], {"T": [0.0, 0.0, 0.0]})
    assert r2["tip_distance_mm"] == 0.0


def test_demo_reuses_case_and_prints_json(demo_run, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root, _ = demo_run
    stamp = (root / "sample" / "case.json").stat().st_mtime_ns
    code = main(["-q", "demo", "--out", str(tmp_path / "o"), "--case-dir",
                 str(root / "sample"), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["targets"][0]["name"] == "tumour_1"
    assert data["search"]["suggestions"] and data["ablation"]["coverage_pct"] > 0
    assert (root / "sample" / "case.json").stat().st_mtime_ns == stamp


def test_steps_are_extensible(demo_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, _ = demo_run
    seen: list[str] = []

    def extra(ctx: DemoContext, progress) -> None:  # type: ignore[no-untyped-def]
        seen.append(ctx.need("plan").target_structure)

    core = [s for s in DEMO_STEPS
            if s.name not in ("trajectory search", "ablation", "guidance readout")]
    steps = core[:-1] + [DemoStep("extra", extra)] + core[-1:]
    fractions: list[float] = []
    ctx = DemoContext(out_dir=tmp_path / "o", case_dir=root / "sample", log=lambda m: None)
    run_demo(ctx, steps=steps, progress=lambda f, m: fractions.append(f))
    assert seen == ["tumour_1"] and (tmp_path / "o" / "plan.json").is_file()
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_bad_seed_is_one_line_error(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["demo", "--seed", "-1"]) == 2
    assert "--seed" in capsys.readouterr().err
