"""Per-candidate × per-structure clearance table of the search (``all_clearances``).

Checked against the engine's exact segment-to-cells distance and dense brute force, on
the real CT (all structures, 200 random candidates) and on an analytic box.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from ir_planner.cli import main
from ir_planner.planning import Needle, PlanningEngine, SearchConstraints
from ir_planner.planning.clearance_table import build_surface_index, structure_distances
from ir_planner.planning.geometry import segment_box_distance

from .synthetic import ExactOracle, brute_force_clearance, make_grid
from .test_real_ct import load_case


@pytest.fixture(scope="module")
def real(shared_data):
    ct, labels, centre = load_case(shared_data)
    eng = PlanningEngine(ct, labels)
    res = eng.search(centre, SearchConstraints(all_clearances=True), top_k=2)
    return ct, labels, centre, eng, res


def test_table_matches_exact_distance_real_ct(real) -> None:
    ct, labels, centre, eng, res = real
    names = res.structure_names
    # every non-empty structure of the label map (empty ones are ignored by the engine)
    assert sorted(names) == sorted(s.name for s in eng.structures if s.name in eng._data)
    assert len(names) == len(eng._data) > 40
    assert res.clearance_mm.shape == (res.n_candidates, len(names))
    assert res.clearance_mm.dtype == np.float32
    tol_below = max(0.5, float(ct.spacing_mm.max()) / 2)  # 1.5 mm on this 3 mm scan
    r = eng.needle.outer_radius_mm
    rng = np.random.default_rng(11)
    sel = rng.choice(res.n_candidates, 200, replace=False)
    datas = [eng._data[n] for n in names]
    tq = eng.frame.lps_to_q(np.asarray(centre, float))
    oracle = ExactOracle(ct, labels)
    errs = []
    for n_i, i in enumerate(sel):
        truth = np.array([oracle.distance(n, res.entries_lps[i], centre) for n in names]) - r
        if n_i < 50:
            # the engine's exact path (same kernel, tol 0) is exact
            exact = np.array([d for d, _ in eng._exact_many(
                datas, eng.frame.lps_to_q(res.entries_lps[i]), tq)]) - r
            np.testing.assert_allclose(exact, truth, atol=1e-6)
        got = res.clearance_mm[i].astype(float)
        assert np.all(got <= truth + 0.25), (i, got - truth)
        assert np.all(got >= truth - tol_below), (i, got - truth)
        errs.append(got - truth)
    errs = np.concatenate(errs)
    # a second search on the same engine reuses the cached surface index
    again = eng.search(centre, SearchConstraints(all_clearances=True), top_k=1)
    np.testing.assert_array_equal(again.clearance_mm, res.clearance_mm)
    assert again.structure_names == names
    assert len(errs) == 200 * len(names)
    # both directions of the contract are actually exercised (values are not all exact)
    assert errs.max() > 0.0 and errs.min() < 0.0
    # the minimum over forbidden structures agrees with the search's own minimum clearance
    forb = [n for n in names if eng.structure(n).forbidden
            and n not in eng.allowed_at_target(centre)]
    cols = [names.index(n) for n in forb]
    ok = res.min_clearance_exact
    tmin = res.clearance_mm[:, cols].min(axis=1)
    width = tol_below + 0.25
    assert np.all(np.abs(tmin[ok] - res.min_clearance_mm[ok]) <= width + 1e-3)
    # a few near pairs against dense brute force (independent of the engine's method)
    checked = 0
    for i in sel[:40]:
        k = int(np.argmin(np.where(np.isfinite(res.clearance_mm[i]),
                                   np.abs(res.clearance_mm[i] - 5.0), np.inf)))
        truth = brute_force_clearance(ct, labels.mask(names[k]), res.entries_lps[i],
                                      np.asarray(centre), step_mm=0.05) - r
        got = float(res.clearance_mm[i, k])
        assert truth - 0.05 - tol_below <= got <= truth + 0.25, (names[k], got, truth)
        checked += 1
    assert checked == 40


def test_crossed_structures_are_negative(real) -> None:
    ct, labels, centre, eng, res = real
    r = eng.needle.outer_radius_mm
    names = res.structure_names
    # the target lies in the lesion and the liver: every path touches both
    for organ in ("lesion", "liver"):
        assert np.all(res.clearance_mm[:, names.index(organ)] == pytest.approx(-r))
    # infeasible "near X" paths have clearance to X below its margin (+ contract)
    near = np.flatnonzero(np.char.startswith(res.reason.astype(str), "near "))
    assert len(near) > 100
    for i in near[:200]:
        name = res.reason[i][5:]
        assert res.clearance_mm[i, names.index(name)] < eng.structure(name).margin_mm + 0.25


def test_analytic_box_any_direction() -> None:
    """One box structure, segments from random points to a target inside / outside it."""
    spacing = (0.8, 1.1, 1.7)
    grid = make_grid((50, 40, 30), spacing)
    lo_i, hi_i = np.array([10, 12, 8]), np.array([30, 25, 18])  # inclusive cell range
    mask = np.zeros(grid.shape, dtype=bool)
    mask[lo_i[2]:hi_i[2] + 1, lo_i[1]:hi_i[1] + 1, lo_i[0]:hi_i[0] + 1] = True
    layer = mask.astype(np.uint8)
    sp = np.asarray(spacing)
    luts = np.array([[-1, 0]], dtype=np.int16)
    index = build_surface_index([layer], luts, 1, sp)
    # the union of the cells is the box [lo − ½, hi + ½] in q-space
    box_lo, box_hi = (lo_i - 0.5) * sp, (hi_i + 0.5) * sp
    rng = np.random.default_rng(3)
    a = rng.uniform([0, 0, 0], [49, 39, 29], (300, 3)) * sp
    for b in (np.array([40.0, 35.0, 25.0]) * sp, np.array([20.0, 18.0, 12.0]) * sp):
        truth, _ = segment_box_distance(a, b[None, :], box_lo[None, :], box_hi[None, :])
        inside_a = np.all((a > box_lo) & (a < box_hi), axis=1)
        inside_b = bool(np.all((b > box_lo) & (b < box_hi)))
        zero = (inside_a | inside_b)[:, None]
        lo, hi = structure_distances(index, a, b, zero=zero)
        np.testing.assert_allclose(hi[:, 0], truth, atol=1e-4)
        np.testing.assert_allclose(lo[:, 0], truth, atol=1e-4)
        lo, hi = structure_distances(index, a, b, zero=zero, tol_mm=0.8)
        assert np.all(lo[:, 0] <= truth + 1e-4) and np.all(hi[:, 0] >= truth - 1e-4)
        assert np.all(hi[:, 0] - lo[:, 0] <= 0.8 + 1e-4)


def test_table_off_by_default() -> None:
    from .synthetic import sphere_case

    grid, labels = sphere_case()
    eng = PlanningEngine(grid, labels, needle=Needle(gauge=18, usable_length_mm=40.0))
    target = grid.index_to_world((np.asarray(grid.shape_ijk) - 1) / 2.0 + [-12, 0, 0])
    res = eng.search(target, SearchConstraints(all_clearances=False), top_k=1)
    assert res.clearance_mm.shape == (0, 0) and res.structure_names == []


def test_cli_all_clearances_columns(real, shared_data, tmp_path, capsys) -> None:
    ct, labels, centre, eng, res = real
    from ir_planner.io.segmentation import save_labels

    lab = save_labels(labels, tmp_path / "labels.nii.gz")
    img = shared_data / "totalseg-ct" / "example_ct.nii.gz"
    cand = tmp_path / "cand.csv"
    rc = main(["plan", str(img), "--labels", str(lab), "--target",
               *[f"{v:.3f}" for v in centre], "--auto", "--top", "1", "--all-clearances",
               "--candidates-out", str(cand)])
    assert rc == 0
    with cand.open() as fh:
        rows = list(csv.DictReader(fh))
    cols = [f"clearance_{name}_mm" for name in res.structure_names]
    assert all(c in rows[0] for c in cols)
    assert "min_clearance_mm" in rows[0] and "score" in rows[0]
    assert len(rows) == res.n_candidates
    got = np.array([[float(r[c]) for c in cols] for r in rows[:300]])
    np.testing.assert_allclose(got, res.clearance_mm[:300], atol=2e-3)
    # the table is the default; --no-all-clearances leaves its columns out
    cand2 = tmp_path / "cand2.csv"
    assert main(["plan", str(img), "--labels", str(lab), "--target",
                 *[f"{v:.3f}" for v in centre], "--auto", "--top", "1", "--candidates-out",
                 str(cand2)]) == 0
    with cand2.open() as fh:
        first = next(csv.DictReader(fh))
    assert all(c in first for c in cols)
    assert main(["plan", str(img), "--labels", str(lab), "--target",
                 *[f"{v:.3f}" for v in centre], "--auto", "--top", "1", "--no-all-clearances",
                 "--candidates-out", str(cand2)]) == 0
    with cand2.open() as fh:
        first = next(csv.DictReader(fh))
    assert "min_clearance_mm" in first and not any(c in first for c in cols)

