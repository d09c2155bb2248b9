"""The plugin mechanism: manifests, discovery, lazy import, isolation of broken plugins."""

from __future__ import annotations

import sys

import pytest

from ir_planner import __version__
from ir_planner.core.plugins import (
    BUILTIN_PLUGIN,
    KINDS,
    Kind,
    ManifestError,
    PluginError,
    PluginRegistry,
    Status,
    get_registry,
    isolated_registry,
    parse_manifest,
    version_in_range,
)

GOOD = """
schema = "ir-planner-plugin/1"
name = "good"
ir_planner_version = ">=0.1"

[[segmenters]]
id = "good-seg"
python_name = "good.impl:Seg"
modalities = ["ct"]

[[devices]]
id = "good-devices"
python_name = "good.impl:catalog"
"""

IMPL = """
LOADED = True
class Seg:
    name = "good-seg"
    modalities = ("CT",)
def catalog():
    return []
"""

# one python_name per kind, all in a module that does not exist
_EXTRA = {"readers": 'what = "image"\nfilename_patterns = ["*.xyz"]'}


def _manifest_of_every_kind(module: str) -> str:
    blocks = [f'[[{k}]]\nid = "{k}-1"\npython_name = "{module}:thing"\n{_EXTRA.get(k, "")}'
              for k in KINDS]
    return 'schema = "ir-planner-plugin/1"\nname = "every"\n\n' + "\n\n".join(blocks)


# -- versions -----------------------------------------------------------------------------
@pytest.mark.parametrize("version,spec,expected", [
    ("0.1.0", ">=0.1, <0.2", True),
    ("0.2.0", ">=0.1, <0.2", False),
    ("0.1.0", "==0.1.*", True),
    ("0.10.0", "==0.1.*", False),
    ("0.1.5", "~=0.1.2", True),
    ("0.2.0", "~=0.1.2", False),
    ("1.0", "!=1.0.0", False),
    ("1.0rc1", ">=1.0", True),  # pre-releases compare by their release numbers
    ("0.1.0", "", True),
    ("0.1.0", ">0.1", False),
    ("0.1.1", ">0.1", True),
])
def test_version_in_range(version: str, spec: str, expected: bool) -> None:
    assert version_in_range(version, spec) is expected


@pytest.mark.parametrize("spec", [">= one", "0.1 - 0.2", ">=0.1.*", "~=1", "=>0.1"])
def test_bad_version_spec_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="version clause|only with|two version parts"):
        version_in_range("0.1.0", spec)


# -- manifests ----------------------------------------------------------------------------
def _doc(**kw: object) -> dict[str, object]:
    doc: dict[str, object] = {"schema": "ir-planner-plugin/1", "name": "p",
                              "segmenters": [{"id": "s", "python_name": "m:S"}]}
    doc.update(kw)
    return doc


def test_manifest_parsed() -> None:
    p = parse_manifest(_doc(ir_planner_version=">=0.1", version="2.0"), source="t")
    assert p.name == "p" and p.version == "2.0" and p.status is Status.AVAILABLE
    [c] = p.contributions
    assert (c.kind, c.id, c.python_name, c.plugin) == (Kind.SEGMENTERS, "s", "m:S", "p")


