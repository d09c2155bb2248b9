"""``ir-planner plan``: real subprocess runs on the real CT, bad inputs exit 2 with one line."""

from __future__ import annotations

import csv
import dataclasses
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
    assert "skin from: CT threshold -300 HU" in proc.stdout
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


def test_plan_body_threshold_option(real_files, capsys) -> None:
    ct, lab, centre, d = real_files
    assert main(["-q", "plan", str(ct), "--labels", str(lab), "--target",
                 *[f"{v:.3f}" for v in centre], "--auto", "--top", "1",
                 "--body-threshold", "-500"]) == 0
    assert "skin from: threshold -500 (given)" in capsys.readouterr().out


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
    (["--target-structure", "liver", "--auto", "--exclude-sphere", "0", "0", "0", "-5"],
     "radius > 0 mm"),
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


# -- no --labels: automatic segmentation first (issue 4) -----------------------------------
FORBIDDEN_REAL = ("rib_", "vertebrae_", "hip_", "sacrum", "femur_", "lung", "colon")


@pytest.fixture(scope="module")
def real_masks(shared_data):
    """The real CT's TotalSegmentator masks (read with load_labels) and a planning engine."""
    from ir_planner.io.load import load_image
    from ir_planner.io.segmentation import load_labels
    from ir_planner.planning import PlanningEngine

    root = shared_data / "totalseg-ct"
    ct = load_image(root / "example_ct.nii.gz")
    labels = load_labels(root / "masks", image=ct)
    return labels, PlanningEngine(ct, labels)


def test_plan_without_labels_real_ct(real_files, real_masks, tmp_path) -> None:
    """Real CT, no segmentation given, target = a point deep in the real liver (a SYNTHETIC
    lesion point: the scan has no tumour, so no lesion is found and the point is the target).
    """
    ct, _, centre, _ = real_files
    labels, engine = real_masks
    assert "liver" in engine.labels_at(centre)
    out, lab_out = tmp_path / "plan.json", tmp_path / "auto.nii.gz"
    proc = ir_planner("plan", str(ct), "--target", *[f"{v:.3f}" for v in centre], "--auto",
                      "--top", "3", "--exclude-region", "posterior", "--out", str(out),
                      "--labels-out", str(lab_out))
    assert proc.returncode == 0, proc.stderr
    assert "no --labels given: segmenting body, bone, lung, airway, bowel gas" in proc.stderr
    # non-contrast CT: no vessels found -> the loud warning, on stderr and stdout
    assert "WARNING: VESSELS ARE NOT AVOIDED" in proc.stderr
    assert "WARNING: VESSELS ARE NOT AVOIDED" in proc.stdout
    assert "planning to the point target" in proc.stderr
    plan = Plan.load(out)
    settings = plan.settings["planning"]
    assert settings["labels_source"] == "automatic"
    auto = settings["automatic_segmentation"]
    assert auto["vessels_avoided"] is False and auto["lesion"] is None
    assert auto["segmentation"]["contrast_enhanced"] is False
    assert plan.case.labels_path == str(lab_out) and lab_out.is_file()
    assert plan.target_structure == "" and plan.target_lps == pytest.approx(tuple(centre),
                                                                           abs=1e-3)
    assert {"body", "bone", "lung"} <= set(settings["structures"])
    assert len(plan.trajectories) == 3
    for t in plan.trajectories:
        # never "safe" while vessels were not checked
        assert t.metrics["verdict"] == "caution", t.metrics["reasons"]
        assert any("vessels NOT segmented" in r for r in t.metrics["reasons"])
        # checked against the REAL TotalSegmentator masks: no bone, lung or colon crossed,
        # the needle surface touches none of them
        m = engine.evaluate(t.entry_lps, t.target_lps, check_entry=False)
        crossed = [c.name for c in m.crossings]
        assert not [n for n in crossed if n.startswith(FORBIDDEN_REAL)], (t.name, crossed)
        for name, c in m.clearances.items():
            if name.startswith(FORBIDDEN_REAL):
                assert c.clearance_mm > 0.0, (t.name, name, c.clearance_mm)
        assert crossed[-1] == "liver"


