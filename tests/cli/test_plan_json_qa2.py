"""``plan --json`` keeps stdout a single JSON document (also with --out and
--candidates-out) and gives every trajectory its entry and target."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from ir_planner.io.image_files import write_image_file
from ir_planner.io.segmentation import save_labels
from tests.planning.synthetic import sphere_case

REPO = Path(__file__).resolve().parents[2]


def test_json_stdout_parses_with_outputs(tmp_path) -> None:
    grid, labels = sphere_case()
    img = write_image_file(grid, tmp_path / "ct.nii.gz")
    lab = save_labels(labels, tmp_path / "labels.nii.gz")
    target = grid.index_to_world((np.asarray(grid.shape_ijk) - 1) / 2.0 + [-12, 0, 0])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out, cand = tmp_path / "plan.json", tmp_path / "cand.csv"
    proc = subprocess.run(
        ["ir-planner", "-q", "plan", str(img), "--labels", str(lab), "--target",
         *[f"{v:.3f}" for v in target], "--auto", "--top", "2", "--needle-length", "40",
         "--json", "--out", str(out), "--candidates-out", str(cand)],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # the whole stdout is one JSON document
    assert doc and out.is_file() and cand.is_file()
    assert "plan written to" in proc.stderr
    for m in doc.values():
        np.testing.assert_allclose(m["target_lps"], target, atol=1e-3)
        length = float(np.linalg.norm(np.subtract(m["entry_lps"], m["target_lps"])))
        assert abs(m["length_mm"] - length) < 0.01
