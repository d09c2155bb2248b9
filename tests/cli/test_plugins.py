"""``ir-planner plugins``, and broken plugins installed next to good ones (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ir_planner.cli import main
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import write_image_file


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ir_planner", *args], capture_output=True,
                          text=True, timeout=300)


def _manifest(name: str, kind: str, python_name: str, extra: str = "") -> str:
    return (f'schema = "ir-planner-plugin/1"\nname = "{name}"\n{extra}\n'
            f'[[{kind}]]\nid = "{name}"\npython_name = "{python_name}"\n')


@pytest.fixture
def broken_plugins(fake_plugin) -> None:
    """One broken plugin of each sort, installed (entry points) beside the real ones."""
    fake_plugin("imports-missing", _manifest("imports-missing", "segmenters",
                                             "imports_missing.impl:Seg"),
                {"impl.py": "import no_such_dependency_xyz\n"})
    fake_plugin("bad-manifest", 'schema = "ir-planner-plugin/1"\nname = "bad-manifest"\n'
                '[[segmenters]]\nid = "x"\npython_name = "bad_manifest:Seg"\ncolour = "red"\n')
    fake_plugin("too-new", _manifest("too-new", "segmenters", "too_new.impl:Seg",
                                     'ir_planner_version = ">=2.0"'))
    fake_plugin("raises", _manifest("raises", "segmenters", "raises.impl:Seg"),
                {"impl.py": """
                    class Seg:
                        name = "raises"
                        modalities = ("CT",)
                        def run(self, image, progress=None):
                            raise RuntimeError("segfault in the model")
                """})
    fake_plugin("bad-devices", _manifest("bad-devices", "devices", "bad_devices.impl:files"),
                {"impl.py": """
                    def files():
                        raise OSError("catalog share not mounted")
                """})


def test_lists_plugins_contributions_versions_status() -> None:
    proc = _run("plugins")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["plugin", "version", "supports", "kind", "contribution",
                                "status", "title"]
    rows = {tuple(line.split()[:6]) for line in lines[2:] if line.strip()}
    assert ("ir-planner", "0.1.0", "any", "segmenters", "classic", "available") in rows
    assert ("site-devices", "0.1.0", ">=0.1,", "<0.2", "devices", "site-stock") in rows
    assert ("totalsegmentator", "0.1.0", ">=0.1,", "<0.2", "segmenters",
            "totalsegmentator") in rows
    assert "Failed" not in proc.stdout


def test_broken_plugins_reported_and_isolated(broken_plugins) -> None:
    proc = _run("plugins", "--load")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Failed (skipped; the rest of IR Planner works):" in out
    assert "imports-missing: segmenters 'imports-missing' (imports_missing.impl:Seg): import " \
        "failed: ModuleNotFoundError: No module named 'no_such_dependency_xyz'" in out
    assert "bad-manifest: " in out and "unknown field 'colour'" in out
    assert "too-new: supports IR Planner >=2.0, this is 0.1.0" in out
    # the good ones still load
    assert "site-devices      0.1.0" in out and "totalsegmentator  0.1.0" in out
    data = {p["name"]: p for p in json.loads(_run("plugins", "--json").stdout)}
    assert data["raises"]["status"] == "available"  # declared fine; fails only when run
    assert data["too-new"]["status"] == "failed" and data["ir-planner"]["status"] == "available"
    assert data["bad-manifest"]["contributions"] == []


def test_commands_work_beside_broken_plugins(broken_plugins, tmp_path: Path) -> None:
    proc = _run("devices", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {"site-liver-mwa", "neuwave-pr"} <= {d["id"] for d in json.loads(proc.stdout)}
    assert "device plugin 'bad-devices' (bad_devices.impl:files) failed and was skipped: " \
        "devices 'bad-devices' of plugin 'bad-devices' (bad_devices.impl:files) failed: " \
        "reading its catalog raised OSError: catalog share not mounted" in proc.stderr
    image = tmp_path / "ct.nii.gz"
    write_image_file(ImageVolume(np.full((4, 5, 6), -1000, np.int16), np.eye(4)), image)
    for name, message in (
        ("raises", "segmenters 'raises' of plugin 'raises' (raises.impl:Seg) failed: run "
                   "raised RuntimeError: segfault in the model"),
        ("imports-missing", "could not be loaded: import failed: ModuleNotFoundError"),
        ("too-new", "cannot be used: supports IR Planner >=2.0"),
    ):
        out = tmp_path / f"{name}.nii.gz"
        proc = _run("-q", "segment", str(image), "--segmenter", name, "--out", str(out))
        assert proc.returncode == 2 and not out.exists()
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert message in proc.stderr


def test_kind_filter_and_json(capsys) -> None:
    assert main(["plugins", "--kind", "devices", "--json"]) == 0
    data = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert [c["id"] for c in data["ir-planner"]["contributions"]] == ["builtin"]
    assert data["totalsegmentator"]["contributions"] == []
    assert data["site-devices"]["ir_planner_version"] == ">=0.1, <0.2"