def test_unclassified_gas_safety_net() -> None:
    """Gas in the body that no automatic structure claimed becomes forbidden (5 mm), except
    the voxel rim next to lung/bowel gas; outside the body and on MR nothing is added."""
    from ir_planner.core.labels import LabelMap
    from ir_planner.segmentation.auto import UNCLASSIFIED_GAS, add_unclassified_gas
    from tests.planning.synthetic import make_grid

    grid = make_grid((30, 30, 10), (2.0, 2.0, 3.0))
    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    body = np.zeros(grid.shape, dtype=bool)
    body[:, 2:28, 2:28] = True
    hu[body] = 40.0
    lung = np.zeros(grid.shape, dtype=bool)
    lung[2:8, 5:12, 5:12] = True
    hu[lung] = -850.0
    hu[2:8, 5:12, 12] = -600.0  # partial-volume rim next to the lung: not added
    hu[4:6, 20:23, 20:23] = -950.0  # a dropped gas pocket, 18 voxels: added
    hu[5, 25, 5] = -700.0  # a single gas voxel: added
    img = grid.with_array(hu)
    labels = LabelMap.from_masks([("body", body), ("lung", lung)], img)
    out, volume_ml, parts = add_unclassified_gas(img, labels)
    mask = out.mask(UNCLASSIFIED_GAS)
    expected = np.zeros(grid.shape, dtype=bool)
    expected[4:6, 20:23, 20:23] = True
    expected[5, 25, 5] = True
    assert np.array_equal(mask, expected)
    assert parts == 2 and volume_ml == pytest.approx(19 * 2 * 2 * 3 / 1000.0)
    s = next(x for x in out.structures if x.name == UNCLASSIFIED_GAS)
    assert s.forbidden and s.margin_mm == 5.0
    mr = dataclasses.replace(img, modality="MR")
    assert add_unclassified_gas(mr, labels)[2] == 0


@pytest.fixture(scope="module")
def sample_case(tmp_path_factory):
    from ir_planner.sample.case import generate_sample_case

    return generate_sample_case(tmp_path_factory.mktemp("sample") / "case")


def test_plan_without_labels_sample_case(sample_case, tmp_path) -> None:
    """Synthetic contrast CT: the lesion is grown from the target and becomes the target
    structure; paths are checked against the phantom's ground-truth labels."""
    from ir_planner.io.load import load_image
    from ir_planner.io.segmentation import load_labels
    from ir_planner.planning import PlanningEngine

    truth = sample_case.read_manifest()["phantom"]["tumours"][0]
    target = truth["centre_lps_mm"]
    out = tmp_path / "plan.json"
    proc = ir_planner("plan", str(sample_case.planning_dicom_dir), "--target",
                      *[f"{v:.3f}" for v in target], "--auto", "--top", "3",
                      "--exclude-region", "table", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    # the table side comes from the DICOM PatientPosition (HFS: supine)
    assert "table side posterior (PatientPosition HFS)" in proc.stdout
    assert "no --labels given" in proc.stderr and "lesion found at the target" in proc.stderr
    assert "VESSELS ARE NOT AVOIDED" not in proc.stderr + proc.stdout
    plan = Plan.load(out)
    auto = plan.settings["planning"]["automatic_segmentation"]
    assert plan.settings["planning"]["labels_source"] == "automatic"
    assert plan.target_structure == "lesion" and auto["vessels_avoided"] is True
    # the grown lesion matches the phantom's sphere (diameter 2 r within 3 mm)
    for d in auto["lesion"]["diameters_mm"]:
        assert d == pytest.approx(2 * truth["radius_mm"], abs=3.0)
    assert plan.case.labels_path == ""
    ct = load_image(sample_case.planning_dicom_dir)
    engine = PlanningEngine(ct, load_labels(sample_case.planning_labels, image=ct))
    assert plan.trajectories
    for t in plan.trajectories:
        assert t.metrics["verdict"] in ("safe", "caution")
        assert t.metrics["crossed_structures"][-1]["name"] == "lesion"
        m = engine.evaluate(t.entry_lps, t.target_lps, check_entry=False)
        forbidden = [c.name for c in m.crossings if engine.structure(c.name).forbidden]
        assert not forbidden, (t.name, forbidden)
        assert m.min_forbidden_clearance()[1] > 0.0


@pytest.mark.parametrize("extra, message", [
    (["--target-structure", "liver", "--auto"], "--target-structure needs --labels"),
    (["--labels", "x.nii.gz", "--target", "0", "0", "0", "--auto", "--labels-out", "y.nii.gz"],
     "--labels-out only applies without --labels"),
    (["--target", "0", "0", "0", "--auto", "--lesion-radius", "-1"], "--lesion-radius"),
])
def test_auto_label_option_errors(small_files, capsys, extra, message) -> None:
    img, _, _, _ = small_files
    code = main(["-q", "plan", str(img), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_auto_labels_have_no_organs(real_files, capsys) -> None:
    ct, _, centre, _ = real_files
    code = main(["-q", "plan", str(ct), "--target", *[str(v) for v in centre], "--auto",
                 "--min-organ-length", "liver", "10"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--min-organ-length liver: the automatic segmentation has no such structure" in err
