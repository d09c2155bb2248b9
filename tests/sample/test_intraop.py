"""The intra-op scan: ground-truth transform and needle agree with the pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ir_planner.core.catalog import lookup
from ir_planner.core.errors import InputError
from ir_planner.sample.intraop import find_safe_path, make_intraop_scan, rotation_matrix
from ir_planner.sample.phantom import LABEL_NAMES, make_anatomy, make_phantom, render_tissue


@pytest.fixture(scope="module")
def scene():  # type: ignore[no-untyped-def]
    image, labels, info = make_phantom(size_ijk=(96, 96, 32), spacing_mm=(3.73, 3.73, 7.5),
                                       seed=5)
    scan = make_intraop_scan(labels, info, seed=5, pixel_mm=1.0, slice_mm=2.5, n_slices=24)
    return image, labels, info, scan


def _centroid(labels, name):  # type: ignore[no-untyped-def]
    k, j, i = np.nonzero(labels.mask(name))
    return labels.grid.index_to_world([i.mean(), j.mean(), k.mean()])


def _apply(m, p):  # type: ignore[no-untyped-def]
    m = np.asarray(m)
    return m[:3, :3] @ np.asarray(p) + m[:3, 3]


def test_rotation_matrix_right_handed() -> None:
    r = rotation_matrix([0, 0, 1], 90.0)
    assert np.allclose(r @ [1, 0, 0], [0, 1, 0])
    assert np.isclose(np.linalg.det(rotation_matrix([1, 2, 3], 17.0)), 1.0)


def test_transform_is_a_small_rigid_motion(scene) -> None:  # type: ignore[no-untyped-def]
    *_, scan = scene
    t = scan.truth
    to_plan, to_intra = np.array(t["intraop_to_plan"]), np.array(t["plan_to_intraop"])
    assert np.allclose(to_plan @ to_intra, np.eye(4), atol=1e-5)
    rot = to_intra[:3, :3]
    assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-5) and np.linalg.det(rot) > 0.999
    angle = math.degrees(math.acos(min(1.0, (np.trace(rot) - 1) / 2)))
    assert 2.0 <= angle <= 5.0 and angle == pytest.approx(t["rotation_deg"], abs=1e-3)
    assert 5.0 <= np.linalg.norm(t["shift_mm"]) <= 15.0
    # the rotation centre moves exactly by the shift
    c = np.array(t["rotation_centre_plan_lps_mm"])
    assert np.allclose(_apply(to_intra, c) - c, t["shift_mm"], atol=1e-4)
    assert "LPS" in t["conventions"]["frames"]["plan"] and "millimetres" in t["conventions"]["units"]


def test_tumour_moves_with_the_saved_transform(scene) -> None:  # type: ignore[no-untyped-def]
    _image, labels, _info, scan = scene
    mask = scan.labels.mask("tumour_1")
    assert not mask[0].any() and not mask[-1].any(), "the target lies wholly inside the slab"
    plan_c = _centroid(labels, "tumour_1")
    intra_c = _centroid(scan.labels, "tumour_1")
    mapped = _apply(scan.truth["plan_to_intraop"], plan_c)
    assert np.all(np.abs(mapped - intra_c) <= np.asarray(scan.image.spacing_mm))
    # and the tumour is darker than the liver around it in the intra-op pixels
    liver = scan.labels.mask("liver")
    assert np.median(scan.image.array[mask]) < np.median(scan.image.array[liver]) - 40
    t1 = scan.truth["target"]
    assert np.allclose(_apply(scan.truth["plan_to_intraop"], t1["centre_plan_lps_mm"]),
                       t1["centre_intraop_lps_mm"], atol=1e-4)


def test_needle_truth_is_consistent(scene) -> None:  # type: ignore[no-untyped-def]
    _image, labels, _info, scan = scene
    n = scan.truth["needle"]
    to_intra = scan.truth["plan_to_intraop"]
    for key in ("tip", "entry"):
        assert np.allclose(_apply(to_intra, n[f"{key}_plan_lps_mm"]),
                           n[f"{key}_intraop_lps_mm"], atol=1e-4)
    tip, entry = np.array(n["tip_plan_lps_mm"]), np.array(n["entry_plan_lps_mm"])
    axis = np.array(n["axis_plan"])
    assert np.linalg.norm(axis) == pytest.approx(1.0)
    assert np.allclose((tip - entry) / np.linalg.norm(tip - entry), axis, atol=1e-5)
    assert n["inserted_length_mm"] == pytest.approx(np.linalg.norm(tip - entry), abs=1e-4)
    assert n["diameter_mm"] == pytest.approx(1.47)
    # tip inside the targeted tumour (plan labels), entry at the skin surface
    grid = labels.grid
    ijk = np.rint(grid.world_to_index(tip)).astype(int)
    assert labels.layers[0][ijk[2], ijk[1], ijk[0]] == labels.get("tumour_1").label
    outside = np.rint(grid.world_to_index(entry - 3.0 * axis)).astype(int)
    inside = np.rint(grid.world_to_index(entry + 4.0 * axis)).astype(int)
    assert labels.layers[0][outside[2], outside[1], outside[0]] == 0
    assert labels.layers[0][inside[2], inside[1], inside[0]] != 0


@pytest.mark.parametrize("seed", [0, 5])
def test_path_keeps_catalog_margins_against_analytic_anatomy(seed: int) -> None:
    """The chosen path, checked on a 0.5 mm re-rendering of the anatomy around it."""
    _image, labels, info = make_phantom(seed=seed)
    for tumour in info["tumours"]:
        centre = np.array(tumour["centre_lps_mm"])
        direction, depth = find_safe_path(labels, tumour["name"], centre)
        entry, tip = centre + depth * direction, centre + 3.0 * direction
        lo, hi = np.minimum(entry, tip) - 10.0, np.maximum(entry, tip) + 10.0
        xs, ys, zs = (np.arange(lo[a], hi[a], 0.5) for a in range(3))
        _tissue, fine = render_tissue(xs, ys, zs, make_anatomy(seed=seed), table=False)
        zz, yy, xx = np.meshgrid(zs, ys, xs, indexing="ij")
        pts = np.stack([xx, yy, zz], axis=-1).reshape(-1, 3)
        axis = (tip - entry) / np.linalg.norm(tip - entry)
        t = np.clip((pts - entry) @ axis, 0.0, np.linalg.norm(tip - entry))
        dist = np.linalg.norm(pts - (entry + t[:, None] * axis), axis=1)
        flat = fine.ravel()
        for value in np.unique(flat):
            name = LABEL_NAMES[int(value)] if value else ""
            info_ = lookup(name) if name else None
            if info_ is not None and info_.forbidden:
                # 0.75 mm needle radius; 1 mm tolerance for the planning grid's voxels
                assert dist[flat == value].min() >= info_.margin_mm + 0.75 - 1.0, name
        crossed = {LABEL_NAMES[int(v)] for v in np.unique(flat[dist <= 0.25]) if v}
        assert crossed <= {"skin", "subcutaneous_fat", "abdominal_wall_muscle", "visceral_fat",
                           "diaphragm", "liver", "autochthon_left", "autochthon_right",
                           tumour["name"]}, crossed


def test_needle_pixels_lie_on_the_saved_axis(scene) -> None:  # type: ignore[no-untyped-def]
    *_, scan = scene
    n = scan.truth["needle"]
    image = scan.image
    a = image.array
    kk, jj, ii = np.nonzero(a >= 2000)
    assert kk.size > 0.5 * n["inserted_length_mm"] / image.spacing_mm[0]
    centres = image.index_to_world(np.stack([ii, jj, kk], axis=-1))
    tip = np.array(n["tip_intraop_lps_mm"])
    u = np.array(n["axis_intraop"])
    half_slice = image.spacing_mm[2] / 2.0
    # distance from the axis to the voxel's slab (centre ± half a slice along z)
    dists = []
    for c in centres:
        best = np.inf
        for dz in np.linspace(-half_slice, half_slice, 11):
            v = c + [0.0, 0.0, dz] - tip
            best = min(best, float(np.linalg.norm(v - (v @ u) * u)))
        dists.append(best)
    assert max(dists) <= 1.0
    along = (centres - tip) @ u
    outside = n["inserted_length_mm"] + n["outside_length_mm"]
    assert along.max() <= 1.5 and along.min() >= -outside - 1.5
    assert a.max() == 3071 and a.min() >= -1024
    # streaks: alternating bright/dark around the needle in its slice, within the body
    k_tip = int(np.rint(image.world_to_index(tip)[2]))
    centre = tip - 10.0 * u
    angles = np.radians(np.arange(0, 360, 3))
    ring = centre + 18.0 * np.stack([np.cos(angles), np.sin(angles), 0 * angles], axis=-1)
    ring[:, 2] = image.index_to_world([0, 0, k_tip])[2]
    idx = np.rint(image.world_to_index(ring)).astype(int)
    profile = a[idx[:, 2], idx[:, 1], idx[:, 0]].astype(float)
    signs = np.sign(profile - np.median(profile))
    assert np.count_nonzero(np.diff(signs[signs != 0])) >= 8


def test_deterministic_and_validated(scene) -> None:  # type: ignore[no-untyped-def]
    _image, labels, info, scan = scene
    again = make_intraop_scan(labels, info, seed=5, pixel_mm=1.0, slice_mm=2.5, n_slices=24)
    assert np.array_equal(again.image.array, scan.image.array)
    assert again.truth == scan.truth
    with pytest.raises(InputError, match="tumour_9"):
        make_intraop_scan(labels, info, target="tumour_9")
    with pytest.raises(InputError, match="gauge"):
        make_intraop_scan(labels, info, needle_gauge=3)
