"""Multi-probe placement: swap local search ("search") against the greedy method, same run.

Cases: synthetic spheres/ellipsoids 2-5 cm with a colon loop beyond the tumour (critical
damage) and a vessel whose paths are vetoed, the 4 ml ellipsoid of the CLI tests, and a
synthetic lesion inserted into the real TotalSegmentator CT liver (paths checked with the
planning engine). Prints margin reached, probes used, critical damage and wall time.

Run: python bench/bench_ablation_multi.py
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume
from ir_planner.planning.ablation import (
    Candidate,
    CriticalModel,
    DeviceCatalog,
    TumourModel,
    optimize_multi,
)


def fan(centre: np.ndarray, r: float, axis=(0.0, 1.0, 0.0), n_ring: int = 8,
        depth: float = 100.0) -> list[Candidate]:
    """Parallel paths along ``axis`` to the centre and to points on rings r/2 and r around it."""
    u = np.asarray(axis, float) / np.linalg.norm(axis)
    h = np.array([1.0, 0, 0]) if abs(u[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = np.cross(u, h)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    targets = [centre]
    for rr in (0.5 * r, 0.9 * r):
        for k in range(n_ring):
            a = 2 * np.pi * (k + 0.5 * (rr > 0.6 * r)) / n_ring
            targets.append(centre + rr * (np.cos(a) * e1 + np.sin(a) * e2))
    return [Candidate(tuple(t - depth * u), tuple(t), f"P{n}") for n, t in enumerate(targets)]


def synthetic(name: str, half_axes: tuple[float, float, float]):
    """Tumour at the origin (half axes x, y, z mm), colon beyond it (+y), vessel along z."""
    sp = 1.0
    n = 130
    affine = np.diag([sp, sp, sp, 1.0])
    affine[:3, 3] = -(n - 1) / 2 * sp
    grid = ImageVolume(np.zeros((n, n, n), np.int16), affine)
    kk, jj, ii = np.indices(grid.shape)
    p = grid.index_to_world(np.stack([ii, jj, kk], axis=-1))
    a = np.asarray(half_axes)
    tumour_mask = np.linalg.norm(p / a, axis=-1) <= 1.0
    y0 = a[1] + 8.0
    colon = (p[..., 1] >= y0) & (p[..., 1] <= y0 + 14) & (np.abs(p[..., 0]) <= 15) & (
        np.abs(p[..., 2]) <= 15)
    vx = a[0] + 9.0
    vessel = np.hypot(p[..., 0] - vx, p[..., 1]) <= 2.5
    labels = LabelMap.from_masks([("tumour", tumour_mask), ("colon", colon),
                                  ("portal_vein", vessel)], grid)
    tumour = TumourModel.from_labels(labels, "tumour")
    crit = CriticalModel.from_labels(labels, exclude=["tumour"], centre_lps=[0, 0, 0],
                                     radius_mm=float(a.max()) + 40)

    def safety(entry, tip):
        # the needle segment must stay 3 mm clear of the vessel axis (x = vx, y = 0)
        e, t = np.asarray(entry, float), np.asarray(tip, float)
        s = np.linspace(0, 1, 200)[:, None]
        q = e + s * (t - e)
        d = np.hypot(q[:, 0] - vx, q[:, 1]).min()
        return (d >= 2.5 + 3.0), f"passes {d:.1f} mm from the vessel axis"

    cands = fan(np.zeros(3), float(max(a[0], a[2])))
    return name, tumour, crit, cands, safety


def cli_case():
    sp = 1.0
    n = 72
    affine = np.diag([sp, sp, sp, 1.0])
    affine[:3, 3] = -(n - 1) / 2 * sp
    grid = ImageVolume(np.zeros((n, n, n), np.int16), affine)
    kk, jj, ii = np.indices(grid.shape)
    p = grid.index_to_world(np.stack([ii, jj, kk], axis=-1))
    mask = np.linalg.norm(p / [20, 7, 7], axis=-1) <= 1.0
    labels = LabelMap.from_masks([("big_tumour", mask)], grid)
    tumour = TumourModel.from_labels(labels, "big_tumour")
    cands = [Candidate((x, -34.0, 0.0), (x, 0.0, 0.0), f"T{x:+.0f}") for x in (-14.0, 0.0, 14.0)]
    return "4 ml ellipsoid 40x14x14 (CLI test), 3 paths", tumour, None, cands, None


def real_ct_case():
    from ir_planner.io.image_files import read_image_file
    from ir_planner.io.segmentation import read_mask_folder
    from ir_planner.planning.ablation import engine_safety
    from ir_planner.planning.engine import PlanningEngine

    root = Path(os.environ.get("IR_PLANNER_SHARED_DATA", "/work/shared/data")) / "totalseg-ct"
    labels = read_mask_folder(root / "masks")
    image = read_image_file(root / "example_ct.nii.gz")
    grid = labels.grid
    liver = labels.mask("liver")
    kk, jj, ii = np.indices(grid.shape)
    pts = grid.index_to_world(np.stack([ii, jj, kk], axis=-1))
    kl, jl, il = np.nonzero(liver)
    centre = grid.index_to_world([[il.mean(), jl.mean(), kl.mean()]])[0] + [-25.0, 0.0, 0.0]
    lesion = (np.linalg.norm(pts - centre, axis=-1) <= 16.0) & liver
    labels = labels.with_structure("lesion", lesion)
    tumour = TumourModel.from_labels(labels, "lesion")
    crit = CriticalModel.from_labels(labels, exclude=["lesion", "liver"], centre_lps=centre,
                                     radius_mm=tumour.radius_mm + 50)
    engine = PlanningEngine(image, labels)
    # candidate paths as in `ir-planner ablate --optimize`: the engine's automatic search to
    # the lesion centre and to 6 points 8 mm around it (top 2 safe paths each)
    cands = []
    for n, off in enumerate([(0, 0, 0), (8, 0, 0), (-8, 0, 0), (0, 8, 0), (0, -8, 0),
                              (0, 0, 8), (0, 0, -8)]):
        t = centre + np.asarray(off, float)
        try:
            res = engine.search(t, top_k=2)
        except Exception:  # noqa: BLE001 - a target inside a forbidden structure
            continue
        for m, sug in enumerate(res.suggestions):
            rec = engine.to_record(sug, f"S{n + 1}.{m + 1}", source="auto")
            cands.append(Candidate(tuple(rec.entry_lps), tuple(rec.target_lps), rec.name))
    return (f"real CT liver lesion 3.2 cm (TotalSegmentator CT, 3 mm), {len(cands)} engine "
            "paths, engine-vetted", tumour, crit, cands, engine_safety(engine))


def run(case, dev, setting, max_probes):
    name, tumour, crit, cands, safety = case
    row = [name, f"{tumour.volume_ml:.1f}", str(max_probes)]
    out = {}
    for method in ("greedy", "search"):
        t0 = time.perf_counter()
        res = optimize_multi(dev, cands, tumour, crit, setting=setting, max_probes=max_probes,
                             safety=safety, method=method)
        dt = time.perf_counter() - t0
        out[method] = res
        row += [f"{res.metrics.min_margin_mm:.2f}", str(len(res.probes)),
                f"{res.metrics.critical_damage_ml:.2f}", f"{dt:.2f}"]
    return row, out


def main() -> int:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines()
                  if ln.startswith("Model name")), "?")
    print(f"machine: {model}; {os.cpu_count()} cores; python {platform.python_version()}; "
          f"load {os.getloadavg()[0]:.2f}")
    cat = DeviceCatalog(include_plugins=False, user_dir="/nonexistent")
    dev = cat.get("neuwave-pr")
    cases = [
        (cli_case(), 3), (cli_case(), 4),
        (synthetic("sphere 2 cm + colon + vessel", (10, 10, 10)), 4),
        (synthetic("sphere 3 cm + colon + vessel", (15, 15, 15)), 4),
        (synthetic("ellipsoid 4x2.5x2.5 cm + colon + vessel", (20, 12.5, 12.5)), 4),
        (synthetic("sphere 4 cm + colon + vessel", (20, 20, 20)), 4),
        (synthetic("ellipsoid 5x3x3 cm + colon + vessel", (25, 15, 15)), 4),
        (synthetic("sphere 5 cm + colon + vessel", (25, 25, 25)), 4),
    ]
    if "--no-real" not in sys.argv:
        cases.append((real_ct_case(), 4))
    head = ["case", "ml", "max", "greedy mm", "n", "dmg ml", "s", "search mm", "n", "dmg ml",
            "s"]
    print(" | ".join(head))
    for case, mp in cases:
        row, out = run(case, dev, "65W-10min", mp)
        print(" | ".join(row), flush=True)
        if "-v" in sys.argv:
            for r in out["search"].reasons:
                print("    " + r)
    print(f"load after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
