"""``ir-planner plan``: real subprocess runs on the real CT, bad inputs exit 2 with one line."""

from __future__ import annotations

import csv
import subprocess

import numpy as np
import pytest

from ir_planner.cli import main
from ir_planner.core.plan import Plan
from ir_planner.io.image_files import write_image_file
from ir_planner.io.segmentation import save_labels
from tests.planning.synthetic import sphere_case
from tests.planning.test_real_ct import load_case


def ir_planner(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ir-planner", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def real_files(shared_data, tmp_path_factory):
    """The real CT plus its masks and a SYNTHETIC liver lesion, as a label-map file."""
    ct, labels, centre = load_case(shared_data)
    d = tmp_path_factory.mktemp("real")
    lab = save_labels(labels, d / "labels.nii.gz")
    return shared_data / "totalseg-ct" / "example_ct.nii.gz", lab, centre, d


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    grid, labels = sphere_case()
    d = tmp_path_factory.mktemp("small")
    img = write_image_file(grid, d / "ct.nii.gz")
    lab = save_labels(labels, d / "labels.nii.gz")
    centre = grid.index_to_world((np.asarray(grid.shape_ijk) - 1) / 2.0)
    return img, lab, centre, d


def test_plan_auto_subprocess_writes_valid_plan(real_files) -> None:
    ct, lab, centre, d = real_files
    out, cand = d / "plan.json", d / "cand.csv"
    proc = ir_planner("plan", str(ct), "--labels", str(lab), "--target",
                      *[f"{v:.3f}" for v in centre], "--auto", "--top", "3",
                      "--min-organ-length", "liver", "10", "--out", str(out),
                      "--candidates-out", str(cand))
    assert proc.returncode == 0, proc.stderr
    assert "length (mm)" in proc.stdout and "clearance (mm)" in proc.stdout
    plan = Plan.load(out)
    assert [t.name for t in plan.trajectories] == ["auto1", "auto2", "auto3"]
    for t in plan.trajectories:
        assert t.source == "auto"
        assert t.metrics["verdict"] in ("safe", "caution")
        assert "aorta" in t.metrics["clearance_mm"]
        assert t.metrics["clearance_mm"]["aorta"]["clearance_mm"] >= 3.0
        assert t.metrics["crossed_structures"][-1]["name"] in ("liver", "lesion")
        assert t.needle["gauge"] == 17
    assert plan.target_lps == pytest.approx(tuple(centre), abs=1e-3)
    settings = plan.settings["planning"]
    assert settings["needle"]["usable_length_mm"] == 150.0
    assert settings["constraints"]["min_organ_length_mm"] == {"liver": 10.0}
    assert settings["structures"]["aorta"]["forbidden"] is True
    rows = list(csv.DictReader(cand.open()))
    assert len(rows) == settings["search"]["candidates"] > 5000
    assert sum(r["feasible"] == "1" for r in rows) == settings["search"]["feasible"]


def test_plan_entry_in_process(real_files, capsys) -> None:
    ct, lab, centre, d = real_files
    entry = centre + np.array([-80.0, -60.0, 0.0])  # anterior-right, outside the body
    out = d / "manual.json"
    code = main(["-q", "plan", str(ct), "--labels", str(lab), "--target",
                 *[str(v) for v in centre], "--entry", *[str(v) for v in entry],
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "manual" in text
    (t,) = Plan.load(out).trajectories
    assert t.entry_lps == pytest.approx(tuple(entry))
    assert t.metrics["length_mm"] == pytest.approx(100.0, abs=0.01)


@pytest.mark.parametrize("extra, message", [
    (["--target", "0", "0", "9999", "--auto"], "outside the image"),
    (["--target-structure", "aorta", "--auto"], "inside forbidden structure aorta"),
    (["--target-structure", "liver"], "give --entry"),
    (["--target-structure", "nope", "--auto"], "no structure named 'nope'"),
    (["--target-structure", "liver", "--auto", "--gauge", "3"], "gauge"),
])
def test_bad_inputs_exit_2(small_files, capsys, extra, message) -> None:
    img, lab, centre, d = small_files
    code = main(["-q", "plan", str(img), "--labels", str(lab), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_bad_input_subprocess_one_line(small_files) -> None:
    img, lab, centre, d = small_files
    liver = [f"{v:.2f}" for v in centre + np.array([-12.0, 0, 0])]
    # zero-length path: entry = target
    proc = ir_planner("-q", "plan", str(img), "--labels", str(lab), "--target", *liver,
                      "--entry", *liver, "--json")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "zero-length" in proc.stderr
    # nothing feasible: a needle far too short
    proc = ir_planner("-q", "plan", str(img), "--labels", str(lab), "--target", *liver, "--auto",
                      "--needle-length", "5")
    assert proc.returncode == 2 and "no feasible path" in proc.stderr
    assert "length > needle" in proc.stderr and proc.stderr.strip().count("\n") == 0
