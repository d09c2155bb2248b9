"""Benchmark: body outline and skin surface (``ir_planner.planning.body``) vs the former code.

Data: the real TotalSegmentator CT and its masks (../shared/data/totalseg-ct) resampled by
nearest neighbour onto 512×512×300 voxels (``bench_planning.build_case``; this case has
no body structure, so the CT threshold path runs), and the same CT on its native 3 mm grid.

(a) new: ``body_mask`` + ``skin_points`` (numba kernels).
(b) old: the previous implementation, copied below verbatim as the baseline (scipy
    ``binary_opening``, ``label``, 3-D + slice-wise ``binary_fill_holes``,
    ``LabelMap.any_mask``; marching cubes with ``step_size`` on the full mask, einsum
    subdivision, ``np.unique`` thinning).

Both run in the same process on the same case, interleaved, ``--repeat`` times after one
warm-up call each (numba kernels loaded from the cache); the median and the minimum of
wall and process CPU time are printed with the ratios, then the agreement: Dice of the
masks, the fraction of differing voxels, the largest distance (mm) from each new skin
point to the old set and back, and whether the point sets and normals are identical.

Run: ``python bench/bench_body.py`` (``--pickle PATH`` loads a pickled
``(grid, labels, target)`` instead of building the 512 case, which takes ~20 s).
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ir_planner.core.catalog import Category  # noqa: E402
from ir_planner.core.errors import InputError  # noqa: E402
from ir_planner.core.labels import LabelMap  # noqa: E402
from ir_planner.core.volume import ImageVolume  # noqa: E402
from ir_planner.planning.body import body_mask, skin_points  # noqa: E402


# -- baseline: the former implementation, verbatim ----------------------------------------
def body_mask_old(image: ImageVolume | None, labels: LabelMap, *,
                  threshold_hu: float = -300.0) -> tuple[NDArray[np.bool_], str]:
    body = labels.by_category(Category.BODY)
    if body:
        mask = labels.union_mask(body)
        if mask.any():
            return _fill_slices_old(mask), "structure " + "+".join(s.name for s in body)
    if image is None:
        raise InputError("no body/skin structure in the labels and no image to threshold; "
                         "pass the CT image or add a 'body' structure")
    if image.shape != labels.grid.shape:
        raise InputError(f"image grid {image.shape} differs from label grid "
                         f"{labels.grid.shape}; resample the labels onto the image")
    arr = np.asarray(image.array)
    step = 2 if arr.size > 16_000_000 and float(np.min(image.spacing_mm[:2])) < 1.0 else 1
    small = arr[:, ::step, ::step] > threshold_hu
    small = ndi.binary_opening(small, structure=ndi.generate_binary_structure(3, 1),
                               iterations=2)
    lab, n = ndi.label(small)
    if n == 0:
        raise InputError(f"no voxel above {threshold_hu} HU: cannot find the body outline; "
                         "is this a CT in Hounsfield units?")
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    small = _fill_slices_old(lab == int(np.argmax(sizes)))
    if step > 1:
        mask = np.repeat(np.repeat(small, step, axis=1), step, axis=2)[:, :arr.shape[1],
                                                                        :arr.shape[2]]
        source = f"CT threshold {threshold_hu:g} HU (outline on a {step}x coarser in-plane grid)"
    else:
        mask = small
        source = f"CT threshold {threshold_hu:g} HU"
    mask = mask | labels.any_mask()
    return mask, source


def _fill_slices_old(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    out = ndi.binary_fill_holes(mask)
    for k in range(out.shape[0]):
        out[k] = ndi.binary_fill_holes(out[k])
    return out


def skin_points_old(mask: NDArray[np.bool_], grid: ImageVolume, *, spacing_mm: float = 2.0
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    from skimage.measure import marching_cubes

    if not mask.any():
        raise InputError("the body mask is empty: no skin to enter through")
    step_size = 2 if float(np.min(grid.spacing_mm)) < 1.0 else 1
    padded = mask.astype(np.uint8)
    sp_kji = tuple(float(s) for s in grid.spacing_mm[::-1])
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=sp_kji,
                                        step_size=step_size, allow_degenerate=False)
    verts_ijk = verts[:, ::-1] / grid.spacing_mm
    tri = verts_ijk[faces] * grid.spacing_mm
    edge = np.max(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2), axis=1)
    nsub = np.maximum(1, np.ceil(edge / spacing_mm)).astype(int)
    pts_list = []
    nrm_list = []
    tri_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    for n in np.unique(nsub):
        sel = tri[nsub == n]
        nn = tri_n[nsub == n]
        ab = [(a / n, b / n) for a in range(n + 1) for b in range(n + 1 - a)]
        w = np.array([[1 - u - v, u, v] for u, v in ab])
        p = np.einsum("bw,mwc->mbc", w, sel).reshape(-1, 3)
        pts_list.append(p)
        nrm_list.append(np.repeat(nn, len(ab), axis=0))
    pts_q = np.concatenate(pts_list)
    nrm_q = np.concatenate(nrm_list)
    key = np.floor(pts_q / (0.75 * spacing_mm)).astype(np.int64)
    key -= key.min(axis=0)
    flat = np.ravel_multi_index(key.T, tuple(int(x) + 1 for x in key.max(axis=0)))
    _, first = np.unique(flat, return_index=True)
    pts_q, nrm_q = pts_q[first], nrm_q[first]
    nrm_q /= np.maximum(np.linalg.norm(nrm_q, axis=1, keepdims=True), 1e-12)
    step = float(np.max(grid.spacing_mm))
    shp = np.array(mask.shape[::-1])

    def inside(q: NDArray[np.float64]) -> NDArray[np.bool_]:
        ijk = np.rint(q / grid.spacing_mm).astype(int)
        ok = np.all((ijk >= 0) & (ijk < shp), axis=1)
        ijk = np.clip(ijk, 0, shp - 1)
        return ok & mask[ijk[:, 2], ijk[:, 1], ijk[:, 0]]

    flip = inside(pts_q + step * nrm_q) & ~inside(pts_q - step * nrm_q)
    nrm_q[flip] *= -1.0
    pts_lps = pts_q @ grid.direction.T + grid.origin_lps
    nrm_lps = nrm_q @ grid.direction.T
    return pts_lps, nrm_lps


# -- measurement --------------------------------------------------------------------------
def _timed(fn, *args):  # type: ignore[no-untyped-def]
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w0, time.process_time() - c0


def _run(bm, sp, grid, labels):  # type: ignore[no-untyped-def]
    (mask, source), tb, cb = _timed(bm, grid, labels)
    (pts, nrm), ts, cs = _timed(sp, mask, grid)
    return mask, source, pts, nrm, (tb, ts, tb + ts), (cb, cs, cb + cs)


def compare(name: str, grid: ImageVolume, labels: LabelMap, repeat: int) -> None:
    print(f"\n== {name}: {grid.shape[::-1]} voxels (i, j, k), spacing "
          f"{np.round(grid.spacing_mm, 3).tolist()} mm, modality {grid.modality!r}")
    t0 = time.perf_counter()
    _run(body_mask, skin_points, grid, labels)  # warm-up: numba cache load / compile
    print(f"new, first call in this process (numba cache load or compile): "
          f"{time.perf_counter() - t0:.2f} s")
    _run(body_mask_old, skin_points_old, grid, labels)
    walls: dict[str, list[tuple[float, float, float]]] = {"old": [], "new": []}
    cpus: dict[str, list[tuple[float, float, float]]] = {"old": [], "new": []}
    for _ in range(repeat):
        for tag, bm, sp in (("old", body_mask_old, skin_points_old),
                            ("new", body_mask, skin_points)):
            res = _run(bm, sp, grid, labels)
            walls[tag].append(res[4])
            cpus[tag].append(res[5])
            if tag == "old":
                old = res
            else:
                new = res
    print(f"{'':10s} {'body_mask':>22s} {'skin_points':>22s} {'both':>22s}   "
          "(wall median / min, s)")
    for tag in ("old", "new"):
        cols = []
        for c in range(3):
            v = [t[c] for t in walls[tag]]
            cols.append(f"{statistics.median(v):9.3f} / {min(v):7.3f}")
        print(f"{tag:10s} " + " ".join(f"{c:>22s}" for c in cols))
    for c, what in enumerate(("body_mask", "skin_points", "both")):
        mo = statistics.median(t[c] for t in walls["old"])
        mn = statistics.median(t[c] for t in walls["new"])
        co = statistics.median(t[c] for t in cpus["old"])
        cn = statistics.median(t[c] for t in cpus["new"])
        print(f"ratio old/new {what:12s}: wall {mo / mn:5.2f}x   CPU {co / cn:5.2f}x "
              f"(CPU median old {co:.3f} s, new {cn:.3f} s)")
    m_old, s_old, p_old, n_old = old[:4]
    m_new, s_new, p_new, n_new = new[:4]
    inter = int(np.count_nonzero(m_old & m_new))
    dice = 2 * inter / max(1, int(m_old.sum()) + int(m_new.sum()))
    diff = int(np.count_nonzero(m_old != m_new))
    d_new_old = cKDTree(p_old).query(p_new)[0]
    d_old_new = cKDTree(p_new).query(p_old)[0]
    same = p_old.shape == p_new.shape and bool(np.array_equal(p_old, p_new))
    print(f"source old: {s_old}\nsource new: {s_new}")
    print(f"mask Dice {dice:.6f}, differing voxels {diff} of {m_old.size} "
          f"({diff / m_old.size:.2e})")
    print(f"skin points old {len(p_old)}, new {len(p_new)}; max distance new->old "
          f"{d_new_old.max():.4f} mm, old->new {d_old_new.max():.4f} mm; identical point "
          f"arrays (same order): {same}"
          + (f", max normal difference {np.abs(n_old - n_new).max():.2e}" if same else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pickle", type=Path, default=None,
                    help="pickled (grid, labels, target) of the 512 case")
    ap.add_argument("--no-native", action="store_true", help="skip the native 3 mm case")
    args = ap.parse_args(argv)
    model = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in model.splitlines()
                  if ln.startswith("Model name")), platform.processor())
    import numba

    print(f"machine: {model}, {os.cpu_count()} cores, numba {numba.__version__} "
          f"({numba.get_num_threads()} threads), load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.pickle is not None:
        with open(args.pickle, "rb") as fh:
            grid, labels, _ = pickle.load(fh)
    else:
        from bench_planning import build_case

        grid, labels, _ = build_case()[:3]
    compare("real CT resampled to 512x512x300 (bench_planning case)", grid, labels,
            args.repeat)
    if not args.no_native:
        from ir_planner.io.image_files import read_image_file

        root = REPO.parent / "shared" / "data" / "totalseg-ct"
        ct = read_image_file(root / "example_ct.nii.gz", modality="CT")
        masks = []
        for f in sorted((root / "masks").glob("*.nii.gz")):
            m = read_image_file(f).array > 0
            if m.any():
                masks.append((f.name[:-7], m))
        compare("real CT, native 3 mm grid", ct, LabelMap.from_masks(masks, ct), args.repeat)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
