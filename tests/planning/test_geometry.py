"""Exact geometry primitives against dense brute force."""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.core.errors import GeometryError
from ir_planner.core.volume import ImageVolume
from ir_planner.planning.geometry import (
    GridFrame,
    point_box_distance,
    point_segment_distance,
    segment_box_distance,
    traverse_cells,
)

from .synthetic import brute_force_clearance, make_grid, rotation


def test_segment_box_distance_matches_dense_sampling() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(-20, 20, (400, 3))
    b = rng.uniform(-20, 20, (400, 3))
    lo = rng.uniform(-5, 0, (400, 3))
    hi = lo + rng.uniform(0.5, 6, (400, 3))
    dist, t = segment_box_distance(a, b, lo, hi)
    ts = np.linspace(0, 1, 20001)
    for n in range(400):
        pts = a[n] + ts[:, None] * (b[n] - a[n])
        truth = point_box_distance(pts, lo[n], hi[n]).min()
        step = np.linalg.norm(b[n] - a[n]) / 20000
        assert truth - step <= dist[n] <= truth + 1e-9
        p = a[n] + t[n] * (b[n] - a[n])
        assert point_box_distance(p, lo[n], hi[n]) == pytest.approx(dist[n], abs=1e-9)


def test_segment_box_distance_known_values() -> None:
    lo, hi = np.zeros(3), np.ones(3)
    # parallel to a face, 2 mm above it
    d, _ = segment_box_distance([-5, 0.5, 3], [5, 0.5, 3], lo, hi)
    assert d == pytest.approx(2.0)
    # through the box
    d, _ = segment_box_distance([-5, 0.5, 0.5], [5, 0.5, 0.5], lo, hi)
    assert d == 0.0
    # ends short of the box, along the axis
    d, t = segment_box_distance([-5, 0.5, 0.5], [-1, 0.5, 0.5], lo, hi)
    assert d == pytest.approx(1.0) and t == pytest.approx(1.0)
    # passing an edge diagonally: closest approach to the edge (1, 1, z)
    d, _ = segment_box_distance([3, 0, 0.5], [0, 3, 0.5], lo, hi)
    assert d == pytest.approx(np.sqrt(2) / 2)


def test_point_segment_distance() -> None:
    d, t = point_segment_distance([[0, 1, 0], [-3, 0, 0], [5, 4, 0]], [0, 0, 0], [2, 0, 0])
    np.testing.assert_allclose(d, [1, 3, 5])
    np.testing.assert_allclose(t, [0, 0, 1])


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0]),
                                       rotation("z", 30) @ rotation("x", 20)])
def test_traverse_cells_matches_dense_sampling(direction: np.ndarray) -> None:
    grid = make_grid((20, 18, 12), (1.0, 0.8, 2.5), direction, origin=(5.0, -3.0, 2.0))
    frame = GridFrame.from_volume(grid)
    rng = np.random.default_rng(2)
    for _ in range(30):
        u0 = rng.uniform(-0.4, 19.4, 3) * [1, 17.8 / 19.8, 11.8 / 19.8]
        u1 = rng.uniform(-0.4, 19.4, 3) * [1, 17.8 / 19.8, 11.8 / 19.8]
        a = grid.index_to_world(u0)
        b = grid.index_to_world(u1)
        cells, t_in, t_out = traverse_cells(frame.lps_to_index(a), frame.lps_to_index(b),
                                            frame.shape_ijk)
        assert np.all(np.diff(t_in) > 0) and t_in[0] == 0 and t_out[-1] == pytest.approx(1.0)
        ts = np.linspace(0, 1, 5001)
        dense = np.floor(u0 + ts[:, None] * (u1 - u0) + 0.5).astype(int)
        dense_set = {tuple(c) for c in dense}
        got = {tuple(c) for c in cells}
        # every densely sampled cell is reported; reported cells are touched by the path
        assert dense_set <= got
        assert len(got - dense_set) <= 2  # only corner clips thinner than the sampling


def test_sheared_grid_refused() -> None:
    affine = np.eye(4)
    affine[0, 1] = 0.3
    vol = ImageVolume(np.zeros((3, 3, 3)), affine)
    with pytest.raises(GeometryError, match="sheared"):
        GridFrame.from_volume(vol)


