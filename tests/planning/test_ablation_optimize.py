"""Depth/setting optimisation and multi-probe placement."""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume
from ir_planner.planning.ablation import (
    Candidate,
    CriticalModel,
    DeviceCatalog,
    TumourModel,
    optimize_multi,
    optimize_single,
)


@pytest.fixture(scope="module")
def catalog() -> DeviceCatalog:
    return DeviceCatalog(include_plugins=False, user_dir="/nonexistent")


def test_single_probe_best_depth(catalog: DeviceCatalog) -> None:
    dev = catalog.get("neuwave-pr")
    tumour = TumourModel.sphere([0, 0, 0], 10.0)
    res = optimize_single(dev, [0, -100, 0], [0, 0, 0], tumour, settings=["65W-10min"],
                          margin_goal_mm=0.0)
    # the best margin is with the zone centred on the tumour: tip 17.5 mm beyond the target
    res_best = optimize_single(dev, [0, -100, 0], [0, 0, 0], tumour, settings=["65W-10min"],
                               margin_goal_mm=7.4)
    assert res_best.goal_met
    assert res_best.probes[0].depth_offset_mm == pytest.approx(17.5, abs=0.3)
    assert res_best.metrics.min_margin_mm == pytest.approx(7.5, abs=0.05)
    assert res.goal_met and res.metrics.min_margin_mm >= 0
    assert any("reaches" in r for r in res.reasons)


def test_single_probe_prefers_less_damage(catalog: DeviceCatalog) -> None:
    """A colon loop beyond the tumour: the chosen depth keeps >= 5 mm margin and spares it."""
    sp = 1.0
    n = 90
    affine = np.diag([sp, sp, sp, 1.0])
    affine[:3, 3] = -(n - 1) / 2 * sp
    grid = ImageVolume(np.zeros((n, n, n), np.int16), affine)
    kk, jj, ii = np.indices(grid.shape)
    p = grid.index_to_world(np.stack([ii, jj, kk], axis=-1))
    tumour_mask = np.linalg.norm(p, axis=-1) <= 8.0
    colon = (p[..., 1] >= 16) & (p[..., 1] <= 30) & (np.abs(p[..., 0]) <= 12) & (
        np.abs(p[..., 2]) <= 12)
    labels = LabelMap.from_masks([("tumour", tumour_mask), ("colon", colon)], grid)
    tumour = TumourModel.from_labels(labels, "tumour")
    crit = CriticalModel.from_labels(labels, exclude=["tumour"], centre_lps=[0, 0, 0],
                                     radius_mm=60)
    dev = catalog.get("neuwave-pr")
    res = optimize_single(dev, [0, -100, 0], [0, 0, 0], tumour, crit)
    assert res.goal_met
    assert res.metrics.min_margin_mm >= 5.0
    centred = optimize_single(dev, [0, -100, 0], [0, 0, 0], tumour, None)
    from ir_planner.planning.ablation import Probe, evaluate, zone_for

    pl = centred.probes[0]
    naive = evaluate(zone_for(Probe.on_trajectory(dev, pl.setting, [0, -100, 0], [0, 0, 0],
                                                  depth_offset_mm=17.5)), tumour, crit)
    assert res.metrics.critical_damage_ml < naive.critical_damage_ml
    assert res.metrics.critical_damage_ml < 0.05
    # the tip was pulled back from the centred position to spare the colon
    assert res.probes[0].depth_offset_mm < 17.5 - 3
    assert res.evaluations > 20


def test_single_probe_unreachable_reports_best(catalog: DeviceCatalog) -> None:
    dev = catalog.get("neuwave-pr")
    tumour = TumourModel.sphere([0, 0, 0], 15.0)
    res = optimize_single(dev, [0, -100, 0], [0, 0, 0], tumour)
    assert not res.goal_met
    assert res.metrics.min_margin_mm == pytest.approx(2.5, abs=0.1)
    assert "best achievable" in res.reasons[0]


