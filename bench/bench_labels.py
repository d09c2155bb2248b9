"""Benchmark: segmentation reading (ir_planner.io.segmentation) against baselines in the same run.

Run from the repository root::

    python bench/bench_labels.py            # prints Markdown
    python bench/bench_labels.py --write    # also writes bench/results/segmentation_files.md

What is measured (best of ``--runs`` alternating runs after one warm-up each; wall and CPU seconds):

1. TotalSegmentator mask folder (../shared/data/totalseg-ct/masks, 107 files, 62 non-empty,
   122×101×112, float64 gzip NIfTI). Ours: ``load_labels(folder)`` (parallel zlib decode,
   bounding-box packing). Baseline: SimpleITK ``ReadImage`` of every file in turn,
   ``GetArrayFromImage(...) != 0``, then ``LabelMap.from_masks`` on the non-empty masks.
   Both give the same structures and voxels (checked).
2. RTSTRUCT (liver contours written by rt-utils on the dcmqi 3-slice CT). Ours:
   ``load_labels(rtstruct, image=ct)``. Baseline: rt-utils' own OpenCV rasteriser
   (``RTStructBuilder.create_from`` + ``get_roi_mask_by_name``). Dice between the two.
3. Nearest-neighbour resampling of the 3-layer TotalSegmentator label map onto a rotated
   256×256×200 grid: ours (``resample_labels``, numpy, any affine) vs SimpleITK ``Resample``
   (``sitkNearestNeighbor``) per layer.
4. DICOM SEG (dcmqi liver.dcm onto its CT): ours only, absolute time.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.io.seg_common import resample_labels
from ir_planner.io.segmentation import load_labels
from ir_planner.io.sitk_convert import from_sitk, to_sitk

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def _alternate(ours: Callable[[], Any], base: Callable[[], Any], runs: int
               ) -> tuple[float, float, float, float]:
    """Best (minimum) wall and CPU (all threads) seconds of ours and the baseline, alternating.

    The minimum is the least-disturbed run: the machine is shared with other jobs.
    """
    ours()
    base()
    w_ours, w_base, c_ours, c_base = [], [], [], []
    for _ in range(runs):
        for fn, wall, cpu in ((ours, w_ours, c_ours), (base, w_base, c_base)):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return min(w_ours), min(w_base), min(c_ours), min(c_base)


def _baseline_folder(folder: Path) -> LabelMap:
    files = sorted(folder.glob("*.nii.gz"))
    first = from_sitk(sitk.ReadImage(str(files[0])))
    masks = []
    for f in files:
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(f))) != 0
        if mask.any():
            masks.append((f.name[:-7], mask))
    return LabelMap.from_masks(masks, first)


def _ct(folder: Path) -> ImageVolume:
    import pydicom

    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(files)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return from_sitk(reader.Execute(),
                     metadata={"frame_of_reference_uid": str(ds.FrameOfReferenceUID)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    lines: list[str] = []
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                         text=True).stdout.split(":")[-1].strip()
    lines.append("# Segmentation reading benchmark (`bench/bench_labels.py`)\n")
    load = os.getloadavg()[0]
    lines.append(f"Machine: {cpu}, 2 cores, 24 GB; Python {platform.python_version()}; "
                 f"best of {args.runs} alternating runs after a warm-up; load average at "
                 f"start {load:.1f} (other jobs on the machine make absolute times noisy, "
                 "the ratios less so).\n")
    lines.append("| what | ours wall (s) | baseline wall (s) | wall ratio | ours CPU (s) | "
                 "baseline CPU (s) | note |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")

    folder = DATA / "totalseg-ct" / "masks"
    ours_lm = load_labels(folder)
    base_lm = _baseline_folder(folder)
    assert sorted(ours_lm.names) == sorted(base_lm.names)
    assert all(np.array_equal(ours_lm.mask(n), base_lm.mask(n)) for n in ours_lm.names)
    t_o, t_b, c_o, c_b = _alternate(lambda: load_labels(folder),
                                    lambda: _baseline_folder(folder), args.runs)
    lines.append(f"| mask folder, 107 files (62 non-empty) | {t_o:.2f} | {t_b:.2f} | "
                 f"{t_o / t_b:.2f} | {c_o:.2f} | {c_b:.2f} | baseline: sequential SimpleITK + LabelMap.from_masks; "
                 f"{len(ours_lm.layers)} vs {len(base_lm.layers)} layers, same voxels |")

    seg_dir = DATA / "dcmqi-seg"
    ct = _ct(seg_dir / "ct-3slice")
    try:
        from rt_utils import RTStructBuilder

        liver = sitk.GetArrayFromImage(sitk.ReadImage(str(seg_dir / "liver_seg.nrrd"))) == 1
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rt = RTStructBuilder.create_new(dicom_series_path=str(seg_dir / "ct-3slice"))
            order = [int(round(ct.world_to_index([float(v) for v in s.ImagePositionPatient])[2]))
                     for s in rt.series_data]
            rt.add_roi(mask=np.transpose(liver[order], (1, 2, 0)), name="liver")
            path = Path(tmp) / "rs.dcm"
            rt.save(str(path))

            def base_rt() -> np.ndarray:
                r = RTStructBuilder.create_from(dicom_series_path=str(seg_dir / "ct-3slice"),
                                                rt_struct_path=str(path))
                return r.get_roi_mask_by_name("liver")

            ours_mask = load_labels(path, image=ct).mask("liver")
            theirs = np.transpose(base_rt(), (2, 0, 1))[np.argsort(order)]
            dice_truth = 2 * (ours_mask & liver).sum() / (ours_mask.sum() + liver.sum())
            dice_theirs = 2 * (theirs & liver).sum() / (theirs.sum() + liver.sum())
            t_o, t_b, c_o, c_b = _alternate(lambda: load_labels(path, image=ct), base_rt,
                                            args.runs)
        lines.append(f"| RTSTRUCT liver, 3×512×512 | {t_o:.3f} | {t_b:.3f} | {t_o / t_b:.2f} | "
                     f"{c_o:.3f} | {c_b:.3f} | "
                     f"baseline: rt-utils (OpenCV); Dice vs the known mask: ours "
                     f"{dice_truth:.4f}, rt-utils {dice_theirs:.4f} |")
    except ImportError:
        lines.append("| RTSTRUCT | - | - | - | - | - | rt-utils not installed |")

    angle = np.deg2rad(10.0)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                          [0, 0, 1.0]])
    centre = ours_lm.grid.index_to_world(np.array(ours_lm.grid.shape_ijk) / 2)
    spacing = np.array([1.5, 1.5, 1.7])
    size = np.array([256, 256, 200])
    target = ImageVolume(np.zeros(tuple(size[::-1]), np.int16), affine_from_geometry(
        centre - direction @ (spacing * size / 2) + 0.37, spacing, direction))

    def base_resample() -> list[np.ndarray]:
        ref = to_sitk(target)
        return [sitk.GetArrayFromImage(sitk.Resample(
            to_sitk(ours_lm.grid, layer), ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
            for layer in ours_lm.layers]

    res = resample_labels(ours_lm, target)
    ref_layers = base_resample()
    differ = sum(int(np.count_nonzero(a != b)) for a, b in zip(res.layers, ref_layers))
    t_o, t_b, c_o, c_b = _alternate(lambda: resample_labels(ours_lm, target), base_resample,
                                    args.runs)
    lines.append(f"| NN resampling, 3 layers → 256×256×200 rotated 10° | {t_o:.2f} | {t_b:.2f} | "
                 f"{t_o / t_b:.2f} | {c_o:.2f} | {c_b:.2f} | baseline: SimpleITK Resample; {differ} of "
                 f"{3 * int(np.prod(size))} voxels differ (ties) |")

    t_seg = []
    for _ in range(args.runs + 1):
        t0 = time.perf_counter()
        load_labels(seg_dir / "liver.dcm", image=ct)
        t_seg.append(time.perf_counter() - t0)
    lines.append(f"| DICOM SEG liver.dcm (3 frames 512×512) onto its CT | "
                 f"{min(t_seg[1:]):.3f} | - | - | - | - | highdicom parse + "
                 "placement |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        out = REPO / "bench" / "results" / "segmentation_files.md"
        out.write_text(text)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
