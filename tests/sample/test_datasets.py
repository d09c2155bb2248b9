"""The public-dataset registry: hashes of the real copies, verified downloads."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from ir_planner.core.errors import DatasetError
from ir_planner.sample.datasets import (
    DATA_DIR_ENV,
    default_cache_dir,
    fetch_dataset,
    get_dataset,
    load_registry,
    sha256_file,
    verify_dataset,
)
from tests.sample.http_fixture import free_port, serve_folder, write_registry


def test_registry_describes_the_shared_real_data(shared_data: Path) -> None:
    reg = load_registry()
    assert {"totalseg-ct", "dcmqi-seg", "dcm-qa-ct-ge-tilt"} <= set(reg)
    for ds in reg.values():
        assert ds.licence and ds.homepage.startswith("https://github.com/") and ds.description
        for f in ds.files:
            assert f.url.startswith("https://raw.githubusercontent.com/")
            commit = f.url.split("/")[5]
            assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit), f.url
            assert len(f.sha256) == 64
        states = verify_dataset(ds, shared_data)  # the real copies match, offline
        assert all(s.ok for s in states), [(s.file.path, s.detail) for s in states if not s.ok]
    assert len(reg["dcm-qa-ct-ge-tilt"].files) == 29  # 28 slices + licence


def test_verify_reports_missing_and_corrupt_files(shared_data: Path, tmp_path: Path) -> None:
    ds = get_dataset("dcmqi-seg")
    for f in ds.files[:2]:
        (tmp_path / f.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / f.path, tmp_path / f.path)
    corrupt = tmp_path / ds.files[1].path
    data = bytearray(corrupt.read_bytes())
    data[1000] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    states = verify_dataset(ds, tmp_path)
    assert [s.state for s in states[:3]] == ["ok", "wrong_hash", "missing"]
    assert states[0].local_path == tmp_path / ds.files[0].path


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "ir-planner" / "data"


def test_unknown_dataset_and_bad_registry(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="known datasets: .*totalseg-ct"):
        get_dataset("nope")
    bad = write_registry(tmp_path / "r.json", [{"path": "../escape.bin", "url": "http://x/",
                                                 "data": b"x"}])
    with pytest.raises(DatasetError, match="inside the cache"):
        load_registry(bad)
    with pytest.raises(DatasetError, match="unreadable"):
        load_registry(tmp_path / "missing.json")


def test_fetch_from_loopback_server(tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    good = bytes(range(256)) * 4000  # 1 MB: several chunks
    (served / "good.bin").write_bytes(good)
    (served / "changed.bin").write_bytes(b"upstream changed this file")
    cache = tmp_path / "cache"
    with serve_folder(served) as (base, requests):
        reg = load_registry(write_registry(tmp_path / "r.json", [
            {"path": "a/good.bin", "url": f"{base}/good.bin", "data": good}]))
        paths = fetch_dataset("test", cache, registry=reg, timeout_s=5)
        assert paths == [cache / "a" / "good.bin"] and paths[0].read_bytes() == good
        n = len(requests)
        fetch_dataset("test", cache, registry=reg, timeout_s=5)  # verified already: no request
        assert len(requests) == n

        # an interrupted earlier download is resumed with a Range request
        paths[0].unlink()
        (cache / "a" / "good.bin.part").write_bytes(good[:300_000])
        fetch_dataset("test", cache, registry=reg, timeout_s=5)
        assert requests[-1] == "/good.bin|bytes=300000-"
        assert paths[0].read_bytes() == good and not (cache / "a" / "good.bin.part").exists()

        # wrong hash: rejected, nothing left behind
        reg = load_registry(write_registry(tmp_path / "r2.json", [
            {"path": "b/changed.bin", "url": f"{base}/changed.bin",
             "data": b"what the registry expected!"}]))
        with pytest.raises(DatasetError, match="rejected"):
            fetch_dataset("test", cache, registry=reg, timeout_s=5)
        assert not any((cache / "b").iterdir())

        # 404
        reg = load_registry(write_registry(tmp_path / "r3.json", [
            {"path": "c/missing.bin", "url": f"{base}/missing.bin", "data": b"x"}]))
        with pytest.raises(DatasetError, match="HTTP 404"):
            fetch_dataset("test", cache, registry=reg, timeout_s=5)
        assert not any((cache / "c").iterdir())

    # connection refused (offline)
    port = free_port()
    reg = load_registry(write_registry(tmp_path / "r4.json", [
        {"path": "d/x.bin", "url": f"http://127.0.0.1:{port}/x.bin", "data": b"x"}]))
    with pytest.raises(DatasetError, match="offline"):
        fetch_dataset("test", cache, registry=reg, timeout_s=5)
    assert not (cache / "d" / "x.bin").exists() and not (cache / "d" / "x.bin.part").exists()


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1_000_000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
