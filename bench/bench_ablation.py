"""Benchmark: ablation coverage + minimal margin, ours vs the surface-distance method.

Case: a 3 cm spherical tumour (r = 15 mm) and the NeuWave PR 65 W 10 min chart zone
(47 × 35 mm) on a needle along +y, at several tip depths (the tumour pokes out at some).
Truth is analytic (coaxial bodies of revolution): margin from a dense meridian against the
zone ellipse, coverage by slice integration.

* ours: :class:`TumourModel` (sampled once) + :func:`evaluate` per zone position.
* baseline: what the 3D Slicer ablation-planning extension does with model-to-model
  distance — ``vtkDistancePolyDataFilter`` (signed distance of the tumour surface's
  vertices to the zone surface) for the margin, and ``vtkSelectEnclosedPoints`` of a
  1 mm tumour lattice against the zone surface for coverage.

Also times the single-probe optimisation (2 settings × depth sweep).

Run: ``python bench/bench_ablation.py`` (prints ratios; numbers go to
bench/results/ablation.md).
"""

from __future__ import annotations

import math
import platform
import statistics
import subprocess
import time

import numpy as np
import pyvista as pv
import vtk

from ir_planner.planning.ablation import (
    Probe,
    TumourModel,
    evaluate,
    load_catalog,
    optimize_single,
    zone_for,
)
from ir_planner.planning.ablation.zones import ellipse_signed_distance

R_TUMOUR = 15.0
A, B = 23.5, 17.5  # zone half-length and radius (mm)
OFFSETS = [17.5, 12.0, 8.0, 24.0]  # tip offsets beyond the target (tumour centre)


def truth(offset: float) -> tuple[float, float]:
    """(min margin mm, coverage %) for the zone whose centre is at y = offset − 17.5."""
    c = offset - 17.5
    th = np.linspace(0, np.pi, 200_001)
    zs, rs = R_TUMOUR * np.cos(th) - c, R_TUMOUR * np.sin(th)
    margin = float(np.min(ellipse_signed_distance(zs, rs, A, B)))
    z = np.linspace(-R_TUMOUR, R_TUMOUR, 400_001)
    r_t = np.sqrt(np.maximum(R_TUMOUR ** 2 - z ** 2, 0))
    r_z = B * np.sqrt(np.maximum(1 - ((z - c) / A) ** 2, 0))
    inter = np.trapezoid(np.pi * np.minimum(r_t, r_z) ** 2, z)
    return margin, 100 * inter / (4 / 3 * math.pi * R_TUMOUR ** 3)


def ours(tumour: TumourModel, offset: float) -> tuple[float, float]:
    dev = load_catalog().get("neuwave-pr")
    probe = Probe.on_trajectory(dev, "65W-10min", (0, -100, 0), (0, 0, 0),
                                depth_offset_mm=offset)
    m = evaluate(zone_for(probe), tumour)
    return m.min_margin_mm, m.coverage_pct


class Baseline:
    """Surface-distance method (VTK)."""

    def __init__(self, resolution: int) -> None:
        self.tumour = pv.Sphere(radius=R_TUMOUR, theta_resolution=resolution,
                                phi_resolution=resolution).triangulate()
        g = np.arange(-R_TUMOUR + 0.5, R_TUMOUR, 1.0)
        gx, gy, gz = np.meshgrid(g, g, g, indexing="ij")
        pts = np.column_stack([gx.ravel(), gy.ravel(), gz.ravel()])
        self.lattice = pv.PolyData(pts[np.linalg.norm(pts, axis=1) <= R_TUMOUR])
        self.resolution = resolution

    def run(self, offset: float) -> tuple[float, float]:
        c = offset - 17.5
        zone = pv.ParametricEllipsoid(B, A, B, u_res=self.resolution, v_res=self.resolution,
                                      w_res=self.resolution).triangulate()
        zone = zone.translate((0, c, 0), inplace=False).clean()
        # outward normals, so that VTK's signed distance is negative inside the zone
        zone = zone.compute_normals(auto_orient_normals=True, consistent_normals=True)
        f = vtk.vtkDistancePolyDataFilter()
        f.SetInputData(0, self.tumour)
        f.SetInputData(1, zone)
        f.SignedDistanceOn()
        f.ComputeSecondDistanceOff()
        f.Update()
        d = pv.wrap(f.GetOutput())["Distance"]
        margin = float(-np.max(d))  # VTK: negative inside input 1
        sel = vtk.vtkSelectEnclosedPoints()
        sel.SetInputData(self.lattice)
        sel.SetSurfaceData(zone)
        sel.SetTolerance(1e-6)
        sel.Update()
        inside = pv.wrap(sel.GetOutput())["SelectedPoints"]
        return margin, 100.0 * float(np.mean(inside))


