"""Read DICOM CT/MR series into :class:`ImageVolume` (LPS, mm).

* :func:`list_series` — what a file, folder or tree holds (headers only).
* :func:`read_dicom_series` — one series as a volume: slices ordered along the
  slice normal, rescale slope/intercept applied per slice, gantry tilt and
  uneven spacing resampled onto a regular orthogonal grid (with a warning),
  compressed transfer syntaxes and enhanced multi-frame images supported.

Policy for bad files (what a radiologist would want: never a silently
incomplete volume):

* files that are not DICOM at all (text, random bytes, empty files) are skipped
  and listed in :attr:`SeriesInfo.warnings` / the volume's warnings;
* a file that looks like DICOM (``DICM`` marker, DICOM identifiers) but cannot
  be parsed or ends inside a data element stops the read with an
  :class:`ImageReadError` naming it, unless its bytes show it belongs to another
  series (then it is listed in the warnings): a slice of the series could be
  missing otherwise;
* before any pixel is read, each file's declared pixel bytes are compared with
  the bytes present, RescaleSlope/RescaleIntercept must be finite and sensible,
  and the volume must fit the memory budget (:mod:`ir_planner.io.dicom_checks`);
* a file of the chosen series whose pixel data cannot be decoded stops the read
  with an error naming the file.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray

from ir_planner.core.errors import ImageReadError
from ir_planner.core.fileio import register_input
from ir_planner.core.progress import ProgressCallback, report, subrange
from ir_planner.core.volume import ImageVolume
from ir_planner.io.dicom_checks import (
    check_rescale,
    check_series_files,
    looks_like_dicom_file,
    meta_sop_class,
    truncation_problem,
)
from ir_planner.io.dicom_geometry import resample_to_grid
from ir_planner.io.dicom_scan import VOLUME_SOP_CLASSES, DicomScan, FileHeader, scan_dicom
from ir_planner.io.dicom_series import (
    Series,
    SeriesInfo,
    choose,
    choose_series,
    group_series,
    list_series,
    scan_for_reading,
    series_from_scan,
    skipped_note,
)

__all__ = [
    "SeriesInfo",
    "list_series",
    "series_from_scan",
    "skipped_note",
    "choose_series",
    "read_dicom_series",
    "scan_for_reading",
    "scan_dicom",
    "DicomScan",
]


def _frame_stack_dtype(series: Series) -> np.dtype:
    """int16 when every slope is 1 and every intercept an integer, else float32.

    int16 is optimistic: :func:`_read_stack` falls back to float32 if a rescaled
    value does not fit.
    """
    g = series.geometry
    assert g is not None
    if g.needs_resampling:
        return np.dtype(np.float32)
    for fr in g.frames:
        if fr.slope != 1.0 or fr.intercept != round(fr.intercept):
            return np.dtype(np.float32)
    return np.dtype(np.int16)


class _Int16Overflow(Exception):
    """A rescaled value does not fit int16."""


def _read_file_frames(header: FileHeader, frame_ids: list[int]) -> NDArray[Any]:
    """Stored pixel values of the requested frames of one file, shape (n, rows, cols)."""
    rows = header.frames[0].rows
    cols = header.frames[0].cols
    if header.pixel_offset is not None:
        dtype = np.dtype(header.pixel_dtype)
        frame_items = rows * cols
        total = header.n_frames * frame_items
        data = np.fromfile(header.path, dtype=dtype, count=total, offset=header.pixel_offset)
        if data.size != total:
            raise ImageReadError(
                f"{header.path}: pixel data truncated ({data.size * dtype.itemsize} of "
                f"{total * dtype.itemsize} bytes); the file is damaged or incompletely copied"
            )
        frames = data.reshape(header.n_frames, rows, cols)[frame_ids]
        unused = dtype.itemsize * 8 - header.bits_stored
        if unused > 0:  # bits above HighBit are not part of the value (DICOM PS3.5 8.1.1)
            if dtype.kind == "i":
                frames = (frames << unused) >> unused  # sign-extend from BitsStored
            else:
                frames &= np.array((1 << header.bits_stored) - 1, dtype=dtype)
        return frames
    try:
        ds = pydicom.dcmread(header.path, force=True)
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = (
                pydicom.uid.ImplicitVRLittleEndian if implicit
                else pydicom.uid.ExplicitVRLittleEndian if little
                else pydicom.uid.ExplicitVRBigEndian
            )
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder errors vary by plugin
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageReadError(f"{header.path}: cannot decode pixel data ({msg[:200]})") from exc
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.shape[1:] != (rows, cols) or arr.shape[0] != header.n_frames:
        raise ImageReadError(
            f"{header.path}: pixel data has shape {arr.shape}, expected "
            f"({header.n_frames}, {rows}, {cols})"
        )
    return arr[frame_ids]


def _read_stack(
    series: Series, dtype: np.dtype, progress: ProgressCallback | None
) -> tuple[NDArray[Any], list[str]]:
    """Read, rescale and stack the sorted frames of ``series`` (one array, filled in place).

    Pixels matching PixelPaddingValue (/PixelPaddingRangeLimit) end at the image
    minimum: the rescaled padding value if it is the darkest value, else the
    darkest real voxel.
    """
    g = series.geometry
    assert g is not None
    by_path = {f.path: f for f in series.files}
    slots: dict[Path, list[tuple[int, int]]] = {}
    for k, fr in enumerate(g.frames):
        slots.setdefault(fr.path, []).append((k, fr.frame))
    stack = np.empty((len(g.frames), g.rows, g.cols), dtype=dtype)
    # per slice: packed padding mask (1 bit per voxel) and rescaled padding value
    padding: dict[int, tuple[NDArray[np.uint8], float]] = {}
    min_real = [np.inf]

    def work(path: Path) -> None:
        header = by_path[path]
        entries = slots[path]
        raw = _read_file_frames(header, [f for _, f in entries])
        for (k, _f), plane in zip(entries, raw):
            fr = g.frames[k]
            if dtype == np.int16:
                if fr.intercept == 0.0 and plane.dtype == np.int16:
                    stack[k] = plane
                else:
                    wide = plane.astype(np.int32) + int(fr.intercept)
                    if wide.size and (wide.min() < -32768 or wide.max() > 32767):
                        raise _Int16Overflow
                    stack[k] = wide
            else:
                np.multiply(plane, fr.slope, out=stack[k], casting="unsafe")
                if fr.intercept:
                    stack[k] += fr.intercept
            if header.padding is not None:
                lo, hi = header.padding
                mask = (plane >= lo) & (plane <= hi)
                if mask.any():
                    padding[k] = (np.packbits(mask), float(fr.slope * lo + fr.intercept))
                    if not mask.all():
                        min_real[0] = min(min_real[0], float(stack[k][~mask].min()))

    workers = max(1, min(8, (os.cpu_count() or 2) * 2))
    paths = list(slots)
    total = len(paths)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(work, paths), start=1):
            if done % max(1, total // 50) == 0 or done == total:
                report(progress, done / total, "reading pixel data")
    warnings: list[str] = []
    if padding:
        count = 0
        pad_values = {v for _, v in padding.values()}
        for k in range(stack.shape[0]):
            if k not in padding and stack[k].size:
                min_real[0] = min(min_real[0], float(stack[k].min()))
        fill = min(min(pad_values), min_real[0])
        plane_size = g.rows * g.cols
        for k, (packed, _value) in padding.items():
            mask = np.unpackbits(packed, count=plane_size).astype(bool).reshape(g.rows, g.cols)
            stack[k][mask] = fill
            count += int(mask.sum())
        frac = 100.0 * count / stack.size
        note = "" if fill in pad_values else (
            f" (PixelPaddingValue {min(pad_values):g} lies above the darkest real voxel; "
            "padding set to that voxel's value)"
        )
        warnings.append(
            f"{frac:.1f}% of voxels are outside the scanned field of view (PixelPaddingValue); "
            f"set to {fill:g}, the image minimum — not air or tissue{note}"
        )
    return stack, warnings


def _volume_metadata(series: Series, root: Path) -> dict[str, Any]:
    first = series.files[0]
    meta: dict[str, Any] = dict(first.meta)
    meta["source"] = str(root)
    meta["n_files"] = len(series.files)
    if root.is_file() and len(series.files) > 1:
        meta["series_folder"] = str(root.parent)
    meta["sop_class"] = series.info.sop_class
    g = series.geometry
    if g is not None:
        meta["source_slice_positions_mm"] = [round(float(d), 4) for d in g.depth_mm]
        meta["gantry_tilt_deg"] = round(g.tilt_deg, 3)
        meta["resampled"] = g.needs_resampling
    return meta


def read_dicom_series(
    path: str | Path,
    *,
    series_uid: str | None = None,
    single_file: bool = False,
    progress: ProgressCallback | None = None,
) -> ImageVolume:
    """Read one DICOM series as an :class:`ImageVolume` (LPS, mm).

    Parameters
    ----------
    path : str or Path
        A folder (searched recursively) or a single file. A multi-frame file
        (enhanced CT/MR) is read on its own. A single-frame image file stands for
        its whole series: the files of its folder with the same SeriesInstanceUID
        are read with it, as dcm2niix does, and the volume's warnings say so
        (see :func:`scan_for_reading`).
    series_uid : str, optional
        SeriesInstanceUID to read. By default the largest CT/MR image series is
        chosen (CT before MR), ignoring localizers, secondary captures, dose
        reports and non-image objects.
    single_file : bool
        With a file as ``path``: read only that file, not the rest of its series.
    progress : ProgressCallback, optional
        Reports header reading, pixel reading and resampling.

    Returns
    -------
    ImageVolume
        Values after RescaleSlope/RescaleIntercept (HU for CT) as int16 when
        exact, else float32. The k axis points along the slice normal
        ``row_cos × col_cos``. Irregular series (gantry tilt, missing slices,
        uneven spacing) are resampled onto a regular orthogonal grid and the
        volume's ``warnings`` say what was done.

    Raises
    ------
    ImageReadError
        Missing path, no DICOM, unknown UID (the message lists the available
        ones), inconsistent series, undecodable or truncated pixel data, or
        a broken file that may belong to the series (the message names it).
    """
    root = Path(path)
    scan, notes = scan_for_reading(
        root, single_file=single_file, progress=subrange(progress, 0.0, 0.3)
    )
    series = group_series(scan)
    chosen = choose(series, series_uid, root)
    damaged_notes = _refuse_damaged(scan, chosen, series)
    bad = [f for f in chosen.files if f.problem]
    if bad:
        raise ImageReadError(
            f"{bad[0].path}: file of series {chosen.uid} cannot be used ({bad[0].problem}); "
            "the volume would be incomplete. Remove or replace the file and read again."
        )
    g = chosen.geometry
    assert g is not None
    for f in chosen.files:
        register_input(f.path)
    for fr in g.frames:
        check_rescale(fr.path, fr.slope, fr.intercept)
    dtype = _frame_stack_dtype(chosen)
    check_series_files(
        [(f.path, f.pixel_offset, f.n_frames, f.frames[0].rows, f.frames[0].cols,
          np.dtype(f.pixel_dtype)) for f in chosen.files if f.frames and f.pixel_dtype],
        n_frames_total=len(g.frames), rows=g.rows, cols=g.cols,
        out_shape=(g.nk, g.out_rows, g.out_cols) if g.needs_resampling
        else (len(g.frames), g.rows, g.cols),
        stack_itemsize=4, label=f"{root}: series {chosen.uid}",
    )
    try:
        stack, pad_warnings = _read_stack(chosen, dtype, subrange(progress, 0.3, 0.9))
    except _Int16Overflow:
        stack, pad_warnings = _read_stack(
            chosen, np.dtype(np.float32), subrange(progress, 0.3, 0.9)
        )
    warnings = notes + list(chosen.info.warnings) + damaged_notes + pad_warnings
    if scan.skipped:
        warnings.append(skipped_note(scan))
    if len(series) > 1:
        others = len(series) - 1
        warnings.append(
            f"{others} other series in {root.name or root} not read (see `ir-planner info`)"
        )
    if g.needs_resampling:
        report(progress, 0.9, "resampling onto a regular grid")
        fill = float(stack.min()) if stack.size else 0.0
        array: NDArray[Any] = resample_to_grid(stack, g, fill=fill)
        del stack
        warnings.append(
            f"voxels outside the acquired slices' field of view after resampling are set to "
            f"{fill:g} (the image minimum)"
        )
    else:
        array = stack
    report(progress, 1.0, "DICOM series read")
    return ImageVolume(
        array,
        g.index_to_lps.copy(),
        modality=chosen.info.modality,
        study_uid=chosen.info.study_uid,
        series_uid=chosen.uid,
        metadata=_volume_metadata(chosen, root),
        warnings=warnings,
    )


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
#: Problems of an image file that mean a damaged file (not another kind of image).
_DAMAGE_PROBLEMS = frozenset({"no pixel data", "no valid Rows/Columns"})


def _refuse_damaged(scan: DicomScan, chosen: Series, series: list[Series]) -> list[str]:
    """Stop on damaged DICOM files that may belong to ``chosen``; notes for the others.

    Damaged: files that look like DICOM but cannot be parsed (``scan.broken``) and
    files with the ``DICM`` marker that were skipped but end inside a data element.
    A damaged file whose first MiB names another series' UID (and not the chosen
    one) belongs to that series: it is listed in the warnings, not fatal.

    Raises
    ------
    ImageReadError
        Naming the first damaged file that may belong to the chosen series.
    """
    suspects = list(scan.broken)
    suffixes = {f.path.suffix.lower() for f in chosen.files}
    for path, why in scan.skipped:
        if looks_like_dicom_file(path):
            problem = truncation_problem(path)
            if not problem and meta_sop_class(path) in VOLUME_SOP_CLASSES:
                problem = f"an image object that cannot be used: {why}"  # intact ones can
            if problem:
                suspects.append((path, problem))
        elif path.suffix.lower() in suffixes and _size(path) < 132:
            # an empty or cut file named like the series' files: a slice may be missing
            suspects.append((path, f"only {_size(path)} bytes, named like the series' files"))
    for other in series:
        if other.uid == chosen.uid:
            continue
        for f in other.files:
            # a file cut or damaged inside its header can parse with a cut or garbled
            # SeriesInstanceUID and form a "series" of its own
            if not _UID.fullmatch(other.uid):
                suspects.append((f.path, f"damaged header: SeriesInstanceUID "
                                         f"{other.uid[:40]!r}... is not a valid UID"))
            elif f.sop_class in VOLUME_SOP_CLASSES and f.problem in _DAMAGE_PROBLEMS:
                suspects.append((f.path, f"damaged image object: {f.problem}"))
            elif f.problem or len(other.files) == 1:
                problem = truncation_problem(f.path)
                if problem:
                    suspects.append((f.path, problem))
    notes: list[str] = []
    mine = chosen.uid.encode("ascii", "ignore")
    damaged = {p for p, _ in suspects}
    others = [s.uid.encode("ascii", "ignore") for s in series
              if s.uid and s.uid != chosen.uid and any(f.path not in damaged for f in s.files)]
    for path, why in suspects:
        try:
            with open(path, "rb") as fh:
                head = fh.read(1 << 20)
        except OSError:
            head = b""
        if mine and mine not in head and any(o and o in head for o in others):
            notes.append(f"{path.name}: damaged file of another series ignored ({why})")
            continue
        where = "looks like part of series" if mine and mine in head else (
            "is a damaged DICOM file that may belong to series")
        raise ImageReadError(
            f"{path}: this file {where} {chosen.uid} but cannot be read ({why}); the volume "
            "would be incomplete. Remove or replace the file and read again."
        )
    return notes


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
