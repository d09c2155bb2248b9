"""docs/plugins.md: the worked example, written out, installed and run as the guide says.

The guide's files (fenced blocks marked ``file=PATH``) are written as they are; its
commands (the ``sh run`` block) are run in order, with two substitutions only:
``pip install -e DIR`` installs into a temporary folder put on PYTHONPATH (the test must
not change the shared environment) and ``ir-planner`` is ``python -m ir_planner``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import write_image_file
from ir_planner.io.segmentation import load_labels

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
FILE_BLOCK = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```$", re.M | re.S)
RUN_BLOCK = re.compile(r"^```sh run\n(.*?)^```$", re.M | re.S)


def test_guide_example_works_as_written(tmp_path: Path) -> None:
    text = GUIDE.read_text(encoding="utf-8")
    files = FILE_BLOCK.findall(text)
    assert {name for name, _ in files} >= {"ir-planner-bone/pyproject.toml",
                                          "ir-planner-bone/ir_planner_bone/plugin.toml",
                                          "ir-planner-bone/ir_planner_bone/segment.py"}
    for name, body in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    arr = np.full((6, 7, 8), 40, np.int16)
    arr[2:4, 3:5, 1:7] = 700
    arr[0, 0, 0] = 300  # exactly the threshold: bone
    image = ImageVolume(arr, np.diag([0.8, 0.8, 2.0, 1.0]), modality="CT")
    write_image_file(image, tmp_path / "ct.nii.gz")

    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": str(site)}
    [commands] = RUN_BLOCK.findall(text)
    outputs = []
    for line in commands.strip().splitlines():
        argv = shlex.split(line)
        if argv[:3] == ["pip", "install", "-e"]:
            argv = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), argv[3]]
        else:
            assert argv[0] == "ir-planner", line
            argv = [sys.executable, "-m", "ir_planner", *argv[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout)

    listing = outputs[1].splitlines()
    row = next(r.split() for r in listing if r.startswith("bone "))
    assert row[:8] == ["bone", "1.0.0", ">=0.1,", "<0.2", "segmenters", "bone-threshold",
                       "available", "Bone:"]
    labels = load_labels(tmp_path / "bone.nii.gz", image=image)
    assert labels.names == ["bone"]
    np.testing.assert_array_equal(labels.mask("bone"), arr >= 300)

    # the guide's own test of the example passes, against the installed package
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "ir-planner-bone/tests"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
