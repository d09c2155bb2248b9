"""The device catalog: cited data, user folder, plugins, validation."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from ir_planner.core.errors import InputError
from ir_planner.planning.ablation.devices import (
    EVIDENCE_KINDS,
    HEAT_KINDS,
    Device,
    DeviceCatalog,
    parse_catalog,
)

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
    for d in cat.devices():  # device-level numbers are cited too
        for key in ("outer_diameter_mm", "outer_diameter_tolerance_mm", "length_mm",
                    "active_tip_mm"):
            if getattr(d, key) is not None:
                assert key in d.cite or key in d.assumed, (d.id, key)


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
    from ir_planner.core.plugins import PluginRegistry, use_registry

    with use_registry(PluginRegistry()):  # discovers the plugin installed above
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
    (lambda d: d["devices"][0]["settings"][0].update(evidence="hearsay"), "evidence must be"),
    (lambda d: d["devices"][0].update(outer_diameter_tolerance_mm=0.01),
     "outer_diameter_tolerance_mm has no source"),
    (lambda d: d["devices"][0].update(outer_diameter_tolerance_mm=-1.0,
                                      cite={"outer_diameter_tolerance_mm": "r1"}),
     "must be > 0"),
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


# -- the built-in data: regression tests against the cited source text ----------------------
@pytest.fixture(scope="module")
def builtin() -> DeviceCatalog:
    return DeviceCatalog(include_plugins=False, user_dir="/nonexistent")


def _ref(dev: Device, key: str) -> str:
    return dev.references[dev.cite[key]] if key in dev.cite else ""


def _appears(value: float, text: str) -> bool:
    """Whether ``value`` (mm) is written in ``text`` in mm or in cm (as sources do)."""
    forms = {f"{value:g} mm"}
    for cm in (f"{value / 10:.2f}", f"{value / 10:.1f}"):
        forms |= {f"{cm} cm", f"{cm} x", f"{cm} +/-"}
    return any(f in text for f in forms)


def test_every_builtin_setting_states_its_evidence(builtin: DeviceCatalog) -> None:
    for d in builtin.devices():
        for s in d.settings:
            assert s.evidence in EVIDENCE_KINDS, (d.id, s.name, s.evidence)
        assert all(x["evidence"] for x in d.to_dict()["settings"])
    nw = builtin.get("neuwave-pr")
    # chart and measured zones are kept apart and labelled
    assert nw.setting("65W-10min").evidence == "vendor-chart"
    assert nw.setting("65W-10min-CT").evidence == "in-vivo-patient"
    assert builtin.get("rf-ic-2cm").setting("12min-exvivo").evidence == "ex-vivo"
    assert builtin.get("rf-ic-2cm").setting("12min-invivo").evidence == "in-vivo-animal"
    assert builtin.get("cryo-17g").setting(None).evidence == "phantom"


def test_builtin_zone_numbers_are_in_the_quoted_source_text(builtin: DeviceCatalog) -> None:
    """Every cited heat-zone size, power, time and needle diameter is written in the
    reference text stored with it (the abstract / table row we read), so a typo in a
    catalog number fails here."""
    checked = 0
    for d in builtin.devices():
        for s in d.settings:
            for key in ("length_mm", "diameter_mm", "distal_edge_beyond_tip_mm"):
                if key in s.zone and key in s.cite:
                    text = d.references[s.cite[key]]
                    assert _appears(float(s.zone[key]), text), (d.id, s.name, key, s.zone[key])
                    checked += 1
            if s.power_w is not None:
                assert f"{s.power_w:g} W" in d.references[s.cite["power_w"]]
            if s.time_min is not None:
                text = d.references[s.cite["time_min"]]
                assert f"{s.time_min:g} min" in text or f"{s.time_min:g}-min" in text
        if d.outer_diameter_mm is not None:  # the chart row "gauge | in | mm | tol (mm)"
            row = re.search(rf"(?:^|; |: ){d.gauge} \| ([0-9.]+) \| ([0-9.]+) \| "
                            rf"±[0-9.]+ \(±([0-9.]+)\)", _ref(d, "outer_diameter_mm"))
            assert row, d.id
            inch, mm, tol_mm = (float(x) for x in row.groups())
            assert d.outer_diameter_mm == mm and d.outer_diameter_tolerance_mm == tol_mm
            assert inch * 25.4 == pytest.approx(mm, abs=0.001)  # the chart is self-consistent
            assert _ref(d, "outer_diameter_tolerance_mm") == _ref(d, "outer_diameter_mm")
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("device,setting,length_mm,diameter_mm,quote", [
    ("neuwave-pr", "65W-10min", 47.0, 35.0, "4.7 cm long x 3.5 cm wide"),
    ("neuwave-pr", "65W-10min-CT", 36.0, 27.0, "3.6 +/- 0.6 cm x 2.7 +/- 0.6 cm"),
    ("rf-ic-2cm", "12min-exvivo", 30.1, 26.2, "IC 3.01 x 2.62 cm"),
    ("rf-icw-2cm", "12min-exvivo", 52.8, 50.7, "ICW 5.28 x 5.07 cm"),
    ("rf-ic-2cm", "12min-invivo", 26.2, 20.0, "IC 2.62 x 2.00 cm"),
    ("rf-icw-2cm", "12min-invivo", 38.4, 28.9, "ICW 3.84 x 2.89 cm"),
])
def test_cited_zone_sizes_match_source(builtin: DeviceCatalog, device: str, setting: str,
                                       length_mm: float, diameter_mm: float, quote: str) -> None:
    dev = builtin.get(device)
    s = dev.setting(setting)
    assert (s.zone["length_mm"], s.zone["diameter_mm"]) == (length_mm, diameter_mm)
    assert quote in dev.references[s.cite["length_mm"]]
    assert quote in dev.references[s.cite["diameter_mm"]]


def test_cited_calibration_and_cryo_isotherms_match_source(builtin: DeviceCatalog) -> None:
    nw = builtin.get("neuwave-pr")
    chart, ct = nw.setting("65W-10min"), nw.setting("65W-10min-CT")
    text = nw.references[chart.cite["suggested_calibration"]]
    assert "23 % below the prediction" in text
    assert chart.suggested_calibration == pytest.approx(1 - 0.23)
    # the cited calibration is the measured/chart ratio of both axes (to 1 %)
    for key in ("length_mm", "diameter_mm"):
        assert ct.zone[key] / chart.zone[key] == pytest.approx(0.77, abs=0.01)
    assert "'ablation zone past the tip was limited to 6 mm" in text
    cryo = builtin.get("cryo-17g").setting(None)
    text = builtin.get("cryo-17g").references[cryo.cite["isotherm_radii_mm"]]
    assert "central core of <= -40 C develops at a distance of ~1 cm" in text
    assert "(0 C), which is a further ~1 cm away" in text
    assert cryo.zone["isotherm_radii_mm"] == {"-40": 10.0, "0": 20.0}
    assert cryo.zone["lethal_isotherm_c"] == -40


def test_builtin_values_in_sane_ranges(builtin: DeviceCatalog) -> None:
    for d in builtin.devices():
        for s in d.settings:
            z = s.zone
            if d.kind in HEAT_KINDS:
                assert 5.0 <= z["diameter_mm"] <= 80.0 and 5.0 <= z["length_mm"] <= 100.0
                assert z["length_mm"] >= z["diameter_mm"], (d.id, s.name)  # elongated along the shaft
                if "distal_edge_beyond_tip_mm" in z:
                    assert 0.0 <= z["distal_edge_beyond_tip_mm"] <= z["length_mm"]
                else:
                    assert 0.0 <= z["tip_to_centre_mm"] <= z["length_mm"]
            else:
                radii = {float(t): r for t, r in z["isotherm_radii_mm"].items()}
                assert all(1.0 <= r <= 50.0 for r in radii.values())
                assert -80.0 <= z["lethal_isotherm_c"] <= -10.0
                assert 35.0 <= z["body_temperature_c"] <= 40.0
            if s.power_w is not None:
                assert 1.0 <= s.power_w <= 250.0
            if s.time_min is not None:
                assert 0.5 <= s.time_min <= 30.0
            if s.suggested_calibration is not None:
                assert 0.3 <= s.suggested_calibration <= 1.0  # measured zones are smaller
    needles = sorted(builtin.devices("biopsy"), key=lambda d: d.gauge or 0)
    gauges = [d.gauge for d in needles]
    assert gauges == list(range(13, 23))
    ods = [d.outer_diameter_mm for d in needles]
    assert all(a > b for a, b in zip(ods, ods[1:]))  # higher gauge = thinner
    assert all(0.2 <= od <= 3.5 for od in ods)
    assert all(0 < (d.outer_diameter_tolerance_mm or 0) < 0.05 for d in needles)


def test_tolerance_and_evidence_round_trip_to_dict() -> None:
    doc = json.loads(json.dumps(_DOC))
    doc["devices"][0]["settings"][0]["evidence"] = "in-vivo-animal"
    doc["devices"].append({"id": "n18", "kind": "biopsy", "gauge": 18,
                           "outer_diameter_mm": 1.27, "outer_diameter_tolerance_mm": 0.013,
                           "cite": {"outer_diameter_mm": "r1",
                                    "outer_diameter_tolerance_mm": "r1"}})
    mw, needle = parse_catalog(doc, "x")
    assert mw.to_dict()["settings"][0]["evidence"] == "in-vivo-animal"
    assert needle.to_dict()["outer_diameter_tolerance_mm"] == pytest.approx(0.013)
    del doc["devices"][0]["settings"][0]["evidence"]  # optional: old files still load
    assert parse_catalog(doc, "x")[0].setting(None).evidence == ""
