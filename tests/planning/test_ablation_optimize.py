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
