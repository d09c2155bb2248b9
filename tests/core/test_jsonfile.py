"""Strict JSON inputs (core/jsonfile.py) and the plan reader's use of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ir_planner.core.errors import PlanError
from ir_planner.core.jsonfile import JsonFileError, condense_validation_error, read_json_file
from ir_planner.core.plan import CaseRef, Plan


@pytest.mark.parametrize(("text", "match"), [
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    ('{"margin_mm": NaN}', "NaN is not a JSON number"),
    ('{"margin_mm": -Infinity}', "-Infinity is not a JSON number"),
    ("[" * 100 + "]" * 100, "nested deeper"),
    ('{"a": ', "not valid JSON .*line 1"),
])
def test_strict_json_refuses_what_json_loads_accepts(tmp_path: Path, text: str,
                                                     match: str) -> None:
    p = tmp_path / "t.json"
    p.write_text(text)
    with pytest.raises(JsonFileError, match=match) as err:
        read_json_file(p, what="table")
    assert "t.json" in str(err.value) and "\n" not in str(err.value)


def test_size_limit_is_checked_before_reading(tmp_path: Path) -> None:
    p = tmp_path / "big.json"
    with open(p, "wb") as fh:
        fh.truncate(2 * 2**20)
    with pytest.raises(JsonFileError, match="big.json is 2.0 MiB; the limit is 1 MiB"):
        read_json_file(p, what="plan file", max_bytes=2**20)


def test_plan_errors_are_one_line_and_typed_numbers_must_be_finite(tmp_path: Path) -> None:
    p = tmp_path / "plan.json"
    p.write_text(json.dumps({"schema_version": 1, "target_lps": [0, 0, float("nan")],
                             "structure_overrides": {"aorta": {"margin_mm": -1}}}))
    with pytest.raises(PlanError) as err:
        Plan.load(p)
    msg = str(err.value)
    assert "plan.json" in msg and "\n" not in msg
    assert "target_lps" in msg and "structure_overrides.aorta.margin_mm" in msg


def test_names_table_is_stored_with_the_case(tmp_path: Path) -> None:
    plan = Plan()
    plan.case = CaseRef(image_path="ct.nii.gz", labels_path="seg.nii.gz",
                        names_path="names.json")
    out = plan.save(tmp_path / "p.json")
    assert Plan.load(out).case.names_path == "names.json"


def test_condense_falls_back_to_flat_text() -> None:
    assert condense_validation_error(ValueError("a\n  b")) == "a b"
