"""Ablation metrics on the real TotalSegmentator CT (flipped LPS directions, 3 mm voxels).

There is no tumour label in that data: the test inserts a synthetic 2 cm lesion into the liver.
Volumes of real structures inside the zone and the margin are checked against brute force.
"""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.io.segmentation import read_mask_folder
from ir_planner.planning.ablation import (
    CriticalModel,
    DeviceCatalog,
    Probe,
    TumourModel,
    evaluate,
    optimize_single,
    zone_for,
)


@pytest.fixture(scope="module")
def real(shared_data):
    labels = read_mask_folder(shared_data / "totalseg-ct" / "masks")
    grid = labels.grid
    liver = labels.mask("liver")
    kk, jj, ii = np.indices(grid.shape)
    pts = grid.index_to_world(np.stack([ii, jj, kk], axis=-1))
    kl, jl, il = np.nonzero(liver)
    centre = grid.index_to_world([[il.mean(), jl.mean(), kl.mean()]])[0] + [-25.0, 0.0, 0.0]
    lesion = (np.linalg.norm(pts - centre, axis=-1) <= 10.0) & liver
    labels = labels.with_structure("lesion", lesion)
    return labels, centre


def test_real_ct_volumes_and_margin(real) -> None:
    labels, centre = real
    assert np.allclose(np.abs(labels.grid.direction), np.eye(3))
    assert labels.grid.direction[0, 0] < 0  # RAS file read as LPS: flipped axes
    tumour = TumourModel.from_labels(labels, "lesion")
    assert tumour.volume_ml == pytest.approx(labels.mask("lesion").sum() * 0.027, rel=1e-9)
    crit = CriticalModel.from_labels(labels, exclude=["lesion"], centre_lps=centre,
                                     radius_mm=tumour.radius_mm + 50)
    dev = DeviceCatalog(include_plugins=False, user_dir="/nonexistent").get("neuwave-pr")
    entry = centre + [-150.0, 0.0, 0.0]  # from the patient's right
    res = optimize_single(dev, entry, centre, tumour, crit)
    assert res.metrics.coverage_pct > 99.0
    pl = res.probes[0]
    zone = zone_for(Probe.on_trajectory(dev, pl.setting, entry, centre,
                                        depth_offset_mm=pl.depth_offset_mm))
    m = evaluate(zone, tumour, crit)
    grid = labels.grid
    rng = np.random.default_rng(11)
    # brute force: random points in each structure's cells near the zone
    lo, hi = zone.bounds_lps()
    for name, vol in m.structure_volumes_ml.items():
        if vol < 0.2:
            continue
        mask = labels.mask(name)
        kk, jj, ii = np.nonzero(mask)
        cells = np.column_stack([ii, jj, kk]).astype(float)
        wc = grid.index_to_world(cells)
        near = np.all((wc >= lo - 3) & (wc <= hi + 3), axis=1)
        cells = cells[near]
        sel = rng.integers(0, len(cells), 200_000)
        p = grid.index_to_world(cells[sel] + rng.uniform(-0.5, 0.5, (len(sel), 3)))
        truth = len(cells) * grid.voxel_volume_ml * np.mean(zone.signed_distance(p) >= 0)
        assert vol == pytest.approx(truth, rel=0.03, abs=0.03), name
    # margin: dense brute force over the lesion's boundary faces (12 x 12 points per face)
    mask = labels.mask("lesion")
    pad = np.pad(mask, 1)
    pts = []
    sub = (np.arange(12) + 0.5) / 12 - 0.5
    for axis in range(3):  # array axes k, j, i
        for sign in (-1, 1):
            faces = pad & ~np.roll(pad, -sign, axis=axis)
            idx = np.argwhere(faces[1:-1, 1:-1, 1:-1]).astype(float)  # k, j, i
            idx[:, axis] += 0.5 * sign
            others = [a for a in range(3) if a != axis]
            g = np.stack(np.meshgrid(sub, sub, indexing="ij"), -1).reshape(-1, 2)
            rep = np.repeat(idx, len(g), axis=0)
            rep[:, others[0]] += np.tile(g[:, 0], len(idx))
            rep[:, others[1]] += np.tile(g[:, 1], len(idx))
            pts.append(grid.index_to_world(rep[:, ::-1]))
    truth_margin = float(zone.signed_distance(np.concatenate(pts)).min())
    assert m.min_margin_mm == pytest.approx(truth_margin, abs=0.3)


def test_real_ct_vessel_diameters(real) -> None:
    labels, centre = real
    crit = CriticalModel.from_labels(labels, centre_lps=centre, radius_mm=120, spacing_mm=3.0)
    diam = {}
    for i, name in enumerate(crit.names):
        sel = crit.vessel_index == i
        if sel.any():
            diam[name] = 2 * float(crit.vessel_radius_mm[sel].max())
    # an adult abdominal aorta and IVC are about 1.5-3.5 cm wide
    assert 12.0 <= diam["aorta"] <= 40.0
    assert 12.0 <= diam["inferior_vena_cava"] <= 45.0
