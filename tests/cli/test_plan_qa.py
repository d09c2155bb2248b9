"""``ir-planner plan`` on segmentations the test case did not foresee (QA findings).

* a label map without names: nothing is forbidden, so no path may be called "safe";
* labels on another grid: the reader's warnings reach the user and the plan;
* a manual entry outside the scan whose path enters the image inside the body: unsafe;
* a bone biopsy: ``--allow`` the target's own bone; a path that leaves and re-enters it
  (through the spinal canal) is at most "caution";
* nonsense numbers are refused with one line.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from ir_planner.cli import main
from ir_planner.core.plan import Plan
from ir_planner.io.image_files import write_image_file
from ir_planner.planning import SearchConstraints, Verdict


@pytest.fixture(scope="module")
def real(shared_data):
    root = shared_data / "totalseg-ct"
    return root / "example_ct.nii.gz", root / "masks"


@pytest.fixture(scope="module")
def unnamed_labels(shared_data, tmp_path_factory):
    """The real masks as one label map file WITHOUT a names table (label_N)."""
    from ir_planner.io.image_files import read_image_file

    root = shared_data / "totalseg-ct"
    ct = read_image_file(root / "example_ct.nii.gz")
    lab = np.zeros(ct.shape, np.uint16)
    n = 0
    for f in sorted((root / "masks").glob("*.nii.gz")):
        m = read_image_file(f).array > 0
        if m.any() and f.name != "lung.nii.gz":
            n += 1
            lab[m & (lab == 0)] = n
    d = tmp_path_factory.mktemp("unnamed")
    return write_image_file(ct.with_array(lab), d / "labels.nii.gz")


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["-q", "plan", *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_unnamed_labels_never_safe(real, unnamed_labels, tmp_path, capsys) -> None:
    ct, _ = real
    out = tmp_path / "p.json"
    code, text, err = _run(capsys, str(ct), "--labels", str(unnamed_labels), "--target",
                           "-8.0", "-197.3", "364.3", "--auto", "--top", "3", "--out", str(out))
    assert code == 0
    assert "have no name" in err and "no structure in the labels is forbidden" in err
    plan = Plan.load(out)
    assert plan.trajectories
    for t in plan.trajectories:
        assert t.metrics["verdict"] == "caution", t.metrics["reasons"]
        assert any("nothing was avoided" in r for r in t.metrics["reasons"])
    assert any("have no name" in w for w in plan.settings["planning"]["labels_warnings"])


def test_resampled_labels_warn(real, unnamed_labels, tmp_path, capsys) -> None:
    """A label map shifted by 60 mm (another series?) is resampled: the user must be told."""
    import SimpleITK as sitk

    ct, masks = real
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for name in ("liver", "aorta"):
        img = sitk.ReadImage(str(masks / f"{name}.nii.gz"))
        o = list(img.GetOrigin())
        o[2] += 60.0
        img.SetOrigin(o)
        sitk.WriteImage(img, str(shifted / f"{name}.nii.gz"))
    out = tmp_path / "p.json"
    code, _, err = _run(capsys, str(ct), "--labels", str(shifted), "--target",
                        "-66.1", "-185.5", "392.3", "--entry", "-66.1", "-330", "392.3",
                        "--out", str(out))
    assert code == 0
    assert "WARNING:" in err and "resampled" in err
    assert any("resampled" in w for w in Plan.load(out).settings["planning"]["labels_warnings"])


def test_entry_outside_image_inside_body_is_unsafe(real, capsys) -> None:
    ct, masks = real
    # straight down from 91 mm above the scan's last slice: the chest above is not imaged
    code, text, _ = _run(capsys, str(ct), "--labels", str(masks), "--target",
                         "-66.1", "-185.5", "392.3", "--entry", "-66.1", "-185.5", "520",
                         "--json")
    assert code == 0
    m = json.loads(text)["manual"]
    assert m["verdict"] == "unsafe"
    assert "enters the image inside the body" in m["reasons"][0]
    # an entry in the air in front of the patient, outside the image: not flagged
    code, text, _ = _run(capsys, str(ct), "--labels", str(masks), "--target",
                         "-66.1", "-185.5", "392.3", "--entry", "-66.1", "-320", "392.3",
                         "--json")
    m = json.loads(text)["manual"]
    assert not any("enters the image" in r for r in m["reasons"])


def test_bone_biopsy_allow_and_canal_caution(real, tmp_path, capsys) -> None:
    ct, masks = real
    code, _, err = _run(capsys, str(ct), "--labels", str(masks), "--target-structure",
                        "vertebrae_L2", "--auto")
    assert code == 2 and "inside forbidden structure vertebrae_L2" in err
    out = tmp_path / "bone.json"
    code, _, err = _run(capsys, str(ct), "--labels", str(masks), "--target-structure",
                        "vertebrae_L2", "--allow", "vertebrae_L2", "--auto", "--top", "3",
                        "--exclude-region", "anterior", "--out", str(out))
    assert code == 0, err
    plan = Plan.load(out)
    assert plan.structure_overrides["vertebrae_L2"].forbidden is False
    assert plan.settings["planning"]["structures"]["vertebrae_L2"]["forbidden"] is False
    assert plan.trajectories
    for t in plan.trajectories:
        # paths leaving and re-entering the bone (through the unsegmented spinal canal)
        # are rejected by the search
        runs = [c for c in t.metrics["crossed_structures"] if c["name"] == "vertebrae_L2"]
        assert len(runs) == 1, runs
        assert not any(c["forbidden"] for c in t.metrics["crossed_structures"])
    assert "re-enters vertebrae_L2" in plan.settings["planning"]["search"]["summary"]
    assert plan.settings["planning"]["constraints"]["allow_reentry"] is False
    code, _, err = _run(capsys, str(ct), "--labels", str(masks), "--target-structure",
                        "vertebrae_L2", "--allow", "vertebrae_L2", "--auto", "--top", "1",
                        "--exclude-region", "anterior", "--allow-reentry", "--out", str(out))
    assert code == 0, err
    again = Plan.load(out)
    assert again.settings["planning"]["constraints"]["allow_reentry"] is True
    assert "re-enters" not in again.settings["planning"]["search"]["summary"]
    # a manual path through the canal: caution with the reason
    from ir_planner.io.load import load_image
    from ir_planner.io.segmentation import load_labels
    from ir_planner.planning import PlanningEngine

    img = load_image(ct)
    eng = PlanningEngine(img, load_labels(masks, image=img),
                         overrides={"vertebrae_L2": {"forbidden": False}})
    target = np.asarray(eng.structure_point("vertebrae_L2"))
    res = eng.search(target, SearchConstraints(allow_reentry=True), top_k=5)
    reenter = [m for m in res.suggestions
               if sum(c.name == "vertebrae_L2" for c in m.crossings) > 1]
    for m in reenter:
        assert m.verdict != Verdict.SAFE
        assert any("re-enters vertebrae_L2" in r for r in m.reasons)


@pytest.mark.parametrize("extra, message", [
    (["--max-cc-angle", "-5"], "--max-cc-angle must be 0–90°"),
    (["--min-separation", "-1"], "--min-separation must be 0–180°"),
    (["--min-organ-length", "liver", "-10"], "must be ≥ 0 mm"),
    (["--allow", "livr"], "unknown structure(s) ['livr']"),
])
def test_bad_numbers_one_line(real, capsys, extra, message) -> None:
    ct, masks = real
    code, _, err = _run(capsys, str(ct), "--labels", str(masks), "--target-structure", "liver",
                        "--auto", *extra)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_no_feasible_path_subprocess_names_the_csv(real, tmp_path) -> None:
    ct, masks = real
    out, cand = tmp_path / "p.json", tmp_path / "c.csv"
    proc = subprocess.run(
        ["ir-planner", "-q", "plan", str(ct), "--labels", str(masks), "--target-structure",
         "liver", "--auto", "--needle-length", "20", "--out", str(out), "--candidates-out",
         str(cand)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "no feasible path" in proc.stderr and str(cand) in proc.stderr
    assert not out.exists()


def test_mr_like_image_without_body(real, tmp_path, capsys) -> None:
    """No modality tag (NIfTI), MR-like intensities (no value below 0), masks without a
    body: the skin used to be the image border, entries in the air at the edge of the
    field with "depths" through air. Either refused in one line, or entries on the skin."""
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    from ir_planner.io.load import load_image
    from ir_planner.io.segmentation import load_labels
    from ir_planner.planning import PlanningEngine

    ct, masks = real
    img = sitk.ReadImage(str(ct))
    mr = sitk.Clamp(sitk.Cast(img, sitk.sitkFloat32) + 1024.0, lowerBound=0.0)
    path = tmp_path / "mr_like.nii.gz"
    sitk.WriteImage(mr, str(path))
    code, text, err = _run(capsys, str(path), "--labels", str(masks), "--target-structure",
                           "liver", "--auto", "--top", "3", "--json")
    if code == 2:
        assert "body" in err and len(err.strip().splitlines()) == 1
        return
    assert code == 0, err
    image = load_image(ct)
    eng = PlanningEngine(image, load_labels(masks, image=image))
    sp = image.spacing_mm[::-1]
    inside = ndi.distance_transform_edt(eng.body, sampling=sp)
    outside = ndi.distance_transform_edt(~eng.body, sampling=sp)
    for m in json.loads(text).values():  # the skin crossing is on the CT's true skin
        c = np.rint(image.world_to_index(np.asarray(m["skin_lps"]))).astype(int)
        assert inside[c[2], c[1], c[0]] <= 6.0 and outside[c[2], c[1], c[0]] <= 6.0


def test_thin_slab_with_dicom_seg(shared_data, capsys) -> None:
    """A real 3-slice CT (a CT-guided procedure's slab) with a real DICOM SEG of the liver
    (a 3-D opening erodes a slab away entirely)."""
    root = shared_data / "dcmqi-seg"
    code, text, err = _run(capsys, str(root / "ct-3slice"), "--labels", str(root / "liver.dcm"),
                           "--target-structure", "Liver", "--auto", "--top", "2", "--json")
    assert code == 0, err
    res = json.loads(text)
    assert len(res) == 2
    for m in res.values():
        assert m["verdict"] == "caution"  # a liver-only segmentation avoids nothing
        assert abs(m["craniocaudal_angle_deg"]) < 1.0  # in the slab's plane
