"""Benchmark: the cost of the input integrity checks (issue 15) against the plain decoders.

Run from the repository root::

    python bench/bench_input_checks.py            # 5 alternating runs
    python bench/bench_input_checks.py --runs 9

What is measured (same process, alternating runs after one warm-up):

* ``example_ct.nii.gz`` (real TotalSegmentator CT, ../shared/data): the NIfTI check
  (header fields + whole gzip stream verified, CRC and length) vs SimpleITK's
  ``ReadImage`` of the same file; and the full ``load_image`` (check + read +
  non-finite repair) vs ``ReadImage`` + ``GetArrayFromImage``.
* The TotalSegmentator mask folder (104 masks): ``read_mask_folder`` with its strict
  streaming decoder (every gzip stream verified to its trailer) vs a SimpleITK loop
  reading every mask.
* A 512×512×120 DICOM series written by the project's writer: the checks run by
  ``read_dicom_series`` before pixels are read (pixel bytes vs header per file,
  rescale values, memory budget) vs the whole read.

Printed: median seconds and ratios; no goal is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "totalseg-ct"


def _median(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from ir_planner.core.volume import ImageVolume
    from ir_planner.io.dicom import read_dicom_series
    from ir_planner.io.dicom_checks import check_series_files
    from ir_planner.io.dicom_series import choose, group_series, scan_for_reading
    from ir_planner.io.dicom_write import write_dicom_series
    from ir_planner.io.integrity import check_image_file
    from ir_planner.io.load import load_image
    from ir_planner.io.mask_folder import read_mask_folder

    ct = DATA / "example_ct.nii.gz"
    rows = []
    if ct.is_file():
        check = _median(lambda: check_image_file(ct), args.runs)
        read = _median(lambda: sitk.ReadImage(str(ct)), args.runs)
        full = _median(lambda: load_image(ct), args.runs)
        plain = _median(lambda: sitk.GetArrayFromImage(sitk.ReadImage(str(ct))), args.runs)
        rows += [("NIfTI check (example_ct.nii.gz)", check, read),
                 ("load_image incl. check", full, plain)]
        masks = DATA / "masks"
        files = sorted(masks.glob("*.nii.gz"))
        strict = _median(lambda: read_mask_folder(masks), max(1, args.runs // 2))
        loop = _median(lambda: [sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in files],
                       max(1, args.runs // 2))
        rows.append((f"mask folder ({len(files)} masks), strict decoder", strict, loop))
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        array = rng.integers(-1000, 1000, size=(120, 512, 512)).astype(np.int16)
        affine = np.diag([0.7, 0.7, 1.5, 1.0])
        write_dicom_series(ImageVolume(array, affine, modality="CT"), Path(tmp) / "s")
        scan, _ = scan_for_reading(Path(tmp) / "s")
        series = group_series(scan)
        chosen = choose(series, None, Path(tmp) / "s")
        g = chosen.geometry
        assert g is not None

        def checks() -> None:
            check_series_files(
                [(f.path, f.pixel_offset, f.n_frames, f.frames[0].rows, f.frames[0].cols,
                  np.dtype(f.pixel_dtype)) for f in chosen.files],
                n_frames_total=len(g.frames), rows=g.rows, cols=g.cols,
                out_shape=(len(g.frames), g.rows, g.cols), stack_itemsize=4, label="bench")

        rows.append(("DICOM pre-read checks, 512×512×120",
                     _median(checks, args.runs),
                     _median(lambda: read_dicom_series(Path(tmp) / "s"), args.runs)))
    print(f"{'what':48s} {'checked s':>10s} {'baseline s':>11s} {'ratio':>7s}")
    for name, ours, base in rows:
        print(f"{name:48s} {ours:10.3f} {base:11.3f} {ours / base:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
