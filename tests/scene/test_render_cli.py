"""``ir-planner render``: a PNG from a plan file, clear errors for moved inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ir_planner.cli import main
from ir_planner.core.plan import CaseRef
from ir_planner.io.image_files import write_image_file
from ir_planner.io.segmentation import save_labels

from .conftest import make_case


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("render_cli")
    case = make_case(flipped=True)
    image = write_image_file(case.image, root / "ct.nii.gz")
    labels = save_labels(case.labels, root / "labels.nii.gz")
    case.plan.apply("case", lambda p: setattr(p, "case", CaseRef(
        image_path=str(image), labels_path=str(labels))))
    return case.plan.save(root / "plan.json")


def test_render_writes_a_png(plan_file: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "axial.png"
    code = main(["-q", "render", str(plan_file), "-o", str(out), "--view", "along-needle",
                 "--size", "240", "180", "--triangles", "5000"])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (180, 240, 3) and img.std() > 10


def test_render_errors(plan_file: Path, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-q", "render", str(plan_file), "-o", str(plan_file)])
    assert code == 2
    assert "must be a .png" in capsys.readouterr().err
    code = main(["-q", "render", str(plan_file), "-o", str(tmp_path / "x.png"),
                 "--image", str(tmp_path / "moved.nii.gz")])
    assert code == 2
    err = capsys.readouterr().err
    assert "moved or deleted" in err and "--image" in err
    assert not (tmp_path / "x.png").exists()
    code = main(["-q", "render", str(tmp_path / "nope.json"), "-o", str(tmp_path / "x.png")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
