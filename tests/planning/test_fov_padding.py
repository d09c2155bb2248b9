"""A CT whose reconstruction circle cuts through the patient (padding −3024 HU outside):
the circle is not skin, no entry is suggested there."""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.planning import PlanningEngine, SearchConstraints
from ir_planner.planning.body import next_to_padding

from .test_real_ct import load_case


@pytest.fixture(scope="module")
def truncated(shared_data):
    ct, labels, centre = load_case(shared_data)
    k, j, i = np.indices(ct.shape)
    pts = ct.index_to_world(np.stack([i, j, k], -1).reshape(-1, 3).astype(float))
    mid = ct.index_to_world((np.asarray(ct.shape_ijk) - 1) / 2.0)
    radius_mm = 150.0
    fov = (np.hypot(pts[:, 0] - mid[0], pts[:, 1] - mid[1]) <= radius_mm).reshape(ct.shape)
    assert ((ct.array > -300) & ~fov).sum() > 10_000  # the circle cuts the body
    img = ct.with_array(np.where(fov, ct.array, -3024.0).astype(np.float32))
    return img, labels, centre, mid, radius_mm


def test_field_of_view_edge_is_not_skin(truncated) -> None:
    img, labels, centre, mid, radius_mm = truncated
    eng = PlanningEngine(img, labels)
    assert "field of view" in eng.body_source and any("padding" in w for w in eng.warnings)
    pts, nrm = eng.skin_points()
    assert not next_to_padding(pts, nrm, img).any()
    res = eng.search(centre, SearchConstraints(), top_k=3)
    r = np.hypot(res.entries_lps[:, 0] - mid[0], res.entries_lps[:, 1] - mid[1])
    # before the fix about half the candidates (12,084 of 23,897) lay on the circle
    assert np.mean(r > radius_mm - 2.0) < 0.01
    assert res.suggestions
    for m in res.suggestions:
        e = np.asarray(m.entry_lps)
        assert np.hypot(e[0] - mid[0], e[1] - mid[1]) < radius_mm - 2.0


def test_no_padding_no_change(shared_data) -> None:
    ct, labels, _ = load_case(shared_data)
    eng = PlanningEngine(ct, labels)
    assert "padding" not in eng.body_source
    pts, nrm = eng.skin_points()
    assert not next_to_padding(pts, nrm, ct).any()


def test_body_cut_inside_the_grid_is_not_skin_at_organs(shared_data) -> None:
    """A scan resampled onto a larger grid with air-valued fill (−1000 HU): the old edge
    cuts through the liver inside the grid. Outline points at the liver are not skin."""
    ct, labels, centre = load_case(shared_data)
    k_cut = int(round(ct.world_to_index(centre)[2])) - 4  # 4 slices (12 mm) below target
    arr = ct.array.copy()
    arr[k_cut + 1:] = -1000.0
    layers = [layer.copy() for layer in labels.layers]
    for layer in layers:
        layer[k_cut + 1:] = 0
    img = ct.with_array(arr)
    from ir_planner.core.labels import LabelMap

    lm = LabelMap(layers, img, list(labels.structures))
    target = centre - np.array([0.0, 0.0, 15.0])  # inside the liver, ≈ 3 mm below the cut
    eng = PlanningEngine(img, lm)
    assert any("internal organ" in w for w in eng.warnings)
    pts, _ = eng.skin_points()
    liver = lm.mask("liver")
    ijk = np.rint(img.world_to_index(pts)).astype(int)
    near_cut = ijk[:, 2] >= k_cut - 1
    assert not liver[np.minimum(ijk[near_cut, 2], k_cut), ijk[near_cut, 1], ijk[near_cut, 0]].any()
    res = eng.search(target, SearchConstraints(), top_k=3)
    # before: 1-6 mm paths straight down through the cut face were suggested as "safe"
    assert res.suggestions and all(m.length_mm > 30.0 for m in res.suggestions)
