"""Automatic search on a synthetic case: guarantees against brute force, constraints."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from ir_planner.core.errors import InputError, PlanError
from ir_planner.planning import Needle, PlanningEngine, SearchConstraints, Verdict
from ir_planner.planning.search import _pareto, require_feasible

from .synthetic import brute_force_clearance, rotation, sphere_case
from .test_engine import rel_to_lps


@pytest.fixture(scope="module")
def setup():
    grid, labels = sphere_case(direction=rotation("z", 20))
    eng = PlanningEngine(grid, labels, needle=Needle(gauge=18, usable_length_mm=40.0))
    target = rel_to_lps(grid, [-12, 0, 0])
    result = eng.search(target, top_k=4)
    return grid, labels, eng, target, result


def test_feasible_never_violates_margin_brute_force(setup) -> None:
    grid, labels, eng, target, res = setup
    assert res.n_candidates > 300
    mask = labels.mask("aorta")
    r = eng.needle.outer_radius_mm
    rng = np.random.default_rng(0)
    feas = np.flatnonzero(res.feasible)
    near = np.flatnonzero(res.reason == "near aorta")
    assert len(feas) > 50 and len(near) > 20
    for i in rng.choice(feas, 40, replace=False):
        truth = brute_force_clearance(grid, mask, res.entries_lps[i], target, step_mm=0.1) - r
        assert truth >= 3.0 - 0.05  # margin (brute force overestimates by <= 0.05)
        got = res.min_clearance_mm[i]
        tol_below = max(0.5, float(grid.spacing_mm.max()) / 2)  # the accuracy contract
        if res.min_clearance_exact[i]:
            # brute force overestimates the truth by <= 0.05 mm
            assert truth - 0.05 - tol_below <= got <= truth + 0.25
        else:
            assert got <= truth + 1e-6  # guaranteed lower bound
    for i in rng.choice(near, 20, replace=False):
        truth = brute_force_clearance(grid, mask, res.entries_lps[i], target, step_mm=0.1) - r
        assert truth < 3.0 + 1e-6


def test_suggestions_diverse_and_safe(setup) -> None:
    grid, labels, eng, target, res = setup
    assert 2 <= len(res.suggestions) <= 4
    dirs = []
    for m in res.suggestions:
        assert m.verdict in (Verdict.SAFE, Verdict.CAUTION)
        assert m.clearances["aorta"].clearance_mm >= 3.0
        d = np.asarray(m.target_lps) - np.asarray(m.entry_lps)
        dirs.append(d / np.linalg.norm(d))
    for a in range(len(dirs)):
        for b in range(a):
            ang = np.degrees(np.arccos(np.clip(dirs[a] @ dirs[b], -1, 1)))
            assert ang >= 15.0 - 1e-6
    # best suggestion has the best score among feasible candidates
    assert np.nanmax(res.score) == pytest.approx(np.nanmax(res.score[res.feasible]))
    assert res.risk.shape == (res.n_candidates,)
    assert np.all(res.risk[~res.feasible] == 1.0) and np.all(res.risk[res.feasible] < 1.0)
    skin, _ = eng.skin_points()
    risk_all = res.skin_risk()
    assert risk_all.shape == (len(skin),) == (res.n_skin_points,)
    np.testing.assert_array_equal(skin[res.skin_index], res.entries_lps)
    far = np.linalg.norm(skin - target, axis=1) > eng.needle.usable_length_mm
    assert np.all(risk_all[far] == 1.0) and res.skin_feasible().sum() == res.feasible.sum()
    # Pareto set: no feasible candidate dominates a Pareto member
    # the search's objectives: length, clearance clipped to [0, 10 mm], capsule angle
    obj = np.stack([res.length_mm, -np.clip(res.min_clearance_mm, 0.0, 10.0),
                    np.nan_to_num(res.capsule_angle_deg)], axis=1)[res.feasible].astype(np.float32)
    par = res.pareto[res.feasible]
    assert par.any()
    for p in obj[par][:50]:
        assert not np.any(np.all(obj <= p, axis=1) & np.any(obj < p, axis=1))


def test_pareto_brute_force() -> None:
    rng = np.random.default_rng(3)
    obj = rng.integers(0, 6, (300, 3)).astype(np.float32)
    got = _pareto(obj)
    truth = np.array([not np.any(np.all(obj <= p, axis=1) & np.any(obj < p, axis=1))
                      for p in obj])
    np.testing.assert_array_equal(got, truth)


def test_constraints(setup, tmp_path) -> None:
    grid, labels, eng, target, _ = setup
    res = eng.search(target, SearchConstraints(excluded_regions=("anterior",)), top_k=3)
    assert np.all(res.normals_lps[res.feasible] @ [0, -1, 0] <= np.cos(np.radians(45)) + 1e-9)
    assert res.rejected["excluded region anterior"] > 0
    res = eng.search(target, SearchConstraints(max_cc_angle_deg=0.0), top_k=3)
    dz = np.abs(res.entries_lps[res.feasible, 2] - target[2])
    assert res.feasible.any() and np.all(dz <= 1.0 + 1e-6)  # half the 2 mm slice
    res = eng.search(target, SearchConstraints(min_organ_length_mm={"liver": 6.0}), top_k=3)
    for m in res.suggestions:
        assert m.length_in_structure_mm["liver"] >= 6.0
    out = res.write_csv(tmp_path / "cand.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == res.n_candidates
    assert {"x_lps_mm", "feasible", "min_clearance_mm", "length_mm", "score"} <= set(rows[0])


def test_nothing_feasible_explains(setup) -> None:
    grid, labels, _, target, _ = setup
    eng = PlanningEngine(grid, labels, overrides={"aorta": {"margin_mm": 60.0}},
                         needle=Needle(gauge=18, usable_length_mm=40.0))
    res = eng.search(target, top_k=3)
    assert not res.suggestions and not res.feasible.any()
    assert "near aorta" in res.explain() and "length > needle" in res.explain()
    with pytest.raises(PlanError, match="no feasible path"):
        require_feasible(res)
    with pytest.raises(InputError, match="unknown skin region"):
        eng.search(target, SearchConstraints(excluded_regions=("back",)))


def test_skin_candidates_at_most_2mm_apart(setup) -> None:
    from scipy.spatial import cKDTree

    from ir_planner.planning.body import skin_points

    grid, labels, eng, target, res = setup
    pts, normals = eng.skin_points()
    nn, _ = cKDTree(pts).query(pts, k=2)
    assert nn[:, 1].max() <= 2.0
    dense, _ = skin_points(eng.body, grid, spacing_mm=0.5)
    gap, _ = cKDTree(pts).query(dense)
    assert gap.max() <= 2.0  # every point of the surface has a candidate within 2 mm
    # outward normals: one step along the normal leaves the body
    out = pts + 2.5 * normals
    ijk = np.rint(grid.world_to_index(out)).astype(int)
    ok = np.all((ijk >= 0) & (ijk < grid.shape_ijk), axis=1)
    inside = eng.body[ijk[ok, 2], ijk[ok, 1], ijk[ok, 0]]
    assert inside.mean() < 0.02


def test_field_edt_matches_scipy() -> None:
    from scipy import ndimage as ndi

    from ir_planner.planning.search import _edt_outside

    rng = np.random.default_rng(0)
    mask = ndi.binary_dilation(rng.random((30, 40, 50)) > 0.995, iterations=2)
    sp = np.array([1.4, 0.7, 2.5])  # i, j, k
    ref = ndi.distance_transform_edt(~mask, sampling=sp[::-1])
    np.testing.assert_allclose(_edt_outside(mask, sp), ref, atol=1e-4)


def test_exact_clearance_covers_every_candidate(setup) -> None:
    grid, labels, eng, target, _ = setup
    res = eng.search(target, SearchConstraints(exact_clearance=True, all_clearances=False),
                     top_k=2)
    evaluated = np.isfinite(res.min_clearance_lower_bound_mm)
    assert evaluated.sum() > 300 and np.all(res.min_clearance_exact[evaluated])
    mask = labels.mask("aorta")
    r = eng.needle.outer_radius_mm
    tol_below = max(0.5, float(grid.spacing_mm.max()) / 2)
    far = np.flatnonzero(evaluated & (res.min_clearance_mm > 10.7))
    assert len(far) > 10  # beyond the default clearance range: computed exactly here
    rng = np.random.default_rng(1)
    for i in rng.choice(far, 10, replace=False):
        truth = brute_force_clearance(grid, mask, res.entries_lps[i], target, step_mm=0.1) - r
        assert truth - 0.05 - tol_below <= res.min_clearance_mm[i] <= truth + 0.25


@pytest.mark.parametrize("position, side", [("HFS", "posterior"), ("FFS", "posterior"),
                                            ("HFP", "anterior"), ("FFP", "anterior"),
                                            ("HFDL", "left"), ("FFDR", "right"),
                                            ("", "posterior"), ("XYZ", "posterior")])
def test_table_side_from_patient_position(position, side) -> None:
    from ir_planner.planning.search import table_side

    got, note = table_side(position)
    assert got == side
    assert ("supine" in note) == (position not in ("HFS", "FFS", "HFP", "FFP", "HFDL", "FFDR"))


def test_table_region_and_excluded_spheres(setup) -> None:
    grid, labels, eng, target, _ = setup
    # no PatientPosition on this synthetic grid: "table" = posterior, said in the notes
    res_t = eng.search(target, SearchConstraints(excluded_regions=("table",)), top_k=1)
    res_p = eng.search(target, SearchConstraints(excluded_regions=("posterior",)), top_k=1)
    np.testing.assert_array_equal(res_t.feasible, res_p.feasible)
    assert res_t.rejected["excluded region table (posterior)"] > 0
    assert "posterior (supine)" in res_t.explain()
    # a prone patient: the table side is anterior
    prone = grid.with_array(np.asarray(grid.array),
                            metadata={**grid.metadata, "patient_position": "HFP"})
    eng_prone = PlanningEngine(prone, labels, needle=eng.needle)
    res_a = eng_prone.search(target, SearchConstraints(excluded_regions=("table",)), top_k=1)
    res_ant = eng.search(target, SearchConstraints(excluded_regions=("anterior",)), top_k=1)
    np.testing.assert_array_equal(res_a.feasible, res_ant.feasible)
    # spheres: every entry within the radius is excluded, nothing else
    base = eng.search(target, top_k=1)
    centre = base.entries_lps[np.flatnonzero(base.feasible)[0]]
    res_s = eng.search(target, SearchConstraints(excluded_spheres=((*centre, 8.0),)), top_k=1)
    inside = np.linalg.norm(res_s.entries_lps - centre, axis=1) <= 8.0
    assert inside.sum() > 5
    assert not res_s.feasible[inside].any()
    np.testing.assert_array_equal(res_s.feasible[~inside], base.feasible[~inside])
    assert res_s.rejected["excluded sphere 1 (8 mm)"] == int(inside.sum())
    with pytest.raises(InputError, match="radius > 0"):
        eng.search(target, SearchConstraints(excluded_spheres=((*centre, -1.0),)))


def test_target_within_margin_is_explained(setup) -> None:
    grid, labels, eng, target, _ = setup
    # a target 1 voxel outside the aorta: no path can keep the 3 mm margin
    from scipy import ndimage as ndi

    aorta = labels.mask("aorta")
    shell = ndi.binary_dilation(aorta) & ~aorta & labels.mask("liver")
    if not shell.any():
        shell = ndi.binary_dilation(aorta) & ~aorta
    k, j, i = np.argwhere(shell)[0]
    tgt = grid.index_to_world(np.array([i, j, k], float))
    res = eng.search(tgt, top_k=1)
    assert not res.feasible.any()
    assert "the target is" in res.explain() and "from aorta (margin 3 mm)" in res.explain()


def test_needle_too_short_says_how_short(setup) -> None:
    grid, labels, eng, target, _ = setup
    res = eng.search(target, SearchConstraints(max_length_mm=3.0), top_k=1)
    assert res.n_candidates == 0
    skin, _ = eng.skin_points()
    nearest = float(np.linalg.norm(skin - target, axis=1).min())
    assert f"nearest skin point is {nearest:.0f} mm" in res.explain()
    assert "usable needle length is 3 mm" in res.explain()
