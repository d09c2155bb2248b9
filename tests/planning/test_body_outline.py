"""Which structures may define the skin (real CT, TotalSegmentator masks).

TotalSegmentator's ``face`` class and fat compartments (``subcutaneous_fat``,
``torso_fat``) are BODY-category in the catalog, but they are parts of the body: used as
the outline they put "skin" (candidate entries) inside the patient (regression: a
``face`` mask made the search suggest 22 mm paths to the kidney from inside the abdomen).
"""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.planning.body import body_mask, is_outline
from tests.planning.test_real_ct import load_case


@pytest.fixture(scope="module")
def case(shared_data):
    ct, labels, _ = load_case(shared_data)
    return ct, labels


@pytest.mark.parametrize("name", ["face", "subcutaneous_fat", "torso_fat", "epicardial_fat"])
def test_body_parts_do_not_define_the_skin(case, name) -> None:
    ct, labels = case
    ref, ref_source = body_mask(ct, labels)
    part = labels.with_structure(name, labels.mask("spleen"))  # a part inside the body
    mask, source = body_mask(ct, part)
    assert source == ref_source and source.startswith("CT threshold")
    assert np.array_equal(mask, ref)


@pytest.mark.parametrize("name", ["body", "skin", "body_trunc", "External", "BODY"])
def test_outline_structures_define_the_skin(case, name) -> None:
    ct, labels = case
    ref, _ = body_mask(ct, labels)
    with_body = labels.with_structure(name, ref)
    mask, source = body_mask(ct, with_body)
    assert source == f"structure {name}"
    assert np.array_equal(mask, ref)
    assert is_outline(name)
