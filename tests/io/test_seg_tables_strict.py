"""Names tables: what ``segment --names-out`` writes is a names table ``labels`` reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ir_planner.core.errors import SegmentationReadError
from ir_planner.io.seg_tables import read_names_table


def test_names_out_form_reads_back(tmp_path: Path) -> None:
    p = tmp_path / "names.json"
    p.write_text(json.dumps({"coordinate_system": "LPS", "structures": [
        {"name": "liver", "label": 1, "layer": 0, "category": "solid_organ"},
        {"name": "lesion", "label": 2, "layer": 0, "category": "target"}]}))
    table = read_names_table(p)
    assert [(e.label, e.name) for e in table.entries] == [(1, "liver"), (2, "lesion")]


@pytest.mark.parametrize("margin", ["NaN", "Infinity", "-1", "1e9", '"5"', "true"])
def test_margins_that_would_switch_the_check_off_are_refused(tmp_path: Path,
                                                             margin: str) -> None:
    p = tmp_path / "names.json"
    p.write_text('{"1": {"name": "aorta", "margin_mm": ' + margin + "}}")
    with pytest.raises(SegmentationReadError, match="names.json") as err:
        read_names_table(p)
    assert "\n" not in str(err.value)
