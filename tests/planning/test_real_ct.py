"""Planning on the real TotalSegmentator CT (../shared/data/totalseg-ct, 3 mm).

The scan has no tumour label: a SYNTHETIC spherical lesion (radius 10 mm) is inserted
deep in the real liver mask (at the liver voxel farthest from the liver surface).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ir_planner.core.labels import LabelMap
from ir_planner.io.image_files import read_image_file
from ir_planner.planning import PlanningEngine, SearchConstraints, Verdict
from ir_planner.planning.search import SearchResult

from .synthetic import ExactOracle, brute_force_clearance

AVOID = ("rib", "lung", "colon", "aorta", "vena", "portal", "iliac", "vertebra")


def load_case(shared_data):
    """CT, label map with the real masks plus a synthetic liver lesion, lesion centre."""
    root = shared_data / "totalseg-ct"
    ct = read_image_file(root / "example_ct.nii.gz", modality="CT")
    masks = []
    for f in sorted((root / "masks").glob("*.nii.gz")):
        m = read_image_file(f).array > 0
        if m.any():
            masks.append((f.name[:-7], m))
    labels = LabelMap.from_masks(masks, ct)
    liver = labels.mask("liver")
    depth = ndi.distance_transform_edt(liver, sampling=ct.spacing_mm[::-1])
    kji = np.array(np.unravel_index(int(np.argmax(depth)), liver.shape))
    centre = ct.index_to_world(kji[::-1].astype(float))
    k, j, i = np.indices(ct.shape)
    pts = ct.index_to_world(np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(float))
    lesion = (np.linalg.norm(pts - centre, axis=1) <= 10.0).reshape(ct.shape) & liver
    labels = labels.with_structure("lesion", lesion)
    return ct, labels, centre


@pytest.fixture(scope="module")
def real(shared_data):
    ct, labels, centre = load_case(shared_data)
    eng = PlanningEngine(ct, labels)
    res = eng.search(centre, SearchConstraints(min_organ_length_mm={"liver": 10.0}), top_k=5)
    return ct, labels, centre, eng, res


def test_auto_returns_safe_diverse_paths(real) -> None:
    ct, labels, centre, eng, res = real
    assert isinstance(res, SearchResult)
    assert res.n_candidates > 5000
    assert len(res.suggestions) >= 3
    dirs = []
    for m in res.suggestions:
        assert m.verdict in (Verdict.SAFE, Verdict.CAUTION), m.reasons
        assert not any(c.forbidden for c in m.crossings)
        assert m.pleural_crossings == 0
        assert m.length_in_structure_mm["liver"] >= 10.0
        assert m.needle_long_enough and m.length_mm <= 150.0
        for name, c in m.clearances.items():
            if any(a in name for a in AVOID):
                assert c.clearance_mm >= c.margin_mm, (name, c.clearance_mm)
        d = np.asarray(m.target_lps) - np.asarray(m.entry_lps)
        dirs.append(d / np.linalg.norm(d))
    assert res.suggestions[0].verdict == Verdict.SAFE
    for a in range(len(dirs)):
        for b in range(a):
            assert np.degrees(np.arccos(np.clip(dirs[a] @ dirs[b], -1, 1))) >= 15.0 - 1e-6


def test_suggestion_clearances_agree_with_brute_force(real) -> None:
    ct, labels, centre, eng, res = real
    tol_below = max(0.5, float(ct.spacing_mm.max()) / 2)  # 1.5 mm on this 3 mm scan
    r = eng.needle.outer_radius_mm
    checked = 0
    for m in res.suggestions[:3]:
        near = sorted(m.clearances.values(), key=lambda c: c.clearance_mm)
        near = [c for c in near if c.forbidden][:4]
        for c in near:
            truth = brute_force_clearance(ct, labels.mask(c.name), np.asarray(m.entry_lps),
                                          np.asarray(m.target_lps), step_mm=0.05) - r
            assert truth - tol_below <= c.clearance_mm <= truth + 0.25
            assert abs(c.clearance_mm - truth) <= 0.03  # exact up to the sampling of truth
            checked += 1
    assert checked >= 8


def test_search_feasibility_is_exactly_right(real) -> None:
    ct, labels, centre, eng, res = real
    rng = np.random.default_rng(5)
    r = eng.needle.outer_radius_mm
    forb = eng.forbidden
    feas = rng.choice(np.flatnonzero(res.feasible), 25, replace=False)
    oracle = ExactOracle(ct, labels)
    for i in feas:
        for s in forb:
            d = oracle.distance(s.name, res.entries_lps[i], centre)
            assert d - r >= s.margin_mm - 1e-9, (s.name, d - r)
            # the engine's exact method agrees with the oracle
            d_eng, _ = eng.exact_distance(s.name, res.entries_lps[i], centre)
            assert d_eng == pytest.approx(d, abs=1e-6)
    bad = np.flatnonzero(np.char.startswith(res.reason.astype(str), "near "))
    for i in rng.choice(bad, 25, replace=False):
        name = res.reason[i][5:]
        d = oracle.distance(name, res.entries_lps[i], centre)
        assert d - r < eng.structure(name).margin_mm + 1e-9


def test_target_and_entry_errors(real) -> None:
    from ir_planner.core.errors import PlanError

    ct, labels, centre, eng, res = real
    with pytest.raises(PlanError, match="inside forbidden structure aorta"):
        eng.check_target(eng.structure_point("aorta"))
    with pytest.raises(PlanError, match="inside the body"):
        eng.evaluate(eng.structure_point("spleen"), centre)


def _exact_min_forbidden(eng, entry_lps, target_lps):
    """Exact axis distances (mm) to every forbidden structure (independent oracle)."""
    oracle = eng.__dict__.setdefault("_test_oracle", ExactOracle(eng.grid, eng.labels))
    return np.array([oracle.distance(s.name, entry_lps, target_lps) for s in eng.forbidden])


def test_per_structure_clearances_of_200_candidates(real) -> None:
    """The compiled tube kernel's per-structure clearances for 200 random candidates
    agree with the exact computation for every forbidden structure (exact below the
    range, "≥ range" above), and with dense brute force on a sample."""
    from ir_planner.planning.search import global_field
    from ir_planner.planning.tube import tube_distances

    ct, labels, centre, eng, res = real
    gf = global_field(eng, exclude=frozenset(eng.allowed_at_target(centre)))
    names = [d.struct.name for d in gf.forb]
    rng = np.random.default_rng(11)
    sel = rng.choice(res.n_candidates, 200, replace=False)
    range_mm = 25.0
    got = tube_distances(eng.frame.lps_to_q(res.entries_lps[sel]), eng.frame.lps_to_q(centre),
                         labels.layers, gf.luts, eng.frame.spacing_mm, eng.frame.shape_ijk,
                         range_mm, len(names), gf.fmap)
    assert np.isfinite(got).sum() > 400
    for row, i in enumerate(sel):
        truth = _exact_min_forbidden(eng, res.entries_lps[i], centre)
        near = truth < range_mm - 1e-6
        np.testing.assert_allclose(got[row, near], truth[near], atol=1e-4)
        assert not np.isfinite(got[row, truth > range_mm + 1e-4]).any()
    tol_below = max(0.5, float(ct.spacing_mm.max()) / 2)
    for row, i in enumerate(sel[:6]):
        for s in np.flatnonzero(np.isfinite(got[row]))[:3]:
            bf = brute_force_clearance(ct, labels.mask(names[s]), res.entries_lps[i], centre,
                                       step_mm=0.05)
            assert bf - tol_below <= got[row, s] <= bf + 0.25
            assert abs(got[row, s] - bf) <= 0.03


@pytest.mark.parametrize("table", [True, False])
def test_candidate_table_clearances_honour_contract(real, tmp_path, table) -> None:
    """The CSV's minimum clearance is within the contract, with the per-structure table
    (default: every candidate) and without it (minimum only; far ones a lower bound)."""
    import csv

    ct, labels, centre, eng, res = real
    if not table:
        res = eng.search(centre, SearchConstraints(min_organ_length_mm={"liver": 10.0},
                                                   all_clearances=False), top_k=1)
    r = eng.needle.outer_radius_mm
    tol_below = max(0.5, float(ct.spacing_mm.max()) / 2)
    rows = list(csv.DictReader(res.write_csv(tmp_path / "c.csv").open()))
    assert len(rows) == res.n_candidates
    rng = np.random.default_rng(12)
    evaluated = np.flatnonzero(np.isfinite(res.min_clearance_lower_bound_mm))
    n_val = 0
    for i in rng.choice(evaluated, 200, replace=False):
        truth = float(_exact_min_forbidden(eng, res.entries_lps[i], centre).min()) - r
        row = rows[i]
        lb = float(row["min_clearance_lower_bound_mm"])
        assert lb <= truth + 1e-3
        if row["min_clearance_mm"]:
            got = float(row["min_clearance_mm"])
            assert truth - tol_below - 1e-3 <= got <= truth + 0.25 + 1e-3
            n_val += 1
        else:  # only a bound: beyond the search's clearance range
            assert row["min_clearance_exact"] == "0" and lb >= 10.0
    assert n_val >= 150
    if table:
        assert n_val == 200 and np.all(res.min_clearance_exact)
        # feasibility (exact) and the table agree: every feasible candidate clears every
        # forbidden structure by its margin, every "near X" one violates X's margin
        cols = {n: k for k, n in enumerate(res.structure_names)}
        allowed = eng.allowed_at_target(centre)
        for s in eng.forbidden:
            if s.name in allowed or s.name not in cols:
                continue
            v = res.clearance_mm[:, cols[s.name]]
            assert np.all(v[res.feasible] >= s.margin_mm - 1e-4), s.name
            near = res.reason.astype(str) == f"near {s.name}"
            assert np.all(v[near] < s.margin_mm + 1e-4), s.name


def test_spleen_avoided_on_the_way_to_the_kidney_but_a_splenic_target_is_reachable(
        shared_data) -> None:
    """Spleen and pancreas are not traversed on the way to another target; a target
    inside the spleen is reached through it."""
    from ir_planner.io.load import load_image
    from ir_planner.io.segmentation import load_labels

    img = load_image(shared_data / "totalseg-ct" / "example_ct.nii.gz")
    labels = load_labels(shared_data / "totalseg-ct" / "masks", image=img)
    eng = PlanningEngine(img, labels)
    assert eng.structure("spleen").forbidden and eng.structure("pancreas").forbidden
    kidney = eng.structure_point("kidney_left")
    res = eng.search(kidney, top_k=5)
    assert res.suggestions
    for m in res.suggestions:
        assert not any(c.name in ("spleen", "pancreas") for c in m.crossings)
    assert any(k == "near spleen" for k in res.rejected)
    spleen = eng.structure_point("spleen")
    assert "spleen" in eng.allowed_at_target(spleen)
    res = eng.search(spleen, top_k=3)
    assert res.suggestions and all(m.verdict.value != "unsafe" for m in res.suggestions)
