"""Planning must not depend on how the scan is stored: same cells → same physical paths.

The real TotalSegmentator CT (3 mm) and its masks are re-stored in other layouts that
hold exactly the same voxel cells in LPS (x flipped as in a RAS-stored NIfTI, a
sagittal acquisition with permuted and flipped axes), and rigidly rotated/shifted as a
whole (an oblique direction matrix: the patient rotated in the scanner, so every path
must rotate with it). Checked against the original layout:

* the body mask (skin) is the same set of physical cells;
* ``evaluate`` gives the same clearance to every structure, crossings, depth and
  verdict on fixed paths (floating point);
* the automatic search's best suggestion is the same physical entry (within a voxel)
  with the same verdict.

Regression: the body outline used to fill holes per *array* slice, so a sagittal or
coronal acquisition left the lungs and bowel gas that reach the scan's first/last axial
slice open, and their walls became "skin" (13,000 candidate entries inside the body,
suggested "safe" with a label map that had no lung/bowel structures).
"""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume
from ir_planner.planning.body import axial_array_axis
from ir_planner.planning.engine import PlanningEngine
from ir_planner.planning.search import SearchConstraints
from tests.planning.test_real_ct import load_case


def _relayout(vol: ImageVolume, perm: tuple[int, int, int], flips: tuple[int, int, int],
              rot: np.ndarray | None = None, shift: np.ndarray | None = None
              ) -> tuple[ImageVolume, object]:
    """Same cells, new storage: new index axis a = old axis perm[a] (reversed if flips[a]);
    then the world rotated by ``rot`` and shifted by ``shift``. Returns the volume and a
    function mapping an old-layout array [k, j, i] to the new layout."""
    shape_ijk = np.asarray(vol.shape_ijk)
    a_mat = np.zeros((4, 4))
    a_mat[3, 3] = 1.0
    for ax in range(3):
        a_mat[perm[ax], ax] = -1.0 if flips[ax] else 1.0
        if flips[ax]:
            a_mat[perm[ax], 3] = shape_ijk[perm[ax]] - 1
    m = vol.index_to_lps @ a_mat
    if rot is not None:
        w = np.eye(4)
        w[:3, :3] = rot
        w[:3, 3] = shift
        m = w @ m

    def arr(x: np.ndarray) -> np.ndarray:
        y = np.transpose(x.transpose(2, 1, 0), perm)  # ijk, permuted
        for ax in range(3):
            if flips[ax]:
                y = np.flip(y, ax)
        return np.ascontiguousarray(y.transpose(2, 1, 0))

    out = ImageVolume(arr(np.asarray(vol.array)), m, modality=vol.modality)
    return out, arr


def _rot(deg_z: float, deg_x: float) -> np.ndarray:
    z, x = np.radians(deg_z), np.radians(deg_x)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return rz @ rx


ROT = _rot(20.0, 12.0)
SHIFT = np.array([13.0, -7.0, 25.0])
LAYOUTS = {
    "ras_stored": ((0, 1, 2), (1, 1, 0), None, None),
    "sagittal": ((1, 2, 0), (0, 1, 0), None, None),
    "oblique": ((0, 1, 2), (0, 0, 0), ROT, SHIFT),
}


@pytest.fixture(scope="module")
def cases(shared_data):
    ct, labels, centre = load_case(shared_data)
    base = PlanningEngine(ct, labels)
    out = {"base": (base, np.eye(3), np.zeros(3))}
    for name, (perm, flips, rot, shift) in LAYOUTS.items():
        img, arr = _relayout(ct, perm, flips, rot, shift)
        lab = LabelMap([arr(layer) for layer in labels.layers], img.with_array(
            arr(labels.layers[0])), labels.structures)
        r = rot if rot is not None else np.eye(3)
        s = shift if shift is not None else np.zeros(3)
        out[name] = (PlanningEngine(img, lab), r, s)
    return out, centre


def _to_layout(p, r, s):
    return np.asarray(p, float) @ r.T + s


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_body_mask_is_the_same_cells(cases, name) -> None:
    engines, _ = cases
    base = engines["base"][0]
    eng, r, s = engines[name]
    kji = np.argwhere(base.body)
    pts = base.grid.index_to_world(kji[:, ::-1].astype(float))
    ijk = np.rint(eng.grid.world_to_index(_to_layout(pts, r, s))).astype(int)
    assert eng.body.sum() == base.body.sum()
    assert eng.body[ijk[:, 2], ijk[:, 1], ijk[:, 0]].all()
    # and the skin has no point deep inside the body (the regression: lung walls)
    skin, _ = eng.skin_points()
    back = (skin - s) @ r  # to the base frame
    from scipy import ndimage as ndi
    depth = ndi.distance_transform_edt(base.body, sampling=base.grid.spacing_mm[::-1])
    c = np.rint(base.grid.world_to_index(back)).astype(int)
    c = np.clip(c, 0, np.asarray(base.grid.shape_ijk) - 1)
    assert float(np.max(depth[c[:, 2], c[:, 1], c[:, 0]])) <= 6.0
    assert abs(len(skin) - len(base.skin_points()[0])) < 0.03 * len(skin)


