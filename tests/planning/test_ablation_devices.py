"""The device catalog: cited data, user folder, plugins, validation."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ir_planner.core.errors import InputError
from ir_planner.planning.ablation.devices import DeviceCatalog, parse_catalog

_DOC = {
    "schema": "ir-planner-device/1",
    "references": {"r1": "Someone 2025, Journal, Table 2"},
    "devices": [{
        "id": "my-mw", "name": "My MW", "kind": "microwave",
        "settings": [{"name": "100W-5min", "power_w": 100, "time_min": 5,
                      "zone": {"length_mm": 40, "diameter_mm": 30, "tip_to_centre_mm": 15},
                      "cite": {"power_w": "r1", "time_min": "r1", "length_mm": "r1",
                               "diameter_mm": "r1", "tip_to_centre_mm": "r1"}}],
    }],
}


def test_builtin_catalog_is_cited() -> None:
    cat = DeviceCatalog(include_plugins=False, user_dir="/nonexistent")
    kinds = {d.kind for d in cat.devices()}
    assert kinds == {"microwave", "radiofrequency", "cryo", "biopsy"}
    for d in cat.devices():
        for s in d.settings:
            numbers = set(s.zone) | {k for k in ("power_w", "time_min", "duty_cycle_pct")
                                     if getattr(s, k) is not None}
            assert numbers <= set(s.cite) | set(s.assumed), (d.id, s.name)
            assert all(ref in d.references for ref in s.cite.values())
            assert d.sources_for(s)
    nw = cat.get("neuwave-pr").setting("65W-10min")
    assert (nw.zone["length_mm"], nw.zone["diameter_mm"]) == (47.0, 35.0)  # Mathy et al. 2024
    ct = cat.get("neuwave-pr").setting("65W-10min-CT")
    assert (ct.zone["length_mm"], ct.zone["diameter_mm"]) == (36.0, 27.0)
    assert nw.suggested_calibration == pytest.approx(0.77)
    assert cat.get("biopsy-18g").outer_diameter_mm == pytest.approx(1.270)
    assert cat.get("biopsy-18g").settings == ()


def test_user_folder_overrides_and_bad_file_is_skipped(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mine.json").write_text(json.dumps(_DOC))
    (tmp_path / "broken.json").write_text("{not json")
    monkeypatch.setenv("IR_PLANNER_DEVICES_DIR", str(tmp_path))
    cat = DeviceCatalog(include_plugins=False)
    assert cat.get("my-mw").setting("100W-5min").zone["length_mm"] == 40
    assert any("broken.json" in w for w in cat.warnings)
    assert "neuwave-pr" in cat.ids()


def test_plugins_lazy_and_broken_plugin_skipped(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "plugdevices.py").write_text(textwrap.dedent(f"""
        DOC = {json.dumps(_DOC)!r}
        import json as _j
        CALLS = []
        def catalog():
            CALLS.append(1)
            return [_j.loads(DOC)]
        def broken():
            raise RuntimeError("plugin exploded")
    """))
    dist = tmp_path / "plugdevices-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugdevices\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[ir_planner.devices]\ngood = plugdevices:catalog\nbad = plugdevices:broken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    cat = DeviceCatalog(user_dir="/nonexistent")
    import plugdevices  # type: ignore[import-not-found]

    assert plugdevices.CALLS == []  # nothing loaded before first use
    assert cat.get("my-mw").name == "My MW"
    assert plugdevices.CALLS == [1]
    assert any("bad" in w and "plugin exploded" in w for w in cat.warnings)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["devices"][0]["settings"][0]["cite"].pop("length_mm"), "length_mm has no source"),
    (lambda d: d["devices"][0]["settings"][0]["cite"].update(length_mm="nope"), "unknown reference"),
    (lambda d: d["devices"][0].update(kind="laser"), "kind must be one of"),
    (lambda d: d["devices"][0]["settings"][0]["zone"].pop("tip_to_centre_mm"), "exactly one of"),
    (lambda d: d.update(schema="other"), "schema"),
])
def test_invalid_catalog_rejected(mutate, message: str) -> None:
    doc = json.loads(json.dumps(_DOC))
    mutate(doc)
    with pytest.raises(InputError, match=message):
        parse_catalog(doc, "test.json")


def test_assumed_values_are_allowed_and_listed() -> None:
    doc = json.loads(json.dumps(_DOC))
    s = doc["devices"][0]["settings"][0]
    s["cite"].pop("tip_to_centre_mm")
    s["assumed"] = {"tip_to_centre_mm": "not reported"}
    dev = parse_catalog(doc, "x")[0]
    assert dev.setting(None).assumed == {"tip_to_centre_mm": "not reported"}