def test_multi_probe_heat(catalog: DeviceCatalog) -> None:
    """An elongated tumour across three parallel paths needs two or three probes."""
    dev = catalog.get("neuwave-pr")
    tumour = TumourModel.spheroid([0, 0, 0], [1, 0, 0], 22.0, 7.0)
    single = optimize_single(dev, [0, -100, 0], [0, 0, 0], tumour)
    assert not single.goal_met
    cands = [Candidate((x, -100.0, 0.0), (x, 0.0, 0.0), f"P{x:+.0f}")
             for x in (-14.0, 0.0, 14.0)]
    multi = optimize_multi(dev, cands, tumour, setting="65W-10min", max_probes=3)
    assert multi.metrics.min_margin_mm > single.metrics.min_margin_mm + 3
    assert multi.goal_met and 2 <= len(multi.probes) <= 3
    assert multi.metrics.coverage_pct == pytest.approx(100, abs=0.01)


def test_multi_probe_cryo_and_safety_veto(catalog: DeviceCatalog) -> None:
    dev = catalog.get("cryo-17g")
    tumour = TumourModel.sphere([0, 0, 0], 6.0)
    cands = [Candidate((x, -100.0, z), (x, 0.0, z), f"C{n}")
             for n, (x, z) in enumerate([(-7.5, 0), (7.5, 0), (0, 7.5), (0, -7.5), (0, 0)])]

    def veto_centre(entry, tip):
        return (abs(entry[0]) > 1 or abs(entry[2]) > 1), "through a vessel"

    res = optimize_multi(dev, cands, tumour, max_probes=4, safety=veto_centre)
    assert all(p.trajectory != "C4" for p in res.probes)
    assert res.metrics.min_margin_mm > 0
    assert len(res.probes) >= 2
    assert any("vetoed" in r for r in res.reasons)


# -- multi-probe search against the greedy baseline -------------------------------------------

def _fan(r: float) -> list[Candidate]:
    """Parallel paths along +y to the centre and to 8 points on a ring of radius r."""
    out = [Candidate((0.0, -100.0, 0.0), (0.0, 0.0, 0.0), "P0")]
    for k in range(8):
        a = 2 * np.pi * k / 8
        x, z = r * np.cos(a), r * np.sin(a)
        out.append(Candidate((x, -100.0, z), (x, 0.0, z), f"P{k + 1}"))
    return out


@pytest.fixture(scope="module")
def voxel_ellipsoid() -> TumourModel:
    """The 4 ml voxelised ellipsoid (40 x 14 x 14 mm) of the CLI tests, 1 mm voxels."""
    n = 72
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -(n - 1) / 2
    grid = ImageVolume(np.zeros((n, n, n), np.int16), affine)
    kk, jj, ii = np.indices(grid.shape)
    p = grid.index_to_world(np.stack([ii, jj, kk], axis=-1))
    mask = np.linalg.norm(p / [20, 7, 7], axis=-1) <= 1.0
    return TumourModel.from_labels(LabelMap.from_masks([("t", mask)], grid), "t")


def test_multi_search_reaches_known_arrangement(catalog: DeviceCatalog,
                                                voxel_ellipsoid: TumourModel) -> None:
    """A known 3-probe arrangement reaches >= 5 mm; the search must too (greedy: 4.99 mm)."""
    from ir_planner.planning.ablation import Probe, evaluate, zone_for

    dev = catalog.get("neuwave-pr")
    cands = [Candidate((x, -34.0, 0.0), (x, 0.0, 0.0), f"T{x:+.0f}") for x in (-14.0, 0.0, 14.0)]
    # the known arrangement: one zone centred on each path at the tumour's mid-plane
    known = evaluate(zone_for([Probe.on_trajectory(dev, "65W-10min", c.entry_lps, c.target_lps,
                                                   depth_offset_mm=17.5) for c in cands]),
                     voxel_ellipsoid)
    assert known.min_margin_mm >= 5.0
    greedy = optimize_multi(dev, cands, voxel_ellipsoid, setting="65W-10min", max_probes=3,
                            method="greedy")
    best = optimize_multi(dev, cands, voxel_ellipsoid, setting="65W-10min", max_probes=3)
    assert best.goal_met and best.metrics.min_margin_mm >= 5.0
    assert best.metrics.min_margin_mm >= greedy.metrics.min_margin_mm
    # recorded for comparison (bench/results/ablation.md): greedy 4.99 mm, search 7.76 mm
    assert greedy.metrics.min_margin_mm == pytest.approx(4.99, abs=0.05)
    assert len(best.probes) == 3
    tips = np.array([p.tip_lps for p in best.probes])
    assert min(np.linalg.norm(a - b) for i, a in enumerate(tips) for b in tips[i + 1:]) >= 10
    text = " ".join(best.reasons)
    assert "first probe" in text and "probe 2 added because" in text
    assert "probe 3 added because" in text and "minimal margin" in text


