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

from .synthetic import make_grid, rotation


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
