"""``ir-planner segment`` on the real CT: in-process and as a subprocess."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import SimpleITK as sitk

from ir_planner.cli import main


def test_segment_subprocess_writes_labels(shared_data, tmp_path) -> None:
    ct = shared_data / "totalseg-ct" / "example_ct.nii.gz"
    out = tmp_path / "labels.nii.gz"
    names = tmp_path / "names.json"
    done = subprocess.run(
        ["ir-planner", "segment", str(ct), "--out", str(out), "--names-out", str(names)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "bone" in done.stdout and "volume ml" in done.stdout
    assert out.is_file() and (tmp_path / "labels.labels.json").is_file()
    table = json.loads(names.read_text())
    got = {s["name"]: s["category"] for s in table["structures"]}
    assert got["bone"] == "bone" and got["lung"] == "lung" and got["body"] == "body"
    # labels sit on the CT's grid
    img, lab = sitk.ReadImage(str(ct)), sitk.ReadImage(str(out))
    assert lab.GetSize() == img.GetSize()
    np.testing.assert_allclose(lab.GetOrigin(), img.GetOrigin(), atol=1e-3)


def test_segment_bad_inputs_exit_2_one_line(shared_data, tmp_path) -> None:
    ct = shared_data / "totalseg-ct" / "example_ct.nii.gz"
    done = subprocess.run(["ir-planner", "segment", str(ct), "--out",
                           str(tmp_path / "x.txt")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "suffix" in done.stderr
    done = subprocess.run(["ir-planner", "segment", str(tmp_path / "missing.nii.gz"), "--out",
                           str(tmp_path / "x.nii.gz")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.nii.gz").exists()


def test_segment_lesion_in_process(shared_data, tmp_path, capsys) -> None:
    ct = shared_data / "totalseg-ct" / "example_ct.nii.gz"
    out = tmp_path / "l.nii.gz"
    # seed in homogeneous fat/muscle-free air outside the body → clear error, no file
    img = sitk.ReadImage(str(ct))
    air = img.TransformIndexToPhysicalPoint([2, 2, 50])
    rc = main(["-q", "segment", str(ct), "--out", str(out), "--segmenter", "none",
               "--lesion", *map(str, air)])
    assert rc == 2 and not out.exists()
    assert "air" in capsys.readouterr().err
    rc = main(["-q", "segment", str(ct), "--out", str(out), "--radius", "5"])
    assert rc == 2
