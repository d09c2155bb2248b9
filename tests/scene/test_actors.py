"""Plan objects as meshes: needle size and colours, zones, margin shells, skin risk."""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.core.errors import GeometryError, InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.planning.ablation import Probe, get_device, zone_for
from ir_planner.scene.actors import (
    clearance_profile,
    margin_shell_mesh,
    needle_mesh,
    skin_risk_mesh,
    zone_mesh,
)
from ir_planner.scene.style import (
    CLEARANCE_SAFE_RGB,
    CLEARANCE_UNSAFE_RGB,
    clearance_colors,
)


def _axis_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (b - a) / np.linalg.norm(b - a)
    rel = points - a
    return np.linalg.norm(rel - np.outer(rel @ d, d), axis=1)


def test_needle_is_a_tube_of_the_gauge_diameter() -> None:
    entry, target = np.array([10.0, -90.0, 40.0]), np.array([-20.0, 5.0, 12.0])
    mesh = needle_mesh(entry, target, diameter_mm=1.473)  # 17 G
    pts = np.asarray(mesh.points)
    side = pts[:-2]  # the last two points are the cap centres (entry, target)
    np.testing.assert_allclose(_axis_distance(side, entry, target), 1.473 / 2, atol=1e-9)
    np.testing.assert_allclose(pts[-2:], [entry, target])
    assert mesh.field_data["length_mm"][0] == pytest.approx(np.linalg.norm(target - entry))
    assert mesh.is_manifold  # closed: capped at both ends
    with pytest.raises(GeometryError):
        needle_mesh(entry, entry, diameter_mm=1.0)
    with pytest.raises(InputError):
        needle_mesh(entry, target, diameter_mm=0.0)


def test_needle_colour_follows_clearance_along_it() -> None:
    entry, target = np.zeros(3), np.array([0.0, 100.0, 0.0])
    # a vessel (margin 3 mm) whose surface is 1 mm from the needle at 70 mm depth
    vessel_centre, vessel_radius, margin = np.array([6.0, 70.0, 0.0]), 5.0, 3.0

    def slack(a: np.ndarray, b: np.ndarray) -> float:
        t = np.clip((vessel_centre - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
        return float(np.linalg.norm(a + t * (b - a) - vessel_centre) - vessel_radius - margin)

    pos, values = clearance_profile(slack, entry, target, samples=50)
    assert pos[np.argmin(values)] == pytest.approx(70.0, abs=1.0)
    assert values.min() == pytest.approx(1.0 - margin, abs=0.05)  # −2 mm: margin violated
    mesh = needle_mesh(entry, target, diameter_mm=1.0, slack_mm=values, positions_mm=pos)
    rgb = np.asarray(mesh.point_data["RGB"]) / 255.0
    along = np.asarray(mesh.points)[:, 1]
    near = np.abs(along - 70.0) < 1.0
    far = along < 20.0
    np.testing.assert_allclose(rgb[near].mean(axis=0), CLEARANCE_UNSAFE_RGB, atol=0.02)
    np.testing.assert_allclose(rgb[far].mean(axis=0), CLEARANCE_SAFE_RGB, atol=0.02)
    # the colour scale: red below 0, green beyond the caution band, amber in between
    c = clearance_colors([-1.0, 1.0, 5.0, np.inf])
    np.testing.assert_allclose(c[[0, 2, 3]], [CLEARANCE_UNSAFE_RGB, CLEARANCE_SAFE_RGB,
                                              CLEARANCE_SAFE_RGB])
    assert c[1][0] > 0.9 and c[1][1] > 0.6  # amber


def test_heat_zone_mesh_has_the_zone_volume() -> None:
    device = get_device("neuwave-pr")
    probe = Probe.on_trajectory(device, None, [0, -100, 0], [0, 0, 0])
    zone = zone_for(probe)
    mesh = zone_mesh(zone, spacing_mm=0.75)
    z = probe.setting.zone
    a, r = float(z["length_mm"]) / 2, float(z["diameter_mm"]) / 2
    assert mesh.volume == pytest.approx(4.0 / 3.0 * np.pi * a * r * r, rel=0.02)
    centre, _, _ = probe.heat_geometry()
    np.testing.assert_allclose(np.asarray(mesh.center), centre, atol=0.5)


def test_margin_shell_is_the_tumour_grown_by_the_margin() -> None:
    grid = ImageVolume(np.zeros((50, 50, 50), np.int16),
                       affine_from_geometry([0, 0, 0], [0.8, 0.8, 0.8], np.diag([-1, 1, -1])))
    k, j, i = np.indices(grid.shape)
    ball = (i - 25) ** 2 + (j - 25) ** 2 + (k - 25) ** 2 <= 10 ** 2  # r = 8 mm
    labels = LabelMap.from_masks([("tumour_1", ball)], grid)
    shell = margin_shell_mesh(labels, "tumour_1", 5.0)
    assert shell.volume == pytest.approx(4.0 / 3.0 * np.pi * 13.0 ** 3, rel=0.08)
    np.testing.assert_allclose(np.asarray(shell.center), grid.index_to_world([25, 25, 25]),
                               atol=0.5)
    with pytest.raises(InputError):
        margin_shell_mesh(labels, "tumour_1", -1.0)


def test_skin_risk_colours_the_right_side() -> None:
    grid = ImageVolume(np.zeros((30, 30, 30), np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))
    body = np.zeros(grid.shape, bool)
    body[5:25, 5:25, 5:25] = True
    # evaluated skin points: the anterior face (low y) is safe, the rest risky
    k, j, i = np.nonzero(body)
    pts = grid.index_to_world(np.c_[i, j, k])
    risk = np.where(pts[:, 1] < 14.0, 0.0, 1.0)
    mesh = skin_risk_mesh(body, grid, pts, risk, triangle_budget=4000)
    rgb = np.asarray(mesh.point_data["RGB"]) / 255.0
    y = np.asarray(mesh.points)[:, 1]
    front, back = y < 10.5, y > 40.0
    assert front.any() and back.any()
    np.testing.assert_allclose(rgb[front].mean(axis=0), CLEARANCE_SAFE_RGB, atol=0.02)
    np.testing.assert_allclose(rgb[back].mean(axis=0), CLEARANCE_UNSAFE_RGB, atol=0.02)
    with pytest.raises(InputError):
        skin_risk_mesh(body, grid, pts, risk[:-1])
