"""Editing operations on analytic shapes; undo exact; plan undo/redo in step."""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.core.errors import InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.plan import Plan, TrajectoryRecord
from ir_planner.core.volume import ImageVolume
from ir_planner.segmentation.edit import LabelEditor

SPACING = (0.7, 0.8, 1.5)  # anisotropic (i, j, k) mm


def _grid() -> ImageVolume:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-30.0, -20.0, 10.0)
    return ImageVolume(np.zeros((60, 100, 110), np.int16), affine)


def _sphere_mask(grid: ImageVolume, centre, r: float) -> np.ndarray:
    kk, jj, ii = np.indices(grid.shape)
    pts = grid.index_to_world(np.stack([ii, jj, kk], -1).astype(float))
    return np.sum((pts - np.asarray(centre)) ** 2, -1) <= r * r


def _empty() -> LabelMap:
    g = _grid()
    return LabelMap([np.zeros(g.shape, np.uint8)], g, [])


CENTRE = (8.0, 20.0, 55.0)


def test_paint_volume_and_undo_exact() -> None:
    ed = LabelEditor(_empty())
    ed.paint_sphere("tumour", CENTRE, 12.0)
    vol = ed.labels.volume_ml("tumour")
    assert vol == pytest.approx(4 / 3 * np.pi * 12 ** 3 / 1000, rel=0.03)
    assert np.array_equal(ed.labels.mask("tumour"), _sphere_mask(ed.labels.grid, CENTRE, 12))
    before = ed.labels.layers[-1].copy()
    ed.erase_sphere("tumour", CENTRE, 5.0)
    assert ed.labels.volume_ml("tumour") == pytest.approx(
        4 / 3 * np.pi * (12 ** 3 - 5 ** 3) / 1000, rel=0.04)
    assert ed.undo()
    assert np.array_equal(ed.labels.layers[-1], before)
    assert ed.redo() and ed.undo() and ed.undo()
    assert ed.labels.names == []


@pytest.mark.parametrize("margin", [3.0, -4.0])
def test_grow_shrink_sphere_radius(margin: float) -> None:
    ed = LabelEditor(_empty())
    ed.paint_sphere("s", CENTRE, 10.0)
    ed.grow("s", margin)
    truth = _sphere_mask(ed.labels.grid, CENTRE, 10.0 + margin)
    got = ed.labels.mask("s")
    dice = 2 * np.count_nonzero(got & truth) / (got.sum() + truth.sum())
    assert dice > 0.93  # voxelisation at 1.5 mm slices
    r_eq = (3 * ed.labels.volume_ml("s") * 1000 / (4 * np.pi)) ** (1 / 3)
    assert r_eq == pytest.approx(10.0 + margin, abs=0.5)


def test_fill_holes_keep_largest_and_boolean_ops() -> None:
    ed = LabelEditor(_empty())
    ed.paint_sphere("a", CENTRE, 10.0)
    ed.erase_sphere("a", CENTRE, 4.0)  # cavity
    ed.paint_sphere("a", (-15.0, 0.0, 30.0), 3.0)  # small separate blob
    ed.fill_holes("a")
    ed.keep_largest("a")
    assert np.array_equal(ed.labels.mask("a"), _sphere_mask(ed.labels.grid, CENTRE, 10.0))
    ed.paint_sphere("b", (CENTRE[0] + 10, CENTRE[1], CENTRE[2]), 10.0)
    a, b = ed.labels.mask("a"), ed.labels.mask("b")
    ed.combine("a", "b", "intersect")
    assert np.array_equal(ed.labels.mask("a"), a & b)
    ed.undo()
    ed.combine("a", "b", "subtract")
    assert np.array_equal(ed.labels.mask("a"), a & ~b)
    ed.undo()
    ed.combine("a", "b", "union")
    assert np.array_equal(ed.labels.mask("a"), a | b)
    with pytest.raises(InputError):
        ed.combine("a", "b", "xor")
    with pytest.raises(InputError, match="no structure"):
        ed.grow("missing", 1.0)


def test_other_structures_in_layer_are_not_overwritten() -> None:
    g = _grid()
    layer = np.zeros(g.shape, np.uint8)
    layer[:, :, :20] = 2
    from ir_planner.core.labels import Structure

    lm = LabelMap([layer], g, [Structure.from_name("x", 1), Structure.from_name("bone", 2)])
    ed = LabelEditor(lm)
    rec = ed.paint_sphere("x", g.index_to_world([20.0, 50.0, 30.0]), 8.0)
    assert rec.skipped_voxels > 0
    assert np.count_nonzero(lm.layers[0] == 2) == 60 * 100 * 20


def test_plan_undo_redo_in_step() -> None:
    plan = Plan()
    ed = LabelEditor(_empty(), plan)
    ed.paint_sphere("tumour", CENTRE, 8.0)
    ed.grow("tumour", 2.0)
    assert [e["operation"] for e in plan.settings["label_edits"]] == ["paint", "grow"]
    grown = ed.labels.mask("tumour")
    plan.add_trajectory(TrajectoryRecord(name="T1", entry_lps=(0, 0, 0),
                                         target_lps=CENTRE))
    assert plan.undo()  # the trajectory: labels unchanged
    assert np.array_equal(ed.labels.mask("tumour"), grown)
    assert plan.undo()  # the grow
    assert np.array_equal(ed.labels.mask("tumour"), _sphere_mask(ed.labels.grid, CENTRE, 8))
    assert ed.undo()  # through the plan: the paint
    assert ed.labels.names == [] and plan.settings.get("label_edits", []) == []
    assert plan.redo() and ed.redo()
    assert np.array_equal(ed.labels.mask("tumour"), grown)
    assert len(plan.settings["label_edits"]) == 2


def test_erase_then_grow_on_existing_structure_uses_true_extent() -> None:
    g = _grid()
    layer = np.zeros(g.shape, np.uint8)
    layer[_sphere_mask(g, CENTRE, 10.0)] = 1
    from ir_planner.core.labels import Structure

    ed = LabelEditor(LabelMap([layer], g, [Structure.from_name("liver", 1)]))
    ed.erase_sphere("liver", CENTRE, 3.0)  # first edit: nothing cached yet
    ed.grow("liver", 2.0)
    r_eq = (3 * ed.labels.volume_ml("liver") * 1000 / (4 * np.pi)) ** (1 / 3)
    assert r_eq == pytest.approx(12.0, abs=0.5)
