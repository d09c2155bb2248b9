"""Benchmark: automatic needle-path search vs the PercutaneousApproachAnalysis method.

Data: the real TotalSegmentator CT and its masks (../shared/data/totalseg-ct, 3 mm)
resampled by nearest neighbour onto a 512×512×300 grid (≈0.71×0.59×1.12 mm, same
flipped LPS orientation as the scan), with a synthetic 10 mm liver lesion as target.

(a) ours: ``PlanningEngine`` precomputation (surface-cell index of every structure, body,
    skin, kernel load) then the default ``search``: the clearance of every candidate to
    every structure (within the accuracy contract; exact near each margin), exact
    feasibility against every forbidden structure with its margin, score, Pareto set,
    5 diverse suggestions evaluated exactly. Also (a'): the minimum-clearance-only search
    (``all_clearances=False``, distance-map bounds) for comparison.
(b) PercutaneousApproachAnalysis (3D Slicer): one obstacle surface (contour of the union
    of forbidden structures, mapped through the grid direction), a vtkModifiedBSPTree,
    and ``IntersectWithLine`` per candidate (hit = blocked) on the same candidates.

Prints time ratios and the agreement of (b)'s hit/miss with our exact "crosses a
forbidden structure" (exact cell traversal). Run: ``python bench/bench_planning.py``.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ir_planner.core.labels import LabelMap  # noqa: E402
from ir_planner.core.volume import ImageVolume  # noqa: E402
from ir_planner.io.image_files import read_image_file  # noqa: E402
from ir_planner.planning import PlanningEngine  # noqa: E402
from ir_planner.planning.geometry import traverse_cells  # noqa: E402


def build_case(size=(512, 512, 300)):
    root = REPO.parent / "shared" / "data" / "totalseg-ct"
    ct = read_image_file(root / "example_ct.nii.gz", modality="CT")
    masks = []
    for f in sorted((root / "masks").glob("*.nii.gz")):
        m = read_image_file(f).array > 0
        if m.any():
            masks.append((f.name[:-7], m))
    coarse = LabelMap.from_masks(masks, ct)
    ni, nj, nk = ct.shape_ijk
    si, sj, sk = size
    # Same physical extent (outer cell faces), finer cells.
    ext = np.array([ni, nj, nk]) * ct.spacing_mm
    sp = ext / np.array(size)
    d = ct.direction
    first_face = ct.index_to_world([-0.5, -0.5, -0.5])
    origin = first_face + d @ (sp / 2)
    affine = np.eye(4)
    affine[:3, :3] = d * sp
    affine[:3, 3] = origin
    # nearest neighbour: fine centre -> coarse index
    fi = np.clip(np.floor((np.arange(si) + 0.5) * ni / si), 0, ni - 1).astype(int)
    fj = np.clip(np.floor((np.arange(sj) + 0.5) * nj / sj), 0, nj - 1).astype(int)
    fk = np.clip(np.floor((np.arange(sk) + 0.5) * nk / sk), 0, nk - 1).astype(int)
    ix = np.ix_(fk, fj, fi)
    grid = ImageVolume(np.asarray(ct.array)[ix].astype(np.int16), affine, modality="CT")
    layers = [np.ascontiguousarray(layer[ix]) for layer in coarse.layers]
    labels = LabelMap(layers, grid, list(coarse.structures))
    # synthetic lesion: 10 mm sphere at the deepest liver point (found on the coarse grid)
    from scipy import ndimage as ndi

    liver_c = coarse.mask("liver")
    depth = ndi.distance_transform_edt(liver_c, sampling=ct.spacing_mm[::-1])
    kji = np.array(np.unravel_index(int(np.argmax(depth)), liver_c.shape))
    centre = ct.index_to_world(kji[::-1].astype(float))
    c_idx = grid.world_to_index(centre)
    r_vox = 10.0 / sp
    lo = np.maximum(np.floor(c_idx - r_vox).astype(int), 0)
    hi = np.minimum(np.ceil(c_idx + r_vox).astype(int) + 1, np.asarray(grid.shape_ijk))
    k, j, i = np.meshgrid(np.arange(lo[2], hi[2]), np.arange(lo[1], hi[1]),
                          np.arange(lo[0], hi[0]), indexing="ij")
    pts = grid.index_to_world(np.stack([i, j, k], -1).reshape(-1, 3).astype(float))
    inside = (np.linalg.norm(pts - centre, axis=1) <= 10.0).reshape(k.shape)
    lesion = np.zeros(grid.shape, dtype=bool)
    lesion[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = inside
    lesion &= labels.mask("liver")
    labels = labels.with_structure("lesion", lesion)
    return grid, labels, centre


def paa_baseline(engine: PlanningEngine, entries: np.ndarray, target: np.ndarray):
    """PercutaneousApproachAnalysis: union obstacle surface + vtkModifiedBSPTree."""
    import pyvista as pv
    import vtk

    grid = engine.grid
    t0, c0 = time.perf_counter(), time.process_time()
    union = engine.labels.union_mask(engine.forbidden).astype(np.uint8)
    img = pv.ImageData(dimensions=grid.shape_ijk, spacing=tuple(grid.spacing_mm),
                       origin=(0.0, 0.0, 0.0))
    img.point_data["m"] = union.ravel(order="C")  # k, j, i order = x fastest
    surf = img.contour([0.5], scalars="m", method="flying_edges")
    # direction correction: contour points are in index*spacing; map to LPS
    idx = np.asarray(surf.points) / grid.spacing_mm
    surf.points = grid.index_to_world(idx)
    tree = vtk.vtkModifiedBSPTree()
    tree.SetDataSet(surf)
    tree.BuildLocator()
    t_build, c_build = time.perf_counter() - t0, time.process_time() - c0
    t1, c1 = time.perf_counter(), time.process_time()
    pts = vtk.vtkPoints()
    ids = vtk.vtkIdList()
    hit = np.zeros(len(entries), dtype=bool)
    tgt = tuple(float(v) for v in target)
    for n, e in enumerate(entries):
        tree.IntersectWithLine(tuple(float(v) for v in e), tgt, 1e-6, pts, ids)
        hit[n] = pts.GetNumberOfPoints() > 0
    t_query, c_query = time.perf_counter() - t1, time.process_time() - c1
    return hit, (t_build, c_build), (t_query, c_query), surf.n_cells


def exact_crossing(engine: PlanningEngine, entries: np.ndarray, target: np.ndarray):
    """Whether each entry→target axis passes through a forbidden cell (exact traversal)."""
    union = engine.labels.union_mask(engine.forbidden)
    frame = engine.frame
    u1 = frame.lps_to_index(target)
    out = np.zeros(len(entries), dtype=bool)
    for n, e in enumerate(entries):
        cells, _, _ = traverse_cells(frame.lps_to_index(e), u1, frame.shape_ijk)
        c = cells[cells[:, 0] >= 0]
        out[n] = bool(union[c[:, 2], c[:, 1], c[:, 0]].any())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--out", type=Path, default=None, help="write markdown results here")
    args = parser.parse_args()
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                         text=True).stdout.split(":")[-1].strip()
    import os

    print(f"machine: {cpu}, {platform.python_version()}, load average at start "
          f"{os.getloadavg()[0]:.1f} (other jobs share the 2 cores)")
    t = time.perf_counter()
    grid, labels, target = build_case(tuple(args.size))
    print(f"case: {grid.shape_ijk} voxels, spacing {np.round(grid.spacing_mm, 3).tolist()} mm, "
          f"{len(labels.structures)} structures, built in {time.perf_counter() - t:.1f} s")

    t, c = time.perf_counter(), time.process_time()
    engine = PlanningEngine(grid, labels)
    t_engine, c_engine = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    engine.precompute_search()
    t_fields, c_fields = time.perf_counter() - t, time.process_time() - c
    print(f"precompute: engine {t_engine:.2f} s (surface-cell index, body, skin) + kernel "
          f"load {t_fields:.2f} s = {t_engine + t_fields:.2f} s wall, "
          f"{c_engine + c_fields:.2f} s CPU; {len(engine.forbidden)} forbidden")

    from ir_planner.planning import SearchConstraints

    def timed(constraints, k=3):
        out = []
        res = None
        for _ in range(k):
            t, c = time.perf_counter(), time.process_time()
            res = engine.search(target, constraints, top_k=5)
            out.append((time.perf_counter() - t, time.process_time() - c))
        return res, float(np.median([r[0] for r in out])), float(np.median([r[1] for r in out])), out

    res, t_search, c_search, runs = timed(SearchConstraints())
    n = res.n_candidates
    print(f"(a) search with the full clearance table {res.clearance_mm.shape} "
          f"({len(res.structure_names)} structures): {n} candidates, median of 3: "
          f"{t_search:.2f} s wall ({t_search / n * 1e4:.2f} s per 10,000), {c_search:.2f} s CPU "
          f"({c_search / n * 1e4:.2f} s per 10,000); runs {[round(r[0], 2) for r in runs]}; "
          f"{int(res.feasible.sum())} feasible; "
          f"timings {{{', '.join(f'{k}: {v:.2f}' for k, v in res.timings_s.items())}}}")
    print(f"    stats {res.stats}")
    print(f"    minimum clearance within the accuracy contract for "
          f"{int(res.min_clearance_exact.sum())} of {n} candidates")
    # The minimum-clearance-only search (distance-map bounds; no table) for comparison.
    t, c = time.perf_counter(), time.process_time()
    engine.precompute_search(fields=True)
    t_maps, c_maps = time.perf_counter() - t, time.process_time() - c
    res_m, tm_search, cm_search, mruns = timed(SearchConstraints(all_clearances=False))
    print(f"(a') minimum-clearance-only search (distance maps built once: {t_maps:.2f} s wall, "
          f"{c_maps:.2f} s CPU): median of 3 {tm_search:.2f} s wall "
          f"({tm_search / n * 1e4:.2f} s per 10,000), {cm_search:.2f} s CPU; "
          f"{int(res_m.feasible.sum())} feasible (same set: "
          f"{bool(np.array_equal(res_m.feasible, res.feasible))}); minimum clearance within "
          f"the contract for {int(res_m.min_clearance_exact.sum())} of {n}")
    for m in res.suggestions:
        cl = m.min_forbidden_clearance()
        print(f"    {m.verdict.value:8s} {m.length_mm:6.1f} mm {m.approach:22s} "
              f"closest {cl[0]} {cl[1]:.2f} mm")

    rng = np.random.default_rng(0)
    sel = rng.choice(n, min(200, n), replace=False)
    times = []
    for i in sel:
        t = time.perf_counter()
        engine.rescore(res.entries_lps[i], target)
        times.append(time.perf_counter() - t)
    times_ms = np.array(times) * 1e3
    print(f"rescore (drag fast path): median {np.median(times_ms):.2f} ms, "
          f"p95 {np.percentile(times_ms, 95):.2f} ms over {len(sel)} trajectories")
    times = []
    for i in sel[:50]:
        t = time.perf_counter()
        engine.evaluate(res.entries_lps[i], target, check_entry=False)
        times.append(time.perf_counter() - t)
    print(f"evaluate (all {len(engine.structures)} structures exact): median "
          f"{np.median(times) * 1e3:.1f} ms")

    hit, (t_build, c_build), (t_query, c_query), n_tri = paa_baseline(
        engine, res.entries_lps, np.asarray(target))
    print(f"(b) PAA: surface {n_tri} triangles, build {t_build:.2f} s wall "
          f"({c_build:.2f} s CPU), {n} IntersectWithLine in {t_query:.2f} s wall "
          f"({t_query / n * 1e4:.2f} s per 10,000), {c_query:.2f} s CPU")
    cross = exact_crossing(engine, res.entries_lps, np.asarray(target))
    agree = float(np.mean(hit == cross))
    print(f"agreement of PAA hit/miss with exact 'crosses a forbidden structure': "
          f"{100 * agree:.2f}% ({int(np.sum(hit & ~cross))} hit-but-no-crossing, "
          f"{int(np.sum(~hit & cross))} crossing-but-no-hit)")
    feas_but_cross = int(np.sum(res.feasible & cross))
    print(f"our feasible paths that cross a forbidden structure: {feas_but_cross}")
    ratio_q = t_query / t_search
    ratio_all = (t_build + t_query) / (t_search)
    cratio_q = c_query / c_search
    cratio_all = (c_build + c_query) / c_search
    print(f"time ratio PAA queries / our search: wall {ratio_q:.1f}x, CPU {cratio_q:.1f}x; "
          f"(PAA build + queries) / our search: wall {ratio_all:.1f}x, CPU {cratio_all:.1f}x")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.out:
        lines = [
            "# Planning benchmark (bench/bench_planning.py)", "",
            f"Machine: {cpu}, 2 cores, 24 GB; Python {platform.python_version()}; load average "
            f"{os.getloadavg()[0]:.1f} at the end (other jobs were running: absolute times "
            "are pessimistic, the ratios are measured in the same run).", "",
            f"Case: real TotalSegmentator CT + masks resampled (nearest neighbour) to "
            f"{grid.shape_ijk} voxels ({np.round(grid.spacing_mm, 3).tolist()} mm), "
            f"{len(labels.structures)} structures ({len(engine.forbidden)} forbidden), "
            "synthetic 10 mm liver lesion as target.", "",
            "| step | result |", "| --- | --- |",
            f"| precomputation (surface-cell index, body, skin, kernel load) | "
            f"{t_engine + t_fields:.2f} s ({t_engine:.2f} + {t_fields:.2f}) |",
            f"| (a) search, {n} candidates × {len(res.structure_names)} structures clearance "
            f"table, exact feasibility vs every forbidden structure + margin, score, Pareto, "
            f"5 suggestions exact | {t_search:.2f} s ({t_search / n * 1e4:.2f} s per 10,000); "
            f"CPU {c_search:.2f} s |",
            f"| (a') minimum-clearance-only search (+ {t_maps:.2f} s distance maps once) | "
            f"{tm_search:.2f} s ({tm_search / n * 1e4:.2f} s per 10,000) |",
            f"| rescore one trajectory (drag) | median {np.median(times_ms):.2f} ms, p95 "
            f"{np.percentile(times_ms, 95):.2f} ms |",
            f"| (b) PAA: BSP build / {n} IntersectWithLine | {t_build:.2f} s / {t_query:.2f} s |",
            f"| ratio (b) queries / (a) | wall {ratio_q:.1f}×, CPU {cratio_q:.1f}× |",
            f"| ratio (b) build+queries / (a) | wall {ratio_all:.1f}×, CPU {cratio_all:.1f}× |",
            f"| agreement PAA hit/miss vs exact crossing | {100 * agree:.2f}% |",
            f"| our feasible paths crossing a forbidden structure | {feas_but_cross} |",
        ]
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
