"""First-party plugin ``plugins/totalsegmentator``, installed in the test environment.

TotalSegmentator itself (PyTorch + downloaded weights) cannot run here: the "not
installed" path is tested for real, and the adapter contract with a stand-in
``TotalSegmentator`` command on PATH that writes one mask per structure, as the real one
does, from thresholds of the image it was given.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from ir_planner.cli import main
from ir_planner.core.plugins import PluginRegistry, Status
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import write_image_file
from ir_planner.io.segmentation import load_labels

FAKE = """\
#!{python}
# Stand-in for TotalSegmentator: -i IMAGE -o FOLDER --task TASK [--fast]
import sys, json
from pathlib import Path
import numpy as np
import SimpleITK as sitk
argv = sys.argv[1:]
Path({log!r}).write_text(json.dumps(argv))
if {fail!r}:
    print("RuntimeError: CUDA out of memory", file=sys.stderr)
    sys.exit(1)
img = sitk.ReadImage(argv[argv.index("-i") + 1])
out = Path(argv[argv.index("-o") + 1])
out.mkdir(parents=True)
arr = sitk.GetArrayFromImage(img)
for name, mask in {{"liver": (arr > 30) & (arr < 80), "aorta": arr >= 200,
                    "spleen": np.zeros_like(arr, bool)}}.items():
    m = sitk.GetImageFromArray(mask.astype(np.uint8))
    m.CopyInformation(img)
    sitk.WriteImage(m, str(out / (name + ".nii.gz")))
"""


def _install_fake(folder: Path, *, fail: bool = False) -> Path:
    folder.mkdir(exist_ok=True)
    exe = folder / "TotalSegmentator"
    exe.write_text(FAKE.format(python=sys.executable, log=str(folder / "argv.json"), fail=fail))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


@pytest.fixture
def ct(tmp_path: Path) -> tuple[ImageVolume, Path]:
    """A small CT on a flipped, oblique grid (catches orientation mistakes)."""
    rng = np.random.default_rng(3)
    arr = np.full((12, 20, 16), -1000, np.int16)
    arr[2:10, 3:15, 2:9] = 50  # "liver"
    arr[4:8, 8:11, 11:14] = 300  # "aorta"
    arr += rng.integers(-5, 5, arr.shape).astype(np.int16)
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[-0.8 * c, -0.7 * s, 0, 12.0], [0.8 * s, -0.7 * c, 0, -5.0],
                       [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
    image = ImageVolume(arr, affine, modality="CT")
    path = write_image_file(image, tmp_path / "ct.nrrd")
    return image, path


def test_discovered_through_its_entry_point() -> None:
    reg = PluginRegistry()
    p = reg.plugin("totalsegmentator")
    assert p.source.startswith("ir-planner-totalsegmentator 0.1.0 (entry point")
    c = reg.get("segmenters", "totalsegmentator")
    assert c.status is Status.AVAILABLE and c.modalities == ("CT", "MR")


def test_not_installed_says_how_to_get_it(ct, tmp_path, monkeypatch, capsys) -> None:
    _, path = ct
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("IR_PLANNER_TOTALSEGMENTATOR", raising=False)
    out = tmp_path / "labels.nii.gz"
    rc = main(["-q", "segment", str(path), "--segmenter", "totalsegmentator", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists()
    assert len(err.splitlines()) == 1
    assert "TotalSegmentator is not installed" in err and "pip install TotalSegmentator" in err
    assert "--segmenter classic" in err


def test_fake_totalsegmentator_masks_come_back_on_the_image_grid(ct, tmp_path, monkeypatch,
                                                                   capsys) -> None:
    image, path = ct
    bin_dir = tmp_path / "bin"
    _install_fake(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "labels.nii.gz"
    rc = main(["-q", "segment", str(path), "--segmenter", "totalsegmentator", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    argv = json.loads((bin_dir / "argv.json").read_text())
    assert argv[argv.index("--task") + 1] == "total" and "--fast" in argv
    labels = load_labels(out, image=image)
    # names from the mask files; the empty "spleen" is dropped; oracle: the thresholds
    assert sorted(labels.names) == ["aorta", "liver"]
    arr = image.array
    np.testing.assert_array_equal(labels.mask("liver"), (arr > 30) & (arr < 80))
    np.testing.assert_array_equal(labels.mask("aorta"), arr >= 200)
    assert labels.get("aorta").category.value == "vessel"  # the planner avoids it


def test_failure_quotes_its_last_line(ct, tmp_path, monkeypatch) -> None:
    image, _ = ct
    bin_dir = tmp_path / "bin"
    _install_fake(bin_dir, fail=True)
    monkeypatch.setenv("IR_PLANNER_TOTALSEGMENTATOR", str(bin_dir / "TotalSegmentator"))
    from ir_planner.core.errors import SegmentationReadError
    from ir_planner.segmentation.plugins import get_segmenter

    with pytest.raises(SegmentationReadError, match=r"TotalSegmentator failed \(exit 1, no "
                       r"masks written\): RuntimeError: CUDA out of memory"):
        get_segmenter("totalsegmentator").run(image)


def test_mr_uses_the_mr_task(tmp_path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    _install_fake(bin_dir)
    monkeypatch.setenv("IR_PLANNER_TOTALSEGMENTATOR", str(bin_dir / "TotalSegmentator"))
    from ir_planner.segmentation.plugins import get_segmenter

    mr = ImageVolume(np.full((4, 6, 6), 50, np.int16), np.eye(4), modality="MR")
    labels = get_segmenter("totalsegmentator").run(mr)
    argv = json.loads((bin_dir / "argv.json").read_text())
    assert argv[argv.index("--task") + 1] == "total_mr"
    assert labels.mask("liver").all()