def test_compiled_segment_box_distance_matches_numpy() -> None:
    from ir_planner.planning.geometry import segment_box_distance
    from ir_planner.planning.tube import seg_box_dist

    rng = np.random.default_rng(7)
    scratch = np.empty(8)
    for _ in range(400):
        a = rng.uniform(-5, 5, 3)
        b = a + rng.uniform(-6, 6, 3) * (rng.random(3) > 0.2)  # some axis-parallel
        lo = rng.uniform(-3, 2, 3)
        hi = lo + rng.uniform(0.1, 3, 3)
        ref, _ = segment_box_distance(a, b, lo, hi)
        assert seg_box_dist(a, b - a, lo, hi, scratch) == pytest.approx(float(ref), abs=1e-9)


@pytest.mark.parametrize("direction", [np.eye(3), rotation("z", 30) @ rotation("x", 20)])
def test_tube_distances_exact_per_structure(direction: np.ndarray) -> None:
    """Kernel vs the engine's exact clearance: exact below the range, inf (≥ range) above,
    for every structure, including segments that pass through cells (distance 0)."""
    from ir_planner.core.labels import LabelMap
    from ir_planner.planning.tube import tube_distances

    grid = make_grid((40, 36, 20), (1.0, 0.8, 2.5), direction, origin=(5.0, -3.0, 2.0))
    rng = np.random.default_rng(3)
    arr = np.zeros(grid.shape, dtype=np.uint16)
    for lab in (1, 2, 3):
        k, j, i = rng.integers(0, 20), rng.integers(0, 36), rng.integers(0, 40)
        arr[max(0, k - 2):k + 2, max(0, j - 4):j + 3, max(0, i - 3):i + 5] = lab
    arr[(rng.random(grid.shape) > 0.999)] = 3  # scattered single cells
    labels = LabelMap.from_array(arr, grid, {1: "aorta", 2: "rib_left_1", 3: "colon"})
    frame = GridFrame.from_volume(grid)
    luts = np.full((1, 4), -1, dtype=np.int16)
    luts[0, 1:4] = [0, 1, 2]
    names = ["aorta", "rib_left_1", "colon"]
    masks = [arr == lab for lab in (1, 2, 3)]
    b = grid.index_to_world([20.0, 18.0, 10.0])
    ends = grid.index_to_world(rng.uniform(-2, [41, 37, 21], (60, 3)))
    aq = frame.lps_to_q(ends)
    bq = frame.lps_to_q(b)
    truth = np.array([[brute_force_clearance(grid, masks[s], e, b, step_mm=0.05)
                       for s in range(3)] for e in ends])
    assert (truth < 1e-9).sum() >= 1 and (truth < 3).sum() >= 5 and (truth > 12.1).sum() >= 5
    for range_mm in (3.0, 12.0):
        got = tube_distances(aq, bq, labels.layers, luts, frame.spacing_mm, frame.shape_ijk,
                             range_mm, 3)
        for n in range(len(ends)):
            for s in range(3):
                # brute force overestimates the truth by <= 0.025 mm
                if truth[n, s] < range_mm - 0.05:
                    assert truth[n, s] - 0.03 <= got[n, s] <= truth[n, s] + 1e-6, names[s]
                elif truth[n, s] > range_mm + 0.05:
                    assert not np.isfinite(got[n, s])


def test_forbidden_maps_match_numpy() -> None:
    from ir_planner.planning.tube import block_map, forbidden_maps

    rng = np.random.default_rng(4)
    layers = [rng.integers(0, 6, (9, 13, 18)).astype(np.uint16) * (rng.random((9, 13, 18)) > 0.9),
              rng.integers(0, 3, (9, 13, 18)).astype(np.uint16) * (rng.random((9, 13, 18)) > 0.97)]
    luts = np.full((2, 6), -1, dtype=np.int16)
    luts[0, 2] = 0
    luts[0, 5] = 1
    luts[1, 1] = 2
    fmap, bmap = forbidden_maps(layers, luts)
    ref = np.isin(layers[0], [2, 5]) | (layers[1] == 1)
    np.testing.assert_array_equal(fmap, ref.astype(np.uint8))
    assert bmap.shape == (3, 4, 5) and bmap.any() and not bmap.all()
    np.testing.assert_array_equal(bmap, block_map(fmap))
    assert bmap[0, 0, 0] == ref[:4, :4, :4].any()
