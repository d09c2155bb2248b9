"""Needle gauge table: one source of truth shared with the device catalog."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from ir_planner.core.errors import InputError
from ir_planner.planning.ablation import load_catalog
from ir_planner.planning.devices import (
    GAUGE_OUTER_DIAMETER_MM,
    GAUGE_TABLE_SOURCE,
    Needle,
    load_gauge_table,
)


def test_every_catalog_gauge_has_the_same_outer_diameter() -> None:
    biopsy = load_catalog().devices("biopsy")
    assert biopsy, "the catalog has no biopsy needles"
    seen = set()
    for dev in biopsy:
        assert dev.gauge is not None
        assert Needle(gauge=dev.gauge).outer_diameter_mm == dev.outer_diameter_mm, dev.id
        seen.add(dev.gauge)
    # and planning accepts no gauge the catalog does not cite
    assert seen == set(GAUGE_OUTER_DIAMETER_MM)


def test_tubing_nominal_values_from_the_chart() -> None:
    # ISO 9626 designated sizes, regular-wall tubing nominal OD (needle gauge chart), in mm
    assert GAUGE_OUTER_DIAMETER_MM[17] == 1.473
    assert GAUGE_OUTER_DIAMETER_MM[18] == 1.270
    assert GAUGE_OUTER_DIAMETER_MM[20] == 0.9081
    assert GAUGE_OUTER_DIAMETER_MM[22] == 0.7176
    assert Needle(gauge=18).outer_radius_mm == pytest.approx(0.635, abs=1e-12)
    # strictly thinner with every gauge number
    ods = [GAUGE_OUTER_DIAMETER_MM[g] for g in sorted(GAUGE_OUTER_DIAMETER_MM)]
    assert all(a > b for a, b in zip(ods, ods[1:]))
    assert "gauge" in GAUGE_TABLE_SOURCE.lower() and "Birmingham" in GAUGE_TABLE_SOURCE


def test_table_is_read_from_the_package_json() -> None:
    raw = json.loads((resources.files("ir_planner") / "data" / "devices" /
                      "biopsy_needles.json").read_text(encoding="utf-8"))
    from_file = {d["gauge"]: d["outer_diameter_mm"] for d in raw["devices"]
                 if d["kind"] == "biopsy"}
    table, _ = load_gauge_table()
    assert table == from_file == GAUGE_OUTER_DIAMETER_MM


def test_unknown_gauge_and_round_trip() -> None:
    with pytest.raises(InputError, match="27 G is not in the gauge table"):
        Needle(gauge=27)
    with pytest.raises(InputError, match="usable length"):
        Needle(gauge=18, usable_length_mm=0.0)
    n = Needle(gauge=20, usable_length_mm=100.0, name="x")
    assert Needle.from_dict(n.to_dict()) == n
    assert n.to_dict()["outer_diameter_mm"] == 0.9081
