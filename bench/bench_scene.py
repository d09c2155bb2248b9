"""Scene benchmarks: meshing all structures and frame time, each against a baseline
in the same run.

1. Meshing the 512×512×300 / 63-structure case (the real TotalSegmentator CT's
   labels up-sampled by nearest neighbour to 512×512×300, 63 structures): the
   scene's :func:`mesh_labels` (crop, surface nets with smoothing, triangle budget,
   LPS placement) vs **one vtkDiscreteFlyingEdges3D per label** on the whole volume
   (no smoothing, no reduction, no placement).
2. Frame time of the planning scene (structures + needle + markers, off-screen)
   vs a bare VTK render of the same meshes (one actor each, default properties).

Usage::

    python bench/bench_scene.py            # full 512×512×300 case
    python bench/bench_scene.py --quick    # the real CT at its own 3 mm grid
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pyvista as pv
from scipy import ndimage as ndi
from vtkmodules.vtkFiltersGeneral import vtkDiscreteFlyingEdges3D

from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.io.load import load_image
from ir_planner.io.segmentation import load_labels
from ir_planner.scene.scene import PlanningScene
from ir_planner.scene.surfaces import MeshOptions, clear_mesh_cache, mesh_labels

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg-ct"


def big_case(quick: bool) -> LabelMap:
    image = load_image(DATA / "example_ct.nii.gz")
    labels = load_labels(DATA / "masks", image=image)
    if quick:
        return labels
    # one layer with every structure (first wins where masks overlap)
    lab = np.zeros(labels.grid.shape, np.uint8)
    names = {}
    for n, s in enumerate(labels.structures, start=1):
        m = labels.mask(s) & (lab == 0)
        lab[m] = n
        names[n] = s.name
    target = (300, 512, 512)
    factors = [t / s for t, s in zip(target, lab.shape)]
    big = ndi.zoom(lab, factors, order=0)
    spacing = labels.grid.spacing_mm / np.array(factors[::-1])
    grid = ImageVolume(big, affine_from_geometry(labels.grid.origin_lps, spacing,
                                                 labels.grid.direction))
    return LabelMap.from_array(big, grid, names)


def flying_edges_baseline(labels: LabelMap) -> tuple[float, int]:
    t0 = time.perf_counter()
    tris = 0
    ni, nj, nk = labels.grid.shape_ijk
    for layer_n, layer in enumerate(labels.layers):
        img = pv.ImageData(dimensions=(ni, nj, nk), spacing=tuple(labels.grid.spacing_mm))
        img.point_data["labels"] = np.ascontiguousarray(layer).ravel()
        for s in labels.structures:
            if s.layer != layer_n:
                continue
            fe = vtkDiscreteFlyingEdges3D()
            fe.SetInputData(img)
            fe.SetInputArrayToProcess(0, 0, 0, 0, "labels")
            fe.SetValue(0, s.label)
            fe.Update()
            tris += fe.GetOutput().GetNumberOfCells()
    return time.perf_counter() - t0, tris


def frame_times(labels: LabelMap, budget: int, n: int = 15) -> tuple[list[float], list[float]]:
    clear_mesh_cache()
    meshes = mesh_labels(labels, options=MeshOptions(triangle_budget=budget))
    # planning scene
    p = pv.Plotter(off_screen=True, window_size=(1000, 800))
    scene = PlanningScene(p, mesh_options=MeshOptions(triangle_budget=budget))
    scene.set_case(None, labels)
    centre = labels.grid.extent_lps().mean(axis=0)
    scene.set_needle("T1", centre + [-80, -80, 20], centre, diameter_mm=1.47,
                     slack_mm=[5, 3, 1, 0.5], positions_mm=[0, 40, 80, 115])
    scene.set_marker("target", centre)
    scene.view("3d")
    p.render()
    ours = []
    for _ in range(n):
        p.camera.Azimuth(2.0)
        t0 = time.perf_counter()
        p.ren_win.Render()
        ours.append(time.perf_counter() - t0)
    p.close()
    # bare VTK: same meshes, one actor each, default properties, same window
    q = pv.Plotter(off_screen=True, window_size=(1000, 800))
    for sm in meshes.values():
        q.add_mesh(sm.mesh)
    q.camera_position = "iso"
    q.render()
    bare = []
    for _ in range(n):
        q.camera.Azimuth(2.0)
        t0 = time.perf_counter()
        q.ren_win.Render()
        bare.append(time.perf_counter() - t0)
    q.close()
    return ours, bare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--budget", type=int, default=200_000)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    labels = big_case(args.quick)
    print(f"case: {labels.grid.shape_ijk} voxels, {len(labels.structures)} structures "
          f"(prepared in {time.perf_counter() - t0:.1f} s)")
    clear_mesh_cache()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    meshes = mesh_labels(labels, options=MeshOptions(triangle_budget=args.budget))
    ours = time.perf_counter() - t0
    ours_cpu = time.process_time() - cpu0
    tris = sum(m.n_triangles for m in meshes.values())
    cpu0 = time.process_time()
    base, base_tris = flying_edges_baseline(labels)
    base_cpu = time.process_time() - cpu0
    print(f"meshing (ours): {ours:.2f} s wall, {ours_cpu:.2f} s CPU, {len(meshes)} meshes, "
          f"{tris} triangles (budget {args.budget})")
    print(f"baseline (vtkDiscreteFlyingEdges3D per label): {base:.2f} s wall, "
          f"{base_cpu:.2f} s CPU, {base_tris} triangles")
    print(f"ratio ours/baseline: {ours / base:.2f} wall, {ours_cpu / base_cpu:.2f} CPU")
    ft, bare = frame_times(labels, min(args.budget, 150_000))
    print(f"frame time: scene median {1000 * statistics.median(ft):.1f} ms, "
          f"bare VTK median {1000 * statistics.median(bare):.1f} ms, ratio "
          f"{statistics.median(ft) / statistics.median(bare):.2f}")


if __name__ == "__main__":
    main()
