"""``ir-planner demo`` end to end on the synthetic sample case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ir_planner.cli import main
from ir_planner.cli.demo import DEMO_STEPS, DemoContext, DemoStep, run_demo
from ir_planner.core.plan import Plan
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
                 "plan.json"):
        assert (root / "out" / name).is_file(), name
    assert (root / "sample" / "case.json").is_file()
    assert "tumour_1" in out.stdout and "Targets" in out.stdout
    assert "%" in out.stderr  # progress display


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


def test_demo_reuses_case_and_prints_json(demo_run, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root, _ = demo_run
    stamp = (root / "sample" / "case.json").stat().st_mtime_ns
    code = main(["-q", "demo", "--out", str(tmp_path / "o"), "--case-dir",
                 str(root / "sample"), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["targets"][0]["name"] == "tumour_1"
    assert (root / "sample" / "case.json").stat().st_mtime_ns == stamp


def test_steps_are_extensible(demo_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, _ = demo_run
    seen: list[str] = []

    def extra(ctx: DemoContext, progress) -> None:  # type: ignore[no-untyped-def]
        seen.append(ctx.need("plan").target_structure)

    steps = DEMO_STEPS[:-1] + [DemoStep("extra", extra)] + DEMO_STEPS[-1:]
    fractions: list[float] = []
    ctx = DemoContext(out_dir=tmp_path / "o", case_dir=root / "sample", log=lambda m: None)
    run_demo(ctx, steps=steps, progress=lambda f, m: fractions.append(f))
    assert seen == ["tumour_1"] and (tmp_path / "o" / "plan.json").is_file()
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_bad_seed_is_one_line_error(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["demo", "--seed", "-1"]) == 2
    assert "--seed" in capsys.readouterr().err
