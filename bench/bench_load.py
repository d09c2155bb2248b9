"""Benchmark: read a 512×512×N CT series with ir_planner vs SimpleITK's ImageSeriesReader.

Run from the repository root::

    python bench/bench_load.py            # 512×512×300, 5 alternating runs
    python bench/bench_load.py --slices 400 --runs 7

What is measured
----------------
* Time: both loaders read the same files in the same process. Each is run once
  to warm up (page cache, imports), then runs alternate (ours, SimpleITK, ours,
  ...). Ours = ``read_dicom_series(folder)`` (header scan of every file, series
  choice, geometry checks, pixel read, rescale). SimpleITK =
  ``GetGDCMSeriesFileNames(folder)`` + ``ImageSeriesReader.Execute()`` +
  ``GetArrayFromImage`` (so both end with a numpy array). Reported: median time
  of each and the ratio ours / SimpleITK (goal ≤ 1.0).
* Peak memory: each loader runs once in its own fresh subprocess; after imports
  the process records its peak RSS so far (``VmHWM`` in ``/proc/self/status``),
  loads the series, and records it again. The increase is the loader's
  peak memory, compared with the size of the output volume as int16
  (512×512×N×2 bytes; goal ≤ 2×).

The series is the project's synthetic abdomen (``ir_planner.sample.phantom``)
when available, else ellipses + noise in HU, written by ``write_dicom_series``
(uncompressed, explicit VR little endian, int16).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _make_volume(slices: int):  # noqa: ANN202 - bench script
    from ir_planner.core.volume import ImageVolume, affine_from_geometry

    spacing = (0.75, 0.75, 1.0)
    try:
        from ir_planner.sample.phantom import make_phantom

        image, _labels, _info = make_phantom(size_ijk=(512, 512, slices), spacing_mm=spacing)
        return image, "synthetic abdomen (ir_planner.sample.phantom.make_phantom)"
    except Exception as exc:  # noqa: BLE001 - fall back to a simple phantom
        print(f"phantom unavailable ({exc}); using ellipses + noise", file=sys.stderr)
    rng = np.random.default_rng(0)
    j, i = np.mgrid[0:512, 0:512]
    body = ((i - 256) / 200.0) ** 2 + ((j - 256) / 150.0) ** 2 <= 1
    organ = ((i - 200) / 60.0) ** 2 + ((j - 240) / 50.0) ** 2 <= 1
    arr = np.full((slices, 512, 512), -1000, np.int16)
    for k in range(slices):
        sl = np.where(body, 40, -1000) + np.where(organ, 20 + k % 7, 0)
        arr[k] = (sl + rng.normal(0, 10, (512, 512))).astype(np.int16)
    affine = affine_from_geometry((-192.0, -192.0, -150.0), spacing, np.eye(3))
    return ImageVolume(arr, affine, modality="CT"), "ellipses + noise"


def _load_ours(folder: Path) -> np.ndarray:
    from ir_planner.io.dicom import read_dicom_series

    return read_dicom_series(folder).array


def _load_sitk(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


LOADERS = {"ours": _load_ours, "sitk": _load_sitk}


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process (VmHWM of /proc/self/status).

    ``getrusage().ru_maxrss`` is not used: on Linux it survives fork+exec, so a
    child started by a big parent would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(loader: str, folder: Path) -> None:
    """Run one loader in this fresh process and print the peak-RSS increase (bytes)."""
    import SimpleITK  # noqa: F401 - imports are not part of the measured increase

    import ir_planner.io.dicom  # noqa: F401

    before = _peak_rss_bytes()
    array = LOADERS[loader](folder)
    after = _peak_rss_bytes()
    print(json.dumps({"peak_increase_bytes": after - before, "nbytes": array.nbytes,
                      "dtype": str(array.dtype), "shape": list(array.shape)}))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    """Run the benchmark and print a Markdown summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None,
                        help="existing series folder to reuse (default: generate into a temp dir)")
    parser.add_argument("--child", choices=sorted(LOADERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.folder)
        return

    with tempfile.TemporaryDirectory(prefix="irp-bench-load-") as tmp:
        folder = args.folder
        source = "given folder"
        if folder is None:
            from ir_planner.io.dicom_write import write_dicom_series

            t0 = time.perf_counter()
            volume, source = _make_volume(args.slices)
            t1 = time.perf_counter()
            folder = Path(tmp) / "series"
            write_dicom_series(volume.with_array(np.round(volume.array).astype(np.int16)),
                               folder, study_date="20240101")
            t2 = time.perf_counter()
            print(f"made volume in {t1 - t0:.1f} s, wrote {args.slices} slices in "
                  f"{t2 - t1:.1f} s", file=sys.stderr)
            del volume
        n_files = len(list(folder.iterdir()))

        # Same result first (a benchmark of a wrong reader is meaningless).
        ours = _load_ours(folder)
        ref = _load_sitk(folder)
        assert ours.shape == ref.shape and np.array_equal(ours, ref), "loaders disagree"
        shape = ours.shape
        del ours, ref

        times: dict[str, list[float]] = {"ours": [], "sitk": []}
        for _ in range(args.runs):
            for name, fn in LOADERS.items():
                t0 = time.perf_counter()
                fn(folder)
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}

        mem: dict[str, dict] = {}
        for name in LOADERS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, "--folder", str(folder)],
                capture_output=True, text=True, check=True,
            )
            mem[name] = json.loads(out.stdout.strip().splitlines()[-1])
        int16_bytes = shape[0] * shape[1] * shape[2] * 2

    lines = [
        "# Loading a DICOM CT series: ir_planner vs SimpleITK",
        "",
        f"Machine: {_cpu()}, {len(__import__('os').sched_getaffinity(0))} cores; "
        f"Python {platform.python_version()}.",
        f"Series: {n_files} files, {shape[2]}×{shape[1]}×{shape[0]} int16 "
        f"(explicit VR little endian, uncompressed), {source}.",
        "",
        f"Time ({args.runs} alternating runs after one warm-up each, median; files in the "
        "page cache):",
        "",
        "| loader | median s | min s | max s |",
        "| --- | --- | --- | --- |",
    ]
    for name, label in (("ours", "ir_planner read_dicom_series"),
                        ("sitk", "SimpleITK ImageSeriesReader (+GetGDCMSeriesFileNames, "
                                 "GetArrayFromImage)")):
        v = times[name]
        lines.append(f"| {label} | {med[name]:.3f} | {min(v):.3f} | {max(v):.3f} |")
    lines += [
        "",
        f"**Time ratio ours / SimpleITK = {med['ours'] / med['sitk']:.2f}** (goal ≤ 1.0).",
        "",
        "Peak memory (increase of peak RSS, `VmHWM`, around one load in a fresh "
        "subprocess), relative to the int16 volume size "
        f"512×512×{shape[0]}×2 bytes = {int16_bytes / 2**20:.0f} MiB:",
        "",
        "| loader | peak increase MiB | × int16 volume | output dtype |",
        "| --- | --- | --- | --- |",
    ]
    for name in LOADERS:
        m = mem[name]
        lines.append(
            f"| {name} | {m['peak_increase_bytes'] / 2**20:.0f} | "
            f"{m['peak_increase_bytes'] / int16_bytes:.2f} | {m['dtype']} |"
        )
    lines.append("")
    lines.append("Goal: ours ≤ 2× the volume size.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