CPU: dict[str, list[float]] = {}


def timeit(fn, repeat: int, key: str = "") -> float:
    """Median wall time (s); the median process CPU time is kept in CPU[key]."""
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU.setdefault(key, []).append(statistics.median(cpu))
    return statistics.median(times)


def main() -> None:
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                         text=True).stdout.strip()
    print(f"machine: {cpu or platform.processor()}; python {platform.python_version()}")
    t0 = time.perf_counter()
    tumour = TumourModel.sphere((0, 0, 0), R_TUMOUR)
    t_pre = time.perf_counter() - t0
    print(f"ours: tumour sampling (once per tumour) {1000 * t_pre:.0f} ms, "
          f"{len(tumour.points_lps)} volume + {len(tumour.surface_lps)} surface samples")
    base = Baseline(resolution=120)
    rows = []
    for off in OFFSETS:
        tm, tc = truth(off)
        om, oc = ours(tumour, off)
        bm, bc = base.run(off)
        t_ours = timeit(lambda off=off: ours(tumour, off), 7, "ours")
        t_base = timeit(lambda off=off: base.run(off), 3, "vtk")
        rows.append((off, tm, tc, om, oc, bm, bc, t_ours, t_base))
    print(f"{'tip mm':>7} {'truth margin':>12} {'ours':>7} {'vtk':>7} | {'truth cov%':>10} "
          f"{'ours':>7} {'vtk':>7} | {'ours ms':>8} {'vtk ms':>8} {'ratio':>6}")
    for off, tm, tc, om, oc, bm, bc, to, tb in rows:
        print(f"{off:7.1f} {tm:12.3f} {om:7.3f} {bm:7.3f} | {tc:10.2f} {oc:7.2f} {bc:7.2f} | "
              f"{1000 * to:8.1f} {1000 * tb:8.1f} {tb / to:6.1f}")
    err_o_m = max(abs(r[3] - r[1]) for r in rows)
    err_b_m = max(abs(r[5] - r[1]) for r in rows)
    err_o_c = max(abs(r[4] - r[2]) for r in rows)
    err_b_c = max(abs(r[6] - r[2]) for r in rows)
    t_o = statistics.median(r[7] for r in rows)
    t_b = statistics.median(r[8] for r in rows)
    print(f"max |margin error|: ours {err_o_m:.3f} mm, vtk {err_b_m:.3f} mm; "
          f"max |coverage error|: ours {err_o_c:.2f} %, vtk {err_b_c:.2f} %")
    print(f"one evaluation (coverage + margin), wall: ours {1000 * t_o:.1f} ms (goal <= 50 ms), "
          f"vtk {1000 * t_b:.1f} ms; speed-up {t_b / t_o:.1f}x (goal >= 20x)")
    c_o, c_b = statistics.median(CPU["ours"]), statistics.median(CPU["vtk"])
    print(f"one evaluation, process CPU time: ours {1000 * c_o:.1f} ms, vtk {1000 * c_b:.1f} ms; "
          f"ratio {c_b / c_o:.1f}x (less sensitive to other load on the machine)")
    print(f"load average during the run: {open('/proc/loadavg').read().split()[:3]}")
    dev = load_catalog().get("neuwave-pr")
    t_opt = timeit(lambda: optimize_single(dev, (0, -100, 0), (0, 0, 0), tumour), 3, "opt")
    small = TumourModel.sphere((0, 0, 0), 10.0)
    t_opt2 = timeit(lambda: optimize_single(dev, (0, -100, 0), (0, 0, 0), small), 3, "opt")
    print(f"single-probe optimisation (2 settings, depth -20..+20 mm): 3 cm tumour "
          f"{t_opt:.2f} s, 2 cm tumour {t_opt2:.2f} s (goal <= 2 s)")


if __name__ == "__main__":
    main()
