"""Readers contributed by a plugin: used by load_image / load_labels and the commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ir_planner.core.plugins import PluginError, PluginRegistry, Status, use_registry
from ir_planner.io.load import load_image
from ir_planner.io.segmentation import load_labels

MANIFEST = """
schema = "ir-planner-plugin/1"
name = "npy-io"
ir_planner_version = ">=0.1"

[[readers]]
id = "npy-image"
python_name = "npy_io.impl:read_image"
what = "image"
filename_patterns = ["*.npy"]

[[readers]]
id = "npz-labels"
python_name = "npy_io.impl:read_labels"
what = "segmentation"
filename_patterns = ["*.npz"]

[[readers]]
id = "broken"
python_name = "npy_io.impl:explode"
what = "image"
filename_patterns = ["*.boom"]

[[readers]]
id = "wrongtype"
python_name = "npy_io.impl:wrong"
what = "image"
filename_patterns = ["*.wrong"]
"""

IMPL = """
import numpy as np
from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume

AFFINE = np.diag([0.5, 0.5, 2.0, 1.0])

def read_image(path):
    return ImageVolume(np.load(path), AFFINE, modality="CT")

def read_labels(path):
    data = np.load(path)
    grid = ImageVolume(np.zeros(data["labels"].shape, np.int16), AFFINE)
    return LabelMap.from_array(data["labels"], grid, {1: "liver", 2: "aorta"})

def explode(path):
    raise MemoryError("decoder ran out of memory")

def wrong(path):
    return np.zeros(3)
"""


@pytest.fixture
def npy_case(fake_plugin, tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    fake_plugin("npy-io", MANIFEST, {"impl.py": IMPL})
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[0, 0, :2] = 2
    np.save(tmp_path / "scan.npy", arr)
    np.savez(tmp_path / "seg.npz", labels=labels)
    for name in ("x.boom", "x.wrong"):
        (tmp_path / name).write_bytes(b"?")
    return tmp_path / "scan.npy", tmp_path / "seg.npz", arr, labels


def test_loaders_use_the_plugin_readers(npy_case) -> None:
    image_path, seg_path, arr, labels = npy_case
    with use_registry(PluginRegistry()) as reg:
        image = load_image(image_path)
        np.testing.assert_array_equal(image.array, arr)
        np.testing.assert_allclose(image.spacing_mm, [0.5, 0.5, 2.0])
        assert reg.get("readers", "npy-image").status is Status.LOADED
        seg = load_labels(seg_path, image=image)
        assert sorted(seg.names) == ["aorta", "liver"]
        np.testing.assert_array_equal(seg.mask("liver"), labels == 1)


def test_broken_readers_are_isolated(npy_case) -> None:
    image_path, _, arr, _ = npy_case
    with use_registry(PluginRegistry()) as reg:
        with pytest.raises(PluginError, match=r"readers 'broken' of plugin 'npy-io' "
                           r"\(npy_io.impl:explode\) failed: reading x.boom raised MemoryError"):
            load_image(image_path.with_name("x.boom"))
        with pytest.raises(PluginError, match="returned ndarray, not ImageVolume"):
            load_image(image_path.with_name("x.wrong"))
        assert reg.get("readers", "npy-image").status is Status.AVAILABLE
        np.testing.assert_array_equal(load_image(image_path).array, arr)  # others still work


def test_convert_command_reads_through_the_plugin(npy_case, tmp_path) -> None:
    image_path, _, arr, _ = npy_case
    out = tmp_path / "scan.nii.gz"
    proc = subprocess.run([sys.executable, "-m", "ir_planner", "-q", "convert",
                           str(image_path), str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    back = load_image(out)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.spacing_mm, [0.5, 0.5, 2.0])
    bad = subprocess.run([sys.executable, "-m", "ir_planner", "-q", "convert",
                          str(image_path.with_name("x.boom")), str(tmp_path / "b.nii.gz")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "MemoryError: decoder ran out of memory" in bad.stderr
    assert not (tmp_path / "b.nii.gz").exists()