def test_multi_search_monotonic_in_max_probes(catalog: DeviceCatalog) -> None:
    """More probes allowed never gives a worse margin; unreachable goal names the LPS point."""
    dev = catalog.get("neuwave-pr")
    tumour = TumourModel.sphere([0, 0, 0], 16.0, spacing_mm=1.0)
    cands = _fan(9.0)
    res = [optimize_multi(dev, cands, tumour, setting="65W-10min", max_probes=m,
                          depth_step_mm=5.0) for m in (1, 2, 3, 4)]
    ms = [r.metrics.min_margin_mm for r in res]
    assert all(b >= a - 1e-6 for a, b in zip(ms, ms[1:])), ms
    assert all(len(r.probes) <= m for r, m in zip(res, (1, 2, 3, 4)))
    assert ms[-1] > ms[0] + 0.5  # several probes help
    last = res[-1]
    if not last.goal_met:
        pt = " ".join(f"{v:.1f}" for v in last.metrics.min_margin_point_lps)
        assert f"limiting part of the tumour surface is at LPS {pt}" in last.reasons[0]
        assert "reach at best" in last.reasons[0]
    # one probe: the search's first probe equals the best single position on these paths
    assert ms[0] == pytest.approx(max(
        optimize_single(dev, c.entry_lps, c.target_lps, tumour, settings=["65W-10min"],
                        depth_range_mm=(-20, 20)).metrics.min_margin_mm for c in cands[:1]),
        abs=0.3)


def test_multi_search_respects_safety_and_spacing(catalog: DeviceCatalog,
                                                  voxel_ellipsoid: TumourModel) -> None:
    """Vetoed paths and tip depths (also between the search grid's depths) are never used."""
    dev = catalog.get("neuwave-pr")
    cands = [Candidate((x, -34.0, 0.0), (x, 0.0, 0.0), f"T{x:+.0f}") for x in (-14.0, 0.0, 14.0)]
    calls: list[tuple[float, float]] = []

    def veto(entry, tip):
        calls.append((float(entry[0]), float(tip[1])))
        if entry[0] > 10:
            return False, "crosses a vessel"
        if tip[1] > 16.3:
            return False, "tip in the colon"
        return True, ""

    res = optimize_multi(dev, cands, voxel_ellipsoid, setting="65W-10min", max_probes=3,
                         safety=veto, min_tip_spacing_mm=12.0)
    assert res.probes
    for p in res.probes:
        assert p.trajectory != "T+14"
        assert p.tip_lps[1] <= 16.3
        ok, _ = veto(np.asarray(p.entry_lps), np.asarray(p.tip_lps))
        assert ok
    tips = np.array([p.tip_lps for p in res.probes])
    for i in range(len(tips)):
        for j in range(i + 1, len(tips)):
            assert np.linalg.norm(tips[i] - tips[j]) >= 12.0 - 1e-9
    assert any("vetoed" in r and "crosses a vessel" in r for r in res.reasons)
    # without the right-hand path the goal cannot be met: the best achievable is reported
    assert not res.goal_met
    assert "reach at best" in res.reasons[0]
    with pytest.raises(Exception, match="method"):
        optimize_multi(dev, cands, voxel_ellipsoid, method="annealing")
