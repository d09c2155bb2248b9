"""A plugin's live source in ``ir-planner live --source`` (installed via entry points)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ir_planner.core.plan import CaseRef, Plan, TrajectoryRecord
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import write_image_file

MANIFEST = """
schema = "ir-planner-plugin/1"
name = "feeds"
ir_planner_version = ">=0.1"

[[live_sources]]
id = "feed"
python_name = "feeds.impl:Feed"
title = "A site's tracker feed"

[[live_sources]]
id = "brokenfeed"
python_name = "feeds.impl:Broken"
"""

IMPL = """
from pathlib import Path

class Feed:
    def __init__(self, session, option):
        self.session, self.option = session, option
    def start(self):
        self.session.source_status("feed", "connected", f"option {self.option}")
        return self
    def stop(self):
        Path(self.option).write_text("stopped")

class Broken(Feed):
    def start(self):
        raise ConnectionRefusedError("tracker at 10.0.0.7 refused")
"""


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("live_case")
    n = 40
    affine = np.eye(4)
    affine[:3, 3] = -(n - 1) / 2
    grid = ImageVolume(np.zeros((n, n, n), np.int16), affine, modality="CT")
    kk, jj, ii = np.indices(grid.shape)
    p = grid.index_to_world(np.stack([ii, jj, kk], axis=-1))
    body = np.linalg.norm(p[..., :2], axis=-1) <= 18
    write_image_file(grid.with_array(np.where(body, 40, -1000).astype(np.int16)),
                     root / "ct.nii.gz")
    masks = root / "masks"
    masks.mkdir()
    write_image_file(grid.with_array((np.linalg.norm(p, axis=-1) <= 5).astype(np.uint8)),
                     masks / "tumour.nii.gz")
    plan = Plan(case=CaseRef(image_path=str(root / "ct.nii.gz"), labels_path=str(masks)),
                target_structure="tumour")
    plan.add_trajectory(TrajectoryRecord(name="T1", entry_lps=(0.0, -18.0, 0.0),
                                         target_lps=(0.0, 0.0, 0.0)))
    plan.save(root / "plan.json")
    return root / "plan.json"


def _live(plan_file: Path, events: Path, *sources: str) -> subprocess.CompletedProcess[str]:
    args = [a for s in sources for a in ("--source", s)]
    return subprocess.run([sys.executable, "-m", "ir_planner", "-q", "live", str(plan_file),
                           "--headless", "--events", str(events), "--exit-after", "1", *args],
                          capture_output=True, text=True, timeout=600)


def test_plugin_source_started_and_stopped(fake_plugin, plan_file, tmp_path) -> None:
    fake_plugin("feeds", MANIFEST, {"impl.py": IMPL})
    marker = tmp_path / "stopped.txt"
    events = tmp_path / "events.jsonl"
    proc = _live(plan_file, events, f"feed:{marker}")
    assert proc.returncode == 0, proc.stderr
    ev = [json.loads(line) for line in events.read_text().splitlines()]
    assert any(e["kind"] == "source" and e.get("source") == "feed" and e.get("state") ==
               "connected" and str(marker) in e.get("detail", "") for e in ev)
    assert any(e["kind"] == "source" and e.get("source") == "feed" and e.get("state") ==
               "started" for e in ev)
    assert marker.read_text() == "stopped"


def test_broken_or_unknown_source_one_line(fake_plugin, plan_file, tmp_path) -> None:
    fake_plugin("feeds", MANIFEST, {"impl.py": IMPL})
    for spec, message in (
        ("brokenfeed:x", "live_sources 'brokenfeed' of plugin 'feeds' (feeds.impl:Broken) "
                         "failed: starting it raised ConnectionRefusedError: tracker at "
                         "10.0.0.7 refused"),
        ("nofeed", "--source 'nofeed': no live_sources contribution named 'nofeed'; "
                   "available: brokenfeed, feed"),
    ):
        proc = _live(plan_file, tmp_path / f"ev_{spec[:4]}.jsonl", spec)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert message in proc.stderr
