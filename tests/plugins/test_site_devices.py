"""First-party plugin ``plugins/site-devices``, installed in the test environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ir_planner.cli import main
from ir_planner.core.plan import CaseRef, Plan, TrajectoryRecord
from ir_planner.core.plugins import PluginRegistry, Status
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import write_image_file
from ir_planner.planning.ablation.devices import DeviceCatalog


def test_discovered_through_its_entry_point() -> None:
    reg = PluginRegistry()
    p = reg.plugin("site-devices")
    assert p.source.startswith("ir-planner-site-devices 0.1.0 (entry point site-devices = "
                               "ir_planner_site_devices:plugin.toml)")
    assert p.status is Status.AVAILABLE and p.ir_planner_version == ">=0.1, <0.2"
    assert [c.id for c in p.contributions] == ["site-stock"]


def test_catalog_devices_cite_their_sources() -> None:
    cat = DeviceCatalog(user_dir="/nonexistent")
    mwa = cat.get("site-liver-mwa")
    builtin = cat.get("neuwave-pr")
    # the site offers only the CT-measured setting, with the built-in's cited numbers
    assert [s.name for s in mwa.settings] == ["65W-10min-CT"]
    assert mwa.setting().zone == builtin.setting("65W-10min-CT").zone
    assert mwa.references["mathy2024"] == builtin.references["mathy2024"]
    coax = cat.get("site-coaxial-17g")
    assert coax.outer_diameter_mm == cat.get("biopsy-17g").outer_diameter_mm
    assert "length_mm" in coax.assumed and coax.length_mm == 100.0
    assert "site-devices" in mwa.source_file or "site_devices.json" in mwa.source_file
    # blind to installed plugins: the site's devices are gone, the built-ins remain
    assert "site-liver-mwa" not in DeviceCatalog(include_plugins=False).ids()


def test_devices_command_lists_them() -> None:
    proc = subprocess.run([sys.executable, "-m", "ir_planner", "devices", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ids = {d["id"] for d in json.loads(proc.stdout)}
    assert {"site-liver-mwa", "site-coaxial-17g", "neuwave-pr"} <= ids


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site_case")
    n = 56
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -(n - 1) / 2
    grid = ImageVolume(np.zeros((n, n, n), np.int16), affine, modality="CT")
    kk, jj, ii = np.indices(grid.shape)
    p = grid.index_to_world(np.stack([ii, jj, kk], axis=-1))
    body = np.linalg.norm(p[..., :2], axis=-1) <= 26
    write_image_file(grid.with_array(np.where(body, 40, -1000).astype(np.int16)),
                     root / "ct.nii.gz")
    masks = root / "masks"
    masks.mkdir()
    for name, m in {"tumour": np.linalg.norm(p, axis=-1) <= 7.0,
                    "liver": body & (np.linalg.norm(p, axis=-1) <= 22)}.items():
        write_image_file(grid.with_array(m.astype(np.uint8)), masks / f"{name}.nii.gz")
    plan = Plan(case=CaseRef(image_path=str(root / "ct.nii.gz"), labels_path="masks"),
                target_structure="tumour")
    plan.add_trajectory(TrajectoryRecord(name="T", entry_lps=(0.0, -26.0, 0.0),
                                         target_lps=(0.0, 0.0, 0.0)))
    plan.save(root / "plan.json")
    return root


def test_ablate_uses_the_site_device(case: Path, tmp_path: Path) -> None:
    """The site id gives exactly what the built-in device + the same cited setting gives."""
    outs = {}
    for device, setting in (("site-liver-mwa", None), ("neuwave-pr", "65W-10min-CT")):
        out = tmp_path / f"{device}.json"
        argv = ["-q", "ablate", str(case / "plan.json"), "--device", device, "--depth-offset",
                "10", "--out", str(out)]
        assert main(argv + (["--setting", setting] if setting else [])) == 0
        (rec,) = Plan.load(out).ablations
        assert rec.device_id == device and rec.setting == "65W-10min-CT"
        outs[device] = {k: v for k, v in rec.metrics.items() if k != "group"}
    assert outs["site-liver-mwa"] == outs["neuwave-pr"]
    assert outs["neuwave-pr"]["coverage_pct"] == 100.0
