"""Zones, coverage and margins against analytic and brute-force truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from ir_planner.core.errors import GeometryError, InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume
from ir_planner.planning.ablation import (
    CriticalModel,
    DeviceCatalog,
    Probe,
    TumourModel,
    evaluate,
    voxelise,
    zone_for,
)
from ir_planner.planning.ablation.zones import EllipsoidZone, ellipse_signed_distance

U = np.array([0.0, 1.0, 0.0])  # insertion direction of the test paths (towards posterior)


def _custom(length: float, diameter: float, *, distal: float | None = None,
            centre_back: float | None = None) -> DeviceCatalog:
    zone: dict[str, float] = {"length_mm": length, "diameter_mm": diameter}
    if distal is not None:
        zone["distal_edge_beyond_tip_mm"] = distal
    else:
        zone["tip_to_centre_mm"] = centre_back if centre_back is not None else 0.0
    doc = {"schema": "ir-planner-device/1", "references": {"t": "test geometry"},
           "devices": [{"id": "test-mw", "name": "test", "kind": "microwave",
                        "settings": [{"name": "s", "zone": zone,
                                      "cite": {k: "t" for k in zone}}]}]}
    return DeviceCatalog(include_plugins=False, user_dir="/nonexistent", extra=[doc])


@pytest.fixture(scope="module")
def catalog() -> DeviceCatalog:
    return DeviceCatalog(include_plugins=False, user_dir="/nonexistent")


def _zone(cat: DeviceCatalog, tip: np.ndarray, device: str = "test-mw", setting=None,
          calibration: float = 1.0):
    dev = cat.get(device)
    return zone_for(Probe(dev, dev.setting(setting), tip, U, calibration))


def _coaxial_overlap_ml(r_a, r_b, z_lo, z_hi, n=200_001) -> float:
    """Volume (ml) of the intersection of two bodies of revolution on one axis."""
    z = np.linspace(z_lo, z_hi, n)
    r = np.minimum(r_a(z), r_b(z))
    return float(np.trapezoid(math.pi * r * r, z) / 1000.0)


def _sphere_r(c: float, r: float):
    return lambda z: np.sqrt(np.maximum(r * r - (z - c) ** 2, 0.0))


def _spheroid_r(c: float, a: float, b: float):
    return lambda z: b * np.sqrt(np.maximum(1.0 - ((z - c) / a) ** 2, 0.0))


# -- ellipse distance -------------------------------------------------------------------------
@pytest.mark.parametrize("a,b", [(23.5, 17.5), (10.0, 18.0), (15.0, 15.0)])
def test_ellipse_distance_matches_brute_force(a: float, b: float) -> None:
    rng = np.random.default_rng(1)
    z = rng.uniform(-2 * a, 2 * a, 300)
    rho = rng.uniform(0, 2 * b, 300)
    t = np.linspace(0, np.pi, 100_001)  # the upper half suffices for rho >= 0
    ez, er = a * np.cos(t), b * np.sin(t)
    truth = np.array([np.min(np.hypot(ez - zi, er - ri)) for zi, ri in zip(z, rho)])
    inside = (z / a) ** 2 + (rho / b) ** 2 <= 1
    got = ellipse_signed_distance(z, rho, a, b)
    assert np.all(np.sign(got[np.abs(truth) > 1e-6]) == np.where(inside, 1, -1)[
        np.abs(truth) > 1e-6])
    np.testing.assert_allclose(np.abs(got), truth, atol=2e-3)


# -- device geometry on the axis ---------------------------------------------------------------
def test_tip_geometry_and_calibration(catalog: DeviceCatalog) -> None:
    tip = np.array([10.0, 20.0, 30.0])
    z = _zone(catalog, tip, "neuwave-pr", "65W-10min")
    # the zone reaches 6 mm past the tip and 47 mm back from there
    assert z.signed_distance([tip + 6.0 * U])[0] == pytest.approx(0.0, abs=1e-6)
    assert z.signed_distance([tip - 41.0 * U])[0] == pytest.approx(0.0, abs=1e-6)
    assert z.signed_distance([tip - 17.5 * U + [17.5, 0, 0]])[0] == pytest.approx(0, abs=1e-6)
    # calibration scales about the centre (17.5 mm behind the tip)
    zc = _zone(catalog, tip, "neuwave-pr", "65W-10min", calibration=0.77)
    centre = tip - 17.5 * U
    assert zc.signed_distance([centre + 0.77 * 23.5 * U])[0] == pytest.approx(0, abs=1e-6)
    assert zc.signed_distance([centre + [0.77 * 17.5, 0, 0]])[0] == pytest.approx(0, abs=1e-6)
    # the trajectory helper puts the tip at target + offset along entry→target
    dev = catalog.get("neuwave-pr")
    p = Probe.on_trajectory(dev, None, [0, -100, 0], [0, 0, 0], depth_offset_mm=-4.0)
    np.testing.assert_allclose(p.tip_lps, [0, -4.0, 0])


# -- coverage and margins, analytic --------------------------------------------------------------
def test_concentric_sphere_in_ellipsoid(catalog: DeviceCatalog) -> None:
    tip = np.array([0.0, 17.5, 0.0])  # zone centred at the origin (a 23.5, b 17.5)
    zone = _zone(catalog, tip, "neuwave-pr", "65W-10min")
    m = evaluate(zone, TumourModel.sphere([0, 0, 0], 10.0))
    assert m.min_margin_mm == pytest.approx(7.5, abs=0.05)
    assert abs(m.min_margin_point_lps[1]) < 1.0  # at the equator
    assert m.coverage_pct == pytest.approx(100.0, abs=0.01)
    assert m.shell_coverage_pct["5mm"] == pytest.approx(100.0, abs=0.01)
    truth10 = _coaxial_overlap_ml(_sphere_r(0, 20), _spheroid_r(0, 23.5, 17.5), -25, 25)
    assert m.shell_coverage_pct["10mm"] == pytest.approx(
        100 * truth10 / (4 / 3 * math.pi * 8.0), abs=1.0)
    assert m.tumour_volume_ml == pytest.approx(4 / 3 * math.pi, rel=0.01)
    assert m.zone_volume_ml == pytest.approx(4 / 3 * math.pi * 23.5 * 17.5 ** 2 / 1000, rel=1e-6)
    assert m.margin_percentiles_mm["p0"] == pytest.approx(7.5, abs=0.05)
    assert sum(m.margin_histogram["area_pct"]) == pytest.approx(100.0, abs=0.01)


@pytest.mark.parametrize("offset", [0.0, 8.0, 14.0, 20.0, -20.0])
def test_sphere_at_axial_offset(catalog: DeviceCatalog, offset: float) -> None:
    """Tumour centre shifted along the needle axis: margins (signs too) and coverage."""
    a, b, r = 23.5, 17.5, 10.0
    zone = _zone(catalog, np.array([0.0, 17.5, 0.0]), "neuwave-pr", "65W-10min")
    m = evaluate(zone, TumourModel.sphere([0, offset, 0], r))
    th = np.linspace(0, np.pi, 721)
    zs, rs = offset + r * np.cos(th), r * np.sin(th)
    t = np.linspace(0, np.pi, 50_001)
    ez, er = a * np.cos(t), b * np.sin(t)
    inside = (zs / a) ** 2 + (rs / b) ** 2 <= 1
    d = np.array([np.min(np.hypot(ez - zi, er - ri)) for zi, ri in zip(zs, rs)])
    truth_margin = float(np.min(np.where(inside, d, -d)))
    assert m.min_margin_mm == pytest.approx(truth_margin, abs=0.1)
    if abs(offset) >= 14:
        assert m.min_margin_mm < 0  # the tumour pokes out of the zone
    truth = _coaxial_overlap_ml(_sphere_r(offset, r), _spheroid_r(0, a, b), -40, 40)
    assert m.coverage_pct == pytest.approx(100 * truth / (4 / 3 * math.pi * r ** 3 / 1000),
                                           abs=1.0)
    truth5 = _coaxial_overlap_ml(_sphere_r(offset, r + 5), _spheroid_r(0, a, b), -40, 40)
    assert m.shell_coverage_pct["5mm"] == pytest.approx(
        100 * truth5 / (4 / 3 * math.pi * (r + 5) ** 3 / 1000), abs=1.0)


def test_spheroid_tumour_coaxial() -> None:
    cat = _custom(40.0, 30.0, centre_back=0.0)
    zone = _zone(cat, np.zeros(3))
    tumour = TumourModel.spheroid([0, 4.0, 0], U, 14.0, 8.0)
    m = evaluate(zone, tumour)
    truth = _coaxial_overlap_ml(_spheroid_r(4.0, 14.0, 8.0), _spheroid_r(0, 20.0, 15.0), -30, 30)
    assert m.coverage_pct == pytest.approx(100 * truth / (4 / 3 * math.pi * 14 * 64 / 1000),
                                           abs=1.0)
    # brute-force margin: dense meridian of the tumour against the zone ellipse
    t = np.linspace(0, np.pi, 4001)
    zs, rs = 4.0 + 14.0 * np.cos(t), 8.0 * np.sin(t)
    truth_margin = float(np.min(ellipse_signed_distance(zs, rs, 20.0, 15.0)))
    assert m.min_margin_mm == pytest.approx(truth_margin, abs=0.1)


@pytest.mark.parametrize("lateral", [0.0, 4.0, 9.0])
def test_sphere_in_sphere_lateral_offset(lateral: float) -> None:
    """Spherical zone R 15, tumour r 8 shifted sideways: margin R − (d + r); lens volume."""
    cat = _custom(30.0, 30.0, centre_back=0.0)
    zone = _zone(cat, np.zeros(3))
    R, r = 15.0, 8.0
    m = evaluate(zone, TumourModel.sphere([lateral, 0, 0], r))
    assert m.min_margin_mm == pytest.approx(R - (lateral + r), abs=0.05)
    d = lateral
    if d + r <= R:
        inter = 4 / 3 * math.pi * r ** 3
    else:  # lens volume of two intersecting spheres
        inter = (math.pi * (R + r - d) ** 2 * (d * d + 2 * d * r - 3 * r * r + 2 * d * R
                                               + 6 * r * R - 3 * R * R) / (12 * d))
    assert m.coverage_pct == pytest.approx(100 * inter / (4 / 3 * math.pi * r ** 3), abs=1.0)
    if lateral > 0:  # (for a concentric tumour every surface point is the minimum)
        np.testing.assert_allclose(m.min_margin_point_lps, [lateral + r, 0, 0], atol=0.7)


def test_multi_probe_union_against_monte_carlo() -> None:
    cat = _custom(30.0, 20.0, centre_back=0.0)
    dev = cat.get("test-mw")
    probes = [Probe(dev, dev.setting(None), np.array([x, 0.0, 0.0]), U) for x in (-7.0, 7.0)]
    zone = zone_for(probes)
    tumour = TumourModel.sphere([0, 0, 0], 9.0)
    m = evaluate(zone, tumour)
    rng = np.random.default_rng(0)
    p = rng.uniform(-9, 9, (2_000_000, 3))
    p = p[np.linalg.norm(p, axis=1) <= 9]
    ins = np.zeros(len(p), bool)
    for x in (-7.0, 7.0):
        q = p - [x, 0, 0]
        ins |= (q[:, 1] / 15) ** 2 + (q[:, 0] ** 2 + q[:, 2] ** 2) / 100 <= 1
    assert m.coverage_pct == pytest.approx(100 * ins.mean(), abs=1.0)
    # union margin at points outside both ellipsoids is exact: compare with brute force
    surf = tumour.surface_lps
    sd = np.maximum(*[EllipsoidZone(np.array([x, 0, 0.0]), U, 15, 10).signed_distance(surf)
                      for x in (-7.0, 7.0)])
    assert m.min_margin_mm == pytest.approx(float(sd.min()), abs=1e-9)
    assert m.min_margin_mm < 0


# -- tumour from a label map: cells, not centres -------------------------------------------------
@pytest.fixture(scope="module")
def voxel_sphere() -> tuple[np.ndarray, ImageVolume]:
    spacing = np.array([1.5, 1.2, 2.5])  # i, j, k
    shape_ijk = np.array([40, 48, 28])
    origin = np.array([-30.0, -28.0, -33.0])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    grid = ImageVolume(np.zeros(tuple(shape_ijk[::-1]), np.int16), affine)
    kk, jj, ii = np.indices(grid.shape)
    pts = grid.index_to_world(np.stack([ii, jj, kk], axis=-1))
    mask = np.linalg.norm(pts - [0.3, -0.4, 0.2], axis=-1) <= 11.0
    return mask, grid


def test_label_tumour_cells_are_represented(voxel_sphere) -> None:
    mask, grid = voxel_sphere
    tumour = TumourModel.from_mask(mask, grid)
    assert tumour.volume_ml == pytest.approx(mask.sum() * grid.voxel_volume_ml, rel=1e-9)
    cat = _custom(40.0, 40.0, centre_back=0.0)
    zone = _zone(cat, np.zeros(3))  # sphere R 20 at the origin
    m = evaluate(zone, tumour)
    # truth: the farthest point of the cell union from the zone centre is a cell corner
    kk, jj, ii = np.nonzero(mask)
    corners = np.array([[di, dj, dk] for di in (-.5, .5) for dj in (-.5, .5) for dk in (-.5, .5)])
    cells = np.column_stack([ii, jj, kk]).astype(float)
    far = max(np.linalg.norm(grid.index_to_world(cells + c), axis=1).max() for c in corners)
    assert m.min_margin_mm == pytest.approx(20.0 - far, abs=0.5)
    assert m.min_margin_mm <= 20.0 - far + 0.5
    assert m.coverage_pct == pytest.approx(100.0, abs=0.01)
    # a zone cutting through the cells: coverage by Monte Carlo over the cells
    small = _zone(_custom(20.0, 20.0, centre_back=0.0), np.array([4.0, 0.0, 0.0]))
    ms = evaluate(small, tumour)
    rng = np.random.default_rng(3)
    sel = rng.integers(0, len(cells), 400_000)
    p = grid.index_to_world(cells[sel] + rng.uniform(-0.5, 0.5, (len(sel), 3)))
    truth = 100 * np.mean(np.linalg.norm(p - [4.0, 0, 0], axis=1) <= 10.0)
    assert ms.coverage_pct == pytest.approx(truth, abs=1.0)


def test_oblique_label_grid(voxel_sphere) -> None:
    """Same tumour on a rotated grid: volume and margins agree (frame handled)."""
    mask, grid = voxel_sphere
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    aff = grid.index_to_lps.copy()
    aff[:3, :3] = rot @ aff[:3, :3]
    aff[:3, 3] = rot @ aff[:3, 3]
    g2 = ImageVolume(grid.array, aff)
    t1 = TumourModel.from_mask(mask, grid)
    t2 = TumourModel.from_mask(mask, g2)
    cat = _custom(40.0, 40.0, centre_back=0.0)
    m1 = evaluate(_zone(cat, np.zeros(3)), t1)
    m2 = evaluate(_zone(cat, np.zeros(3)), t2)
    assert t1.volume_ml == pytest.approx(t2.volume_ml)
    assert m1.min_margin_mm == pytest.approx(m2.min_margin_mm, abs=1e-6)


# -- cryo ---------------------------------------------------------------------------------------------
def test_cryo_single_probe_isotherms(catalog: DeviceCatalog) -> None:
    dev = catalog.get("cryo-17g")
    zone = zone_for(Probe(dev, dev.setting(None), np.zeros(3), U))
    pts = np.array([[10.0, 0, 0], [0, 0, 15.0], [0, -20.0, 0], [40.0, 0, 0]])
    np.testing.assert_allclose(zone.temperature(pts), [-40.0, -20.0, 0.0, 37.0], atol=1e-9)
    # first-order distance is exact for one probe
    np.testing.assert_allclose(zone.signed_distance([[4.0, 0, 0], [0, 13.0, 0]]), [6.0, -3.0],
                               atol=1e-9)
    assert zone.isotherm(0.0).signed_distance([[0, 0, 20.0]])[0] == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("spacing,merged", [(15.0, True), (20.0, True), (25.0, False),
                                            (30.0, False)])
def test_cryo_isotherm_merge(catalog: DeviceCatalog, spacing: float, merged: bool) -> None:
    """Two needles: −40 °C zones merge at ≤ 2 cm, not at 2.5 cm (as the gel study reports)."""
    dev = catalog.get("cryo-17g")
    probes = [Probe(dev, dev.setting(None), np.array([x, 0.0, 0.0]), U)
              for x in (-spacing / 2, spacing / 2)]
    zone = zone_for(probes)
    assert (zone.temperature([[0, 0, 0]])[0] <= -40.0) == merged
    mask = voxelise(zone, spacing_mm=0.5).array
    n = ndimage.label(mask)[1]
    assert n == (1 if merged else 2)
    # the merged zone is more than the union of the single spheres, never less
    single = [zone_for(p) for p in probes]
    rng = np.random.default_rng(0)
    q = rng.uniform(-30, 30, (50_000, 3))
    union = np.maximum(*[s.signed_distance(q) for s in single]) >= 0
    assert np.all(zone.signed_distance(q)[union] >= -1e-9)


# -- critical structures and heat sink ---------------------------------------------------------------
@pytest.fixture(scope="module")
def vessel_labels() -> LabelMap:
    sp = 0.8
    n = 96
    affine = np.diag([sp, sp, sp, 1.0])
    affine[:3, 3] = -(n - 1) / 2 * sp
    grid = ImageVolume(np.zeros((n, n, n), np.int16), affine)
    kk, jj, ii = np.indices(grid.shape)
    p = grid.index_to_world(np.stack([ii, jj, kk], axis=-1))
    tumour = np.linalg.norm(p, axis=-1) <= 6.0
    # vessels parallel to z: (x, y) centre and radius
    big_near = np.hypot(p[..., 0] - 22.0, p[..., 1]) <= 3.0        # 6 mm, wall 4 mm from zone
    small_near = np.hypot(p[..., 0] + 20.0, p[..., 1]) <= 0.8      # 1.6 mm: no heat sink
    big_far = np.hypot(p[..., 0], p[..., 1] - 33.0) <= 3.0          # 6 mm, wall 15 mm away
    box = (np.abs(p[..., 0]) <= 4) & (p[..., 1] >= 12) & (p[..., 1] <= 20) & (np.abs(p[..., 2]) <= 4)
    return LabelMap.from_masks([("tumour", tumour), ("hepatic_vein", big_near),
                                ("portal_vein", small_near), ("aorta", big_far),
                                ("colon", box)], grid)


def test_heat_sink_and_critical_volumes(vessel_labels: LabelMap) -> None:
    cat = _custom(30.0, 30.0, centre_back=0.0)  # sphere R 15 at the origin
    zone = _zone(cat, np.zeros(3))
    tumour = TumourModel.from_labels(vessel_labels, "tumour")
    crit = CriticalModel.from_labels(vessel_labels, exclude=["tumour"], centre_lps=[0, 0, 0],
                                     radius_mm=45.0)
    m = evaluate(zone, tumour, crit)
    sinks = {h["structure"]: h for h in m.heat_sink}
    assert set(sinks) == {"hepatic_vein"}
    assert sinks["hepatic_vein"]["diameter_mm"] == pytest.approx(6.0, abs=1.0)
    assert sinks["hepatic_vein"]["distance_to_zone_mm"] == pytest.approx(4.0, abs=1.0)
    assert any("heat sink" in w for w in m.warnings)
    # colon: the box cells inside the sphere, by Monte Carlo over the cells
    grid = vessel_labels.grid
    kk, jj, ii = np.nonzero(vessel_labels.mask("colon"))
    cells = np.column_stack([ii, jj, kk]).astype(float)
    rng = np.random.default_rng(5)
    sel = rng.integers(0, len(cells), 300_000)
    pts = grid.index_to_world(cells[sel] + rng.uniform(-0.5, 0.5, (len(sel), 3)))
    truth = len(cells) * grid.voxel_volume_ml * np.mean(np.linalg.norm(pts, axis=1) <= 15)
    assert m.structure_volumes_ml["colon"] == pytest.approx(truth, rel=0.03, abs=0.005)
    assert m.critical_damage_ml >= m.structure_volumes_ml["colon"]
    # cryo zones get no heat-sink warning
    cry = DeviceCatalog(include_plugins=False, user_dir="/nonexistent").get("cryo-17g")
    mc = evaluate(zone_for(Probe(cry, cry.setting(None), np.zeros(3), U)), tumour, crit)
    assert mc.heat_sink == []


# -- bad input --------------------------------------------------------------------------------------------
def test_bad_inputs(catalog: DeviceCatalog, voxel_sphere) -> None:
    mask, grid = voxel_sphere
    with pytest.raises(InputError, match="empty"):
        TumourModel.from_mask(np.zeros_like(mask), grid)
    with pytest.raises(GeometryError):
        TumourModel.from_mask(mask[:-1], grid)
    zone = _zone(catalog, np.zeros(3), "neuwave-pr")
    with pytest.raises(InputError, match="without a tumour"):
        evaluate(zone, None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="known devices: .*neuwave-pr"):
        catalog.get("emprint-xyz")
    with pytest.raises(InputError, match="known settings: 65W-10min, 65W-10min-CT"):
        catalog.get("neuwave-pr").setting("100W-5min")
    with pytest.raises(InputError, match="biopsy"):
        Probe(catalog.get("biopsy-18g"), None, np.zeros(3), U)  # type: ignore[arg-type]
    dev = catalog.get("neuwave-pr")
    with pytest.raises(InputError, match="zero-length"):
        Probe.on_trajectory(dev, None, [1, 2, 3], [1, 2, 3])
    with pytest.raises(InputError, match="calibration"):
        Probe.on_trajectory(dev, None, [0, 0, 0], [0, 10, 0], calibration=0.0)
    labels = LabelMap.from_masks([("liver", mask)], grid)
    with pytest.raises(InputError, match="not in the label map"):
        TumourModel.from_labels(labels, "tumour")
