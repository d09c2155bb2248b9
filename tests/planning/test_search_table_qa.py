"""Clearance table of the search on an oblique, anisotropic grid with overlapping layers,
a one-voxel structure, 120 small structures and label values > 65535 (uint32 layer):
every value against the exact oracle, feasibility exact, and the same feasible set as
the minimum-only search (``all_clearances=False``)."""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.core.catalog import Category
from ir_planner.core.labels import LabelMap, Structure
from ir_planner.planning import Needle, PlanningEngine, SearchConstraints

from .synthetic import ExactOracle, make_grid, rotation


@pytest.fixture(scope="module")
def case():
    spacing = (0.9, 1.3, 2.2)
    shape = (72, 64, 36)
    grid = make_grid(shape, spacing, rotation("z", 30) @ rotation("x", 15), (10.0, -20.0, 5.0))
    ni, nj, nk = shape
    k, j, i = np.indices(grid.shape)
    body = (i > 3) & (i < ni - 4) & (j > 3) & (j < nj - 4)
    grid = grid.with_array(np.where(body, 40.0, -1000.0).astype(np.float32))
    liver = (np.abs(i - 36) <= 14) & (np.abs(j - 32) <= 12) & (np.abs(k - 18) <= 8)
    # a vessel through the liver (overlap: second layer), a one-voxel vessel
    tube = (np.hypot(i - 42.0, j - 30.0) <= 1.2) & (np.abs(k - 18) <= 12)
    dot = np.zeros(grid.shape, dtype=bool)
    dot[14, 28, 30] = True
    lm = LabelMap.from_masks([("liver", liver), ("hepatic_vein_qa", tube),
                              ("portal_vein_dot", dot)], grid)
    assert lm.get("hepatic_vein_qa").layer != lm.get("liver").layer
    # 120 small forbidden cubes with labels 70000 + n in a uint32 layer
    rng = np.random.default_rng(4)
    extra = np.zeros(grid.shape, dtype=np.uint32)
    structs = []
    for n in range(120):
        c = rng.integers([6, 6, 2], [ni - 6, nj - 6, nk - 2])
        if np.abs(c - [36, 32, 18]).max() < 5:
            continue
        m = (np.abs(i - c[0]) <= 1) & (np.abs(j - c[1]) <= 1) & (np.abs(k - c[2]) <= 0)
        extra[m & (extra == 0)] = 70000 + n
        structs.append(Structure(f"vessel_qa_{n}", 70000 + n, len(lm.layers),
                                 Category.VESSEL, margin_mm=3.0, forbidden=True))
    lm = LabelMap(list(lm.layers) + [extra], grid, list(lm.structures) + structs)
    target = grid.index_to_world(np.array([36.0, 32.0, 18.0]))
    eng = PlanningEngine(grid, lm, needle=Needle(gauge=17, usable_length_mm=60.0))
    res = eng.search(target, SearchConstraints(), top_k=3)
    return grid, lm, target, eng, res


def test_table_contract_and_exact_feasibility(case) -> None:
    grid, lm, target, eng, res = case
    names = res.structure_names
    assert len(names) > 100 and "portal_vein_dot" in names and "vessel_qa_0" in names
    assert res.n_candidates > 500 and 0 < res.feasible.sum() < res.n_candidates
    r = eng.needle.outer_radius_mm
    tol_below = max(0.5, float(grid.spacing_mm.max()) / 2)
    oracle = ExactOracle(grid, lm)
    forb = [n for n in names if eng.structure(n).forbidden]
    margins = np.array([eng.structure(n).margin_mm for n in forb])
    cols = [names.index(n) for n in forb]
    slack = (res.clearance_mm[:, cols] - margins).min(axis=1)
    rng = np.random.default_rng(0)
    near = np.flatnonzero(np.abs(slack) < 1.0)
    sel = np.unique(np.concatenate([rng.choice(res.n_candidates, 25, replace=False),
                                    rng.choice(near, min(25, len(near)), replace=False)]))
    errs = []
    for i in sel:
        truth = np.array([oracle.distance(n, res.entries_lps[i], target) for n in names]) - r
        err = res.clearance_mm[i].astype(float) - truth
        assert np.all(err <= 0.25 + 1e-4) and np.all(err >= -tol_below - 1e-4), i
        errs.append(err)
        t_forb = truth[cols]
        if res.reason[i] == "" or res.reason[i].startswith("near "):
            assert bool(res.feasible[i]) == bool(np.all(t_forb >= margins)), (i, res.reason[i])
    assert len(near) > 5
    errs = np.concatenate(errs)
    assert errs.min() < 0.0  # the tolerance is used, not everything exact


def test_same_feasible_set_as_minimum_only(case) -> None:
    grid, lm, target, eng, res = case
    old = eng.search(target, SearchConstraints(all_clearances=False), top_k=1)
    np.testing.assert_array_equal(old.entries_lps, res.entries_lps)
    np.testing.assert_array_equal(old.feasible, res.feasible)
    # the one-voxel structure and the overlapping vessel got their own columns
    for name in ("portal_vein_dot", "hepatic_vein_qa"):
        col = res.clearance_mm[:, res.structure_names.index(name)]
        assert np.all(np.isfinite(col)) and col.min() < 3.0