@pytest.mark.parametrize("change,message", [
    ({"schema": "other"}, "schema must be 'ir-planner-plugin/1'"),
    ({"segmenterz": []}, "unknown field 'segmenterz'"),
    ({"segmenters": [{"id": "s"}]}, "missing field 'python_name'"),
    ({"segmenters": [{"id": "s", "python_name": "not a name"}]}, "must look like"),
    ({"segmenters": [{"id": "s", "python_name": "m:S", "colour": 1}]}, "unknown field 'colour'"),
    ({"segmenters": [{"id": "bad id!", "python_name": "m:S"}]}, "id 'bad id!'"),
    ({"segmenters": [{"id": "s", "python_name": "m:S"}] * 2}, "declared twice"),
    ({"segmenters": {"id": "s"}}, "array of tables"),
    ({"segmenters": []}, "contributes nothing"),
    ({"readers": [{"id": "r", "python_name": "m:r", "filename_patterns": ["*.x"]}],
      "segmenters": []}, "missing field 'what'"),
    ({"readers": [{"id": "r", "python_name": "m:r", "what": "mesh",
                   "filename_patterns": ["*.x"]}], "segmenters": []}, "what must be one of"),
    ({"segmenters": [{"id": "s", "python_name": "m:S", "modalities": [1]}]}, "modalities"),
    ({"ir_planner_version": "about 0.1"}, "ir_planner_version: bad version clause"),
    ({"name": ""}, "name '' must be"),
])
def test_nonsense_manifest_refused_with_reason(change: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        parse_manifest(_doc(**change), source="where.toml")
    assert str(info.value).startswith("where.toml: ")


def test_incompatible_version_is_failed_with_reason() -> None:
    p = parse_manifest(_doc(ir_planner_version=">=9"), source="t")
    assert p.status is Status.FAILED
    assert p.reason == f"supports IR Planner >=9, this is {__version__}; update the plugin or " \
        "IR Planner"


# -- discovery through entry points ----------------------------------------------------------
def test_installed_plugin_discovered_without_importing_its_code(fake_plugin) -> None:
    fake_plugin("good", GOOD, {"impl.py": IMPL}, version="1.2")
    reg = PluginRegistry()
    p = reg.plugin("good")
    assert p.version == "1.2" and "good 1.2" in p.source and p.status is Status.AVAILABLE
    assert {"classic", "good-seg"} <= {c.id for c in reg.contributions("segmenters")}
    assert reg.get("segmenters", "good-seg").modalities == ("CT",)
    assert "good.impl" not in sys.modules  # declared, not imported
    obj = reg.load(reg.get("segmenters", "good-seg"))
    assert "good.impl" in sys.modules and obj.__name__ == "Seg"  # type: ignore[attr-defined]
    assert reg.get("segmenters", "good-seg").status is Status.LOADED


def test_builtin_plugin_declared_through_the_same_group() -> None:
    reg = PluginRegistry()
    builtin = reg.plugins()[0]
    assert builtin.name == BUILTIN_PLUGIN and "entry point" in builtin.source
    assert {(c.kind.value, c.id) for c in builtin.contributions} >= {
        ("segmenters", "classic"), ("devices", "builtin")}


def test_isolated_registry_blocks_installed_plugins(fake_plugin) -> None:
    fake_plugin("good", GOOD, {"impl.py": IMPL})
    assert "good" in [p.name for p in PluginRegistry().plugins()]
    with isolated_registry() as reg:
        assert get_registry() is reg
        names = [p.name for p in reg.plugins()]
        # the first-party plugins are installed in the test environment, but not seen here
        assert names == [BUILTIN_PLUGIN]
    with isolated_registry(builtin=False, manifests=[GOOD]) as reg:
        assert [p.name for p in reg.plugins()] == ["good"]
    assert get_registry() is not reg


def test_plugin_registry_fixture_sees_only_registered(plugin_registry) -> None:
    assert [p.name for p in get_registry().plugins()] == [BUILTIN_PLUGIN]
    plugin_registry.register(GOOD)
    assert [p.name for p in get_registry().plugins()] == [BUILTIN_PLUGIN, "good"]


# -- broken plugins are isolated --------------------------------------------------------------
def test_bad_manifests_fail_alone(fake_plugin) -> None:
    fake_plugin("good", GOOD, {"impl.py": IMPL})
    fake_plugin("notoml", "schema = [unclosed")
    fake_plugin("nofile", None)
    fake_plugin("nonsense", 'schema = "ir-planner-plugin/1"\nname = "nonsense"\n'
                '[[segmenters]]\nid = "x"\npython_name = "oops"\n')
    fake_plugin("notamanifest", None, entry_point="notamanifest.impl:thing")
    fake_plugin("future", GOOD.replace('name = "good"', 'name = "future"')
                .replace(">=0.1", ">=99.0").replace("good-", "future-"))
    reg = PluginRegistry()
    status = {p.name: (p.overall_status, p.reason) for p in reg.plugins()}
    assert status["good"] == (Status.AVAILABLE, "")
    assert status["notoml"][0] is Status.FAILED and "not valid TOML" in status["notoml"][1]
    assert status["nofile"][0] is Status.FAILED and "cannot read manifest" in status["nofile"][1]
    assert "python_name 'oops' must look like" in status["nonsense"][1]
    assert "must name a manifest file" in status["notamanifest"][1]
    assert status["future"][0] is Status.FAILED and "supports IR Planner >=99.0" in \
        status["future"][1]
    # failed plugins contribute nothing; the good one and the built-ins work
    offered = {c.id for c in reg.contributions("segmenters")}
    assert {"classic", "good-seg"} <= offered and "future-seg" not in offered
    with pytest.raises(PluginError, match="future-seg.*supports IR Planner >=99.0"):
        reg.get("segmenters", "future-seg")


@pytest.mark.parametrize("kind", KINDS)
def test_import_error_of_any_kind_is_isolated(kind: str, plugin_registry) -> None:
    plugin_registry.register(_manifest_of_every_kind("no_such_module_xyz"))
    c = plugin_registry.get(kind, f"{kind}-1")
    with pytest.raises(PluginError, match=rf"{kind} '{kind}-1' of plugin 'every'.*could not be "
                       r"loaded: import failed: ModuleNotFoundError.*no_such_module_xyz"):
        plugin_registry.load(c)
    assert c.status is Status.FAILED and "no_such_module_xyz" in c.reason
    assert c not in plugin_registry.contributions(kind)  # no longer offered
    with pytest.raises(PluginError, match="cannot be used: import failed"):
        plugin_registry.get(kind, f"{kind}-1")
    # the others still load
    other = next(k for k in KINDS if k != kind)
    assert plugin_registry.get(other, f"{other}-1").status is Status.AVAILABLE
    assert plugin_registry.load(plugin_registry.get("segmenters", "classic")) is not None \
        or kind == "segmenters"


def test_module_raising_on_import_is_isolated(fake_plugin) -> None:
    fake_plugin("bomb", GOOD.replace('"good"', '"bomb"').replace("good.", "bomb.")
                .replace("good-", "bomb-"), {"impl.py": "raise RuntimeError('boom at import')"})
    reg = PluginRegistry()
    reg.load_all()
    p = reg.plugin("bomb")
    assert p.overall_status is Status.FAILED
    assert all("RuntimeError: boom at import" in c.reason for c in p.contributions)
    assert reg.plugin(BUILTIN_PLUGIN).overall_status is Status.LOADED


def test_guard_isolates_runtime_errors(plugin_registry) -> None:
    plugin_registry.register(GOOD)
    c = plugin_registry.get("segmenters", "good-seg")
    with pytest.raises(PluginError, match=r"good-seg.*failed: run raised ZeroDivisionError"):
        with plugin_registry.guard(c, "run"):
            _ = 1 / 0
    assert c.status is Status.FAILED and "ZeroDivisionError" in c.reason
    # an explained (expected) error passes through and does not mark the plugin failed
    d = plugin_registry.get("devices", "good-devices")
    from ir_planner.core.errors import InputError

    with pytest.raises(InputError, match="explained"):
        with plugin_registry.guard(d):
            raise InputError("explained")
    assert d.status is Status.AVAILABLE


def test_same_id_twice_second_is_failed(plugin_registry) -> None:
    plugin_registry.register(GOOD)
    p2 = plugin_registry.register(GOOD.replace('name = "good"', 'name = "twin"'))
    assert all(c.status is Status.FAILED and "already contributed by plugin 'good'" in c.reason
               for c in p2.contributions)
    with pytest.raises(ManifestError, match="not valid TOML"):
        plugin_registry.register("[[[")
    p3 = plugin_registry.register(GOOD)  # same plugin name
    assert p3.status is Status.FAILED and "already called 'good'" in p3.reason


def test_reader_patterns(tmp_path) -> None:
    with isolated_registry(builtin=False) as plugin_registry:
        plugin_registry.register(
            'schema = "ir-planner-plugin/1"\nname = "r"\n[[readers]]\nid = "xyz"\n'
            'python_name = "m:read"\nwhat = "image"\nfilename_patterns = ["*.XYZ", "*.xyz.gz", "*/"]\n')
        c = plugin_registry.get("readers", "xyz")
        assert c.handles("a/b/scan.xyz") and c.handles("scan.XYZ.GZ") and not c.handles("scan.nrrd")
        assert c.handles(tmp_path) and not c.handles(tmp_path / "missing")
        assert plugin_registry.find_reader("x.xyz", "image") is c
        assert plugin_registry.find_reader("x.xyz", "segmentation") is None


def test_legacy_group_still_read(tmp_path, monkeypatch) -> None:
    site = tmp_path / "site"
    (site / "oldplug-0.1.dist-info").mkdir(parents=True)
    (site / "oldplug-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: oldplug\nVersion: 0.1\n")
    (site / "oldplug-0.1.dist-info" / "entry_points.txt").write_text(
        "[ir_planner.segmenters]\nold = oldplug:Seg\n")
    monkeypatch.syspath_prepend(str(site))
    import importlib

    importlib.invalidate_caches()
    reg = PluginRegistry()
    [p] = [p for p in reg.plugins() if p.legacy]
    assert p.name == "oldplug-old" and "legacy group ir_planner.segmenters" in p.source
    assert reg.get("segmenters", "old").python_name == "oldplug:Seg"


def test_specific_reader_pattern_beats_catch_all(tmp_path) -> None:
    with isolated_registry(builtin=False) as plugin_registry:
        plugin_registry.register(
            'schema = "ir-planner-plugin/1"\nname = "generic"\n[[readers]]\nid = "anything"\n'
            'python_name = "m:read"\nwhat = "image"\nfilename_patterns = ["*", "*/"]\n')
        plugin_registry.register(
            'schema = "ir-planner-plugin/1"\nname = "zarr"\n[[readers]]\nid = "zarr"\n'
            'python_name = "m:read"\nwhat = "image"\nfilename_patterns = ["*.zarr/", "*.xyz"]\n')
        (tmp_path / "scan.zarr").mkdir()
        (tmp_path / "dicom").mkdir()
        assert plugin_registry.find_reader(tmp_path / "scan.zarr", "image").id == "zarr"
        assert plugin_registry.find_reader(tmp_path / "a.xyz", "image").id == "zarr"
        assert plugin_registry.find_reader(tmp_path / "dicom", "image").id == "anything"
        assert plugin_registry.find_reader(tmp_path / "IM0001", "image").id == "anything"
        # a file pattern does not match a folder, nor a folder pattern a file
        assert not plugin_registry.get("readers", "zarr").handles(tmp_path / "x.zarr")


def test_builtin_manifest_python_names_all_import() -> None:
    """Every contribution IR Planner declares for itself imports (no typo in plugin.toml),
    and its readers' patterns match what the loaders accept."""
    from ir_planner.io.image_files import IMAGE_SUFFIXES

    reg = PluginRegistry(discover=False)
    builtin = reg.register_builtin()
    reg.load_all()
    assert [(c.id, c.reason) for c in builtin.contributions if c.status is not Status.LOADED] \
        == []
    kinds = {c.kind.value for c in builtin.contributions}
    assert {"segmenters", "devices", "readers"} <= kinds
    patterns = [f"*{s}" for s in IMAGE_SUFFIXES]
    assert list(reg.get("readers", "image-file").filename_patterns) == patterns
    assert list(reg.get("readers", "label-map").filename_patterns) == patterns
