"""``ir-planner datasets``: list / verify against the real copies, fetch from loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ir_planner.cli import main
from tests.sample.http_fixture import free_port, serve_folder, write_registry


def test_list_shows_datasets_and_cache_state(shared_data: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["datasets", "list", "--cache-dir", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "totalseg-ct" in out and "dcmqi-seg" in out and "29/29" in out
    assert "Apache-2.0" in out and "BSD-3-Clause" in out


def test_verify_subprocess_with_env_cache(shared_data: Path) -> None:
    env = dict(os.environ, IR_PLANNER_DATA_DIR=str(shared_data))
    out = subprocess.run([sys.executable, "-m", "ir_planner", "-q", "datasets", "verify",
                          "dcm-qa-ct-ge-tilt"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "all 29 files verified" in out.stdout


def test_verify_missing_files_is_a_one_line_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["-q", "datasets", "verify", "dcmqi-seg", "--cache-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "ir-planner datasets fetch dcmqi-seg" in err[0]
    assert "missing" in captured.out
    assert main(["datasets", "verify", "no-such-set"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_fetch_subprocess_from_loopback_and_offline(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(200_000)
    (www / "scan.bin").write_bytes(data)
    cache = tmp_path / "cache"
    with serve_folder(www) as (base, _requests):
        reg = write_registry(tmp_path / "r.json", [
            {"path": "set/scan.bin", "url": f"{base}/scan.bin", "data": data}])
        out = subprocess.run([sys.executable, "-m", "ir_planner", "datasets", "fetch", "test",
                              "--cache-dir", str(cache), "--registry", str(reg),
                              "--timeout", "5"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (cache / "set" / "scan.bin").read_bytes() == data
    assert "1 files verified" in out.stdout and "%" in out.stderr  # progress shown
    reg = write_registry(tmp_path / "r2.json", [
        {"path": "set/other.bin", "url": f"http://127.0.0.1:{free_port()}/o.bin", "data": b"1"}])
    assert main(["-q", "datasets", "fetch", "test", "--cache-dir", str(cache), "--registry",
                 str(reg), "--timeout", "5"]) == 2
    assert not (cache / "set" / "other.bin").exists()
