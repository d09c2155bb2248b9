"""Shared fixtures: paths to the real third-party data in ../shared/data."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ir_planner.core.plugins import PluginRegistry, isolated_registry

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real scans; never copied into the repo)."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(f"real test data not found at {SHARED_DATA}; the suite needs ../shared/data")
    return SHARED_DATA


# -- plugins (ir_planner.core.plugins) ----------------------------------------------------------
@pytest.fixture
def plugin_registry() -> Iterator[PluginRegistry]:
    """The application's plugin registry for one test, blind to installed plugins.

    Code under test sees IR Planner's own contributions and only the plugins the test
    registers (``plugin_registry.register(manifest)``) or installs with ``fake_plugin``.
    """
    with isolated_registry() as registry:
        yield registry


@pytest.fixture
def fake_plugin(tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """Install a plugin distribution for one test: ``fake_plugin(name, manifest, files)``.

    Writes ``<package>/plugin.toml`` (``manifest``; None = no manifest file), the given
    ``files`` (relative path -> text) and a ``*.dist-info`` with the ``ir_planner.plugins``
    entry point into a folder put on ``sys.path`` (and ``PYTHONPATH`` for subprocesses):
    discovered through the real ``importlib.metadata`` machinery.
    """
    site = tmp_path / "site-packages"
    site.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
    packages: list[str] = []

    def install(name: str, manifest: str | None, files: dict[str, str] | None = None,
                *, version: str = "1.0", entry_point: str | None = None) -> Path:
        package = name.replace("-", "_")
        packages.append(package)
        (site / package).mkdir()
        (site / package / "__init__.py").write_text("")
        if manifest is not None:
            (site / package / "plugin.toml").write_text(textwrap.dedent(manifest))
        for rel, text in (files or {}).items():
            (site / package / rel).write_text(textwrap.dedent(text))
        dist = site / f"{package}-{version}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (dist / "entry_points.txt").write_text(
            f"[ir_planner.plugins]\n{name} = {entry_point or package + ':plugin.toml'}\n")
        importlib.invalidate_caches()
        return site / package

    yield install
    for package in packages:
        for mod in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[mod]
