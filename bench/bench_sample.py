"""Benchmark: synthetic phantom and sample-case generation, against baselines in the same run.

Run from the repository root::

    python bench/bench_sample.py            # prints Markdown
    python bench/bench_sample.py --write    # also writes bench/results/sample_data.md

What is measured (median of ``--runs`` alternating runs after one warm-up each):

1. ``make_phantom`` at the default 256×256×96 and at 512×512×300 (0.7×0.7×0.8 mm).
   Baseline: the least any generator of a noisy CT of that size must do — draw
   float32 Gaussian noise for every voxel, add it to a constant, round and cast to
   int16 (numpy, one pass). The ratio says how much the anatomy costs on top.
2. Peak memory of ``make_phantom`` at 512×512×300 (a child process, ``ru_maxrss``)
   compared with the size of its outputs (int16 CT + uint8 labels).
3. ``generate_sample_case`` (phantom + intra-op scan + 132 DICOM files + label maps),
   compared with writing the same planning CT alone as a DICOM series.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ir_planner.io.dicom_write import write_dicom_series
from ir_planner.sample.case import generate_sample_case
from ir_planner.sample.phantom import make_phantom

REPO = Path(__file__).resolve().parents[1]


def _alternate(ours: Callable[[], Any], base: Callable[[], Any], runs: int) -> tuple[float, float]:
    ours()
    base()
    t_ours, t_base = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        ours()
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        base()
        t_base.append(time.perf_counter() - t0)
    return statistics.median(t_ours), statistics.median(t_base)


def _noise_baseline(size_ijk: tuple[int, int, int]) -> Callable[[], Any]:
    def run() -> Any:
        rng = np.random.default_rng(0)
        shape = (size_ijk[2], size_ijk[1], size_ijk[0])
        vol = rng.standard_normal(shape, dtype=np.float32)
        vol *= 12.0
        vol += 40.0
        return np.rint(vol).astype(np.int16)

    return run


def _peak_rss_mb(size: tuple[int, int, int], spacing: tuple[float, float, float]) -> float:
    code = (
        "import resource\n"
        "from ir_planner.sample.phantom import make_phantom\n"
        f"make_phantom(size_ijk={size!r}, spacing_mm={spacing!r})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    base = ("import resource, ir_planner.sample.phantom\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    peak = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.split()[-1])
    idle = int(subprocess.run([sys.executable, "-c", base], capture_output=True, text=True,
                              check=True).stdout.split()[-1])
    return (peak - idle) / 1024.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    cpu = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    lines = ["# Sample data benchmarks", "",
             f"Machine: {cpu}, {platform.machine()}, Python {platform.python_version()}; "
             f"median of {args.runs} alternating runs after a warm-up.", "",
             "| what | ours (s) | baseline (s) | ratio ours/baseline |",
             "| --- | ---: | ---: | ---: |"]
    # memory first: a forked child inherits the parent's RSS high-water mark on Linux,
    # so measure while this process is still small
    out_mb = 512 * 512 * 300 * 3 / 1e6
    peak = _peak_rss_mb((512, 512, 300), (0.7, 0.7, 0.8))
    cases = [((256, 256, 96), (1.4, 1.4, 2.5)), ((512, 512, 300), (0.7, 0.7, 0.8))]
    for size, spacing in cases:
        runs = args.runs if size[2] < 200 else max(1, args.runs - 1)
        t_ours, t_base = _alternate(
            lambda size=size, spacing=spacing: make_phantom(size_ijk=size, spacing_mm=spacing),
            _noise_baseline(size), runs)
        lines.append(f"| make_phantom {size[0]}×{size[1]}×{size[2]} vs noise-only int16 volume "
                     f"| {t_ours:.2f} | {t_base:.2f} | {t_ours / t_base:.1f} |")
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(1000))
        image, _labels, _info = make_phantom()

        def ours() -> Any:
            return generate_sample_case(Path(tmp) / "case", seed=0)

        def base() -> Any:
            return write_dicom_series(image, Path(tmp) / f"dicom{next(counter)}",
                                      study_date="20240101")

        t_ours, t_base = _alternate(ours, base, args.runs)
    lines.append(f"| generate_sample_case (default) vs writing the planning CT as DICOM only "
                 f"| {t_ours:.2f} | {t_base:.2f} | {t_ours / t_base:.1f} |")
    lines += ["", f"Peak memory of make_phantom 512×512×300 above the interpreter's: {peak:.0f} MB "
              f"(its outputs, int16 CT + uint8 labels, are {out_mb:.0f} MB; ratio "
              f"{peak / out_mb:.2f})."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        out = REPO / "bench" / "results" / "sample_data.md"
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
