"""LabelMap: layers, overlaps, structure attributes from the catalog."""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.core.catalog import Category
from ir_planner.core.errors import GeometryError, InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume


@pytest.fixture()
def grid() -> ImageVolume:
    return ImageVolume(np.zeros((10, 10, 10), np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))


def test_from_masks_packs_overlaps_into_layers(grid: ImageVolume) -> None:
    a = np.zeros(grid.shape, bool)
    a[2:6, 2:6, 2:6] = True
    b = np.zeros(grid.shape, bool)
    b[4:8, 4:8, 4:8] = True  # overlaps a
    c = np.zeros(grid.shape, bool)
    c[0, 0, 0] = True  # overlaps neither
    lm = LabelMap.from_masks([("liver", a), ("tumour_1", b), ("aorta", c)], grid)
    assert len(lm.layers) == 2
    np.testing.assert_array_equal(lm.mask("liver"), a)
    np.testing.assert_array_equal(lm.mask("tumour_1"), b)
    np.testing.assert_array_equal(lm.mask("aorta"), c)
    assert lm.get("aorta").layer == 0
    assert lm.get("aorta").category is Category.VESSEL and lm.get("aorta").forbidden
    assert lm.get("tumour_1").category is Category.TARGET
    assert lm.volume_ml("liver") == pytest.approx(64 * 8 / 1000)


def test_from_array_names_and_unknown(grid: ImageVolume) -> None:
    arr = np.zeros(grid.shape, np.int32)
    arr[1, 1, 1] = 3
    arr[2, 2, 2] = 7
    lm = LabelMap.from_array(arr, grid, {3: "Liver"})
    assert lm.names == ["Liver", "label_7"]
    assert lm.get("label_7").category is Category.OTHER
    assert lm.voxel_count("label_7") == 1


def test_with_structure_replaces_and_keeps_overrides(grid: ImageVolume) -> None:
    lm = LabelMap.from_masks([("liver", np.ones(grid.shape, bool))], grid)
    lm = lm.with_attributes("liver", margin_mm=4.0)
    small = np.zeros(grid.shape, bool)
    small[0] = True
    lm2 = lm.with_structure("liver", small)
    assert lm2.voxel_count("liver") == 100
    assert lm2.get("liver").margin_mm == 4.0
    assert lm.voxel_count("liver") == 1000  # original untouched
    lm3 = lm2.with_structure("lesion", small)  # overlaps liver → new layer
    assert len(lm3.layers) == 2
    assert lm3.without_structure("lesion").names == ["liver"]


def test_bad_label_maps(grid: ImageVolume) -> None:
    with pytest.raises(GeometryError):
        LabelMap([np.zeros((2, 2, 2), np.uint8)], grid)
    with pytest.raises(InputError):
        LabelMap([np.zeros(grid.shape, np.float32)], grid)  # type: ignore[list-item]
    with pytest.raises(InputError, match="no structure named 'x'"):
        LabelMap.from_masks([], grid).get("x")
    with pytest.raises(InputError):
        LabelMap.from_array(np.full(grid.shape, -1), grid)