PATHS = [  # (entry, target) LPS mm on the base layout
    ((-129.5, -230.3, 380.8), None),  # lateral-anterior to the lesion: safe
    ((-8.0, -330.0, 364.3), (-8.0, -197.3, 364.3)),  # anterior to the pancreas: bowel
    ((-83.0, 0.0, 316.3), (-83.0, -137.3, 316.3)),  # posterior to the right kidney
    ((-175.0, -120.0, 420.0), None),  # through the right ribs / lung base
]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_evaluate_is_layout_invariant(cases, name) -> None:
    engines, centre = cases
    base = engines["base"][0]
    eng, r, s = engines[name]
    for entry, target in PATHS:
        target = centre if target is None else target
        m0 = base.evaluate(entry, target, check_entry=False)
        m1 = eng.evaluate(_to_layout(entry, r, s), _to_layout(target, r, s), check_entry=False)
        assert m1.verdict == m0.verdict
        assert [c.name for c in m1.crossings] == [c.name for c in m0.crossings]
        for a, b in zip(m0.crossings, m1.crossings):
            assert abs(a.enter_mm_from_entry - b.enter_mm_from_entry) < 1e-6
        assert m1.insertion_depth_mm == pytest.approx(m0.insertion_depth_mm, abs=1e-6)
        assert set(m1.clearances) == set(m0.clearances)
        for k, c in m0.clearances.items():
            assert m1.clearances[k].clearance_mm == pytest.approx(c.clearance_mm, abs=1e-4), k


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_search_suggests_the_same_physical_paths(cases, name) -> None:
    engines, centre = cases
    base = engines["base"][0]
    eng, r, s = engines[name]
    cons = SearchConstraints(excluded_regions=())
    r0 = base.search(centre, cons, top_k=3)
    r1 = eng.search(_to_layout(centre, r, s), cons, top_k=3)
    assert r0.suggestions and r1.suggestions
    e0 = np.array([m.entry_lps for m in r0.suggestions])
    e1 = (np.array([m.entry_lps for m in r1.suggestions]) - s) @ r
    # the best entry is the same physical point within a voxel (3 mm); the next ones
    # may swap between near-equal scores, so each must lie near one of the others'
    assert np.linalg.norm(e1[0] - e0[0]) <= 3.0 * np.sqrt(3)
    assert int(r1.feasible.sum()) == pytest.approx(int(r0.feasible.sum()), rel=0.06)
    for m in r1.suggestions:
        back = (np.asarray(m.entry_lps) - s) @ r
        m0 = base.evaluate(back, centre, check_entry=False)
        assert m0.verdict == m.verdict
        assert not any(c.forbidden for c in m0.crossings)
    assert {m.verdict for m in r1.suggestions} <= {m.verdict for m in r0.suggestions} | {
        "caution"}


def test_axial_axis_follows_the_direction(cases) -> None:
    engines, _ = cases
    assert axial_array_axis(engines["base"][0].grid) == 0
    assert axial_array_axis(engines["sagittal"][0].grid) == 1


def test_sagittal_scan_without_lung_labels_enters_through_skin(shared_data, cases) -> None:
    """Lungs/bowel not segmented: their air must still not become "skin" (regression)."""
    from scipy import ndimage as ndi

    engines, centre = cases
    base = engines["base"][0]
    ct, labels, _ = load_case(shared_data)
    keep = [s for s in labels.structures if s.name in (
        "liver", "lesion", "aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein",
        "gallbladder") or s.name.startswith("rib_")]
    perm, flips, _, _ = LAYOUTS["sagittal"]
    img, arr = _relayout(ct, perm, flips)
    layers = [arr(layer) for layer in labels.layers]
    sub = LabelMap(layers, img.with_array(layers[0]), keep)
    eng = PlanningEngine(img, sub)
    res = eng.search(centre, SearchConstraints(excluded_regions=()), top_k=5)
    assert res.suggestions
    depth = ndi.distance_transform_edt(base.body, sampling=base.grid.spacing_mm[::-1])
    for m in res.suggestions:
        c = np.rint(base.grid.world_to_index(np.asarray(m.entry_lps))).astype(int)
        assert depth[c[2], c[1], c[0]] <= 6.0, (m.entry_lps, m.insertion_depth_mm)
