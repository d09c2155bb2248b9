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
* a file that looks like DICOM but cannot be parsed, and whose bytes contain the
  chosen series' UID, stops the read with an :class:`ImageReadError` naming it
  (a slice of the series could be missing otherwise);
* a file of the chosen series whose pixel data cannot be decoded stops the read
  with an error naming the file.
"""

from __future__ import annotations

import os
import warnings as _warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.uid import UID

from ir_planner.core.errors import ImageReadError
from ir_planner.core.progress import ProgressCallback, report, subrange
from ir_planner.core.volume import ImageVolume
from ir_planner.io.dicom_geometry import (
    SeriesGeometry,
    analyse_frames,
    orientation_code,
    resample_to_grid,
)
from ir_planner.io.dicom_scan import (
    VOLUME_SOP_CLASSES,
    DicomScan,
    FileHeader,
    read_file_header,
    scan_dicom,
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


@dataclass(frozen=True)
class SeriesInfo:
    """Summary of one DICOM series (from headers only).

    Attributes
    ----------
    study_uid, series_uid : str
        DICOM UIDs.
    modality : str
        DICOM modality ("CT", "MR", "SEG", ...).
    description : str
        SeriesDescription.
    series_number : int or None
        SeriesNumber.
    sop_class : str
        SOP class name, e.g. "CT Image Storage".
    n_files, n_frames : int
        Files in the series and image frames (slices) in them.
    size_ijk : tuple of int or None
        Output grid size (columns, rows, slices) the volume would have.
    spacing_mm : tuple of float or None
        Output spacing (column, row, slice) in mm.
    orientation : str
        Orientation code of the output index axes, e.g. "LPS".
    patient_position : str
        PatientPosition (HFS, FFS, ...).
    image_type : str
        ImageType values joined by ``\\``.
    is_volume : bool
        Whether :func:`read_dicom_series` can read it as a 3-D volume.
    is_localizer : bool
        A scout / localizer series (ignored when choosing the default series).
    problem : str
        Why it is not a volume ("" if it is).
    warnings : tuple of str
        Tilt, uneven spacing, missing slices, ignored frames, skipped files.
    files : tuple of Path
        The files of the series.
    """

    study_uid: str
    series_uid: str
    modality: str
    description: str
    series_number: int | None
    sop_class: str
    n_files: int
    n_frames: int
    size_ijk: tuple[int, int, int] | None
    spacing_mm: tuple[float, float, float] | None
    orientation: str
    patient_position: str
    image_type: str
    is_volume: bool
    is_localizer: bool
    problem: str
    warnings: tuple[str, ...]
    files: tuple[Path, ...]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly dictionary (paths as strings, first file only)."""
        return {
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "modality": self.modality,
            "description": self.description,
            "series_number": self.series_number,
            "sop_class": self.sop_class,
            "n_files": self.n_files,
            "n_frames": self.n_frames,
            "size_ijk": list(self.size_ijk) if self.size_ijk else None,
            "spacing_mm": [round(s, 6) for s in self.spacing_mm] if self.spacing_mm else None,
            "orientation": self.orientation,
            "patient_position": self.patient_position,
            "image_type": self.image_type,
            "is_volume": self.is_volume,
            "is_localizer": self.is_localizer,
            "problem": self.problem,
            "warnings": list(self.warnings),
            "first_file": str(self.files[0]) if self.files else "",
        }


@dataclass
class _Series:
    uid: str
    files: list[FileHeader]
    geometry: SeriesGeometry | None
    problem: str
    info: SeriesInfo


def _group(scan: DicomScan) -> list[_Series]:
    by_uid: dict[str, list[FileHeader]] = {}
    for h in scan.files:
        by_uid.setdefault(h.series_uid, []).append(h)
    out: list[_Series] = []
    for uid, files in by_uid.items():
        first = files[0]
        label = f"series {uid or '(no SeriesInstanceUID)'}"
        problem = ""
        warnings: list[str] = []
        geometry: SeriesGeometry | None = None
        good = [f for f in files if not f.problem]
        bad = [f for f in files if f.problem]
        if not uid:
            problem = "no SeriesInstanceUID"
        elif not good:
            problem = f"{first.path.name}: {bad[0].problem}"
        else:
            if bad:
                warnings.append(
                    f"{len(bad)} file(s) of this series cannot be used: "
                    f"{bad[0].path.name}: {bad[0].problem}"
                )
            frames = [fr for f in good for fr in f.frames]
            try:
                geometry = analyse_frames(frames, label=label)
                warnings.extend(geometry.warnings)
            except ImageReadError as exc:
                problem = str(exc).removeprefix(f"{label}: ")
        broken = _broken_for(scan, uid)
        if broken:
            warnings.append(
                f"{len(broken)} unreadable DICOM file(s) may belong to this series: "
                f"{broken[0][0].name}: {broken[0][1]}"
            )
        tilt = [f.gantry_tilt_deg for f in files if f.gantry_tilt_deg]
        if tilt and geometry is not None and geometry.tilt_deg == 0.0:
            warnings.append(
                f"GantryDetectorTilt says {tilt[0]:g}° but the slice positions show no tilt "
                "(positions already corrected by the scanner); used as is"
            )
        if geometry is not None:
            size = (geometry.out_cols, geometry.out_rows, geometry.nk)
            spacing = geometry.spacing_mm
            direction = geometry.index_to_lps[:3, :3] / np.array(spacing)[np.newaxis, :]
            orient = orientation_code(direction)
        else:
            size, spacing, orient = None, None, ""
        sop = first.sop_class
        info = SeriesInfo(
            study_uid=first.study_uid,
            series_uid=uid,
            modality=first.modality,
            description=first.description,
            series_number=first.series_number,
            sop_class=UID(sop).name if sop else "",
            n_files=len(files),
            n_frames=sum(len(f.frames) for f in good) if good else sum(f.n_frames for f in files),
            size_ijk=size,
            spacing_mm=spacing,
            orientation=orient,
            patient_position=first.patient_position,
            image_type="\\".join(first.image_type),
            is_volume=geometry is not None and not problem,
            is_localizer=all(f.is_localizer for f in files),
            problem=problem,
            warnings=tuple(warnings),
            files=tuple(f.path for f in files),
        )
        out.append(_Series(uid, files, geometry, problem, info))
    out.sort(key=lambda s: (s.info.study_uid, s.info.series_number or 0, s.uid))
    return out


def _broken_for(scan: DicomScan, series_uid: str) -> list[tuple[Path, str]]:
    """Broken files whose raw bytes mention ``series_uid``."""
    if not series_uid or not scan.broken:
        return []
    needle = series_uid.encode("ascii", "ignore")
    hits = []
    for path, why in scan.broken:
        try:
            with open(path, "rb") as fp:
                if needle in fp.read(1 << 20):
                    hits.append((path, why))
        except OSError:
            hits.append((path, why))
    return hits


def scan_for_reading(
    path: str | Path,
    *,
    single_file: bool = False,
    progress: ProgressCallback | None = None,
) -> tuple[DicomScan, list[str]]:
    """Scan ``path``; a single-frame image file brings the rest of its series.

    A folder is scanned recursively. A single file that is one frame of a
    classic CT/MR/PET series stands for its whole series, as in dcm2niix: the
    other files *in the same folder* (not sub-folders) with the same
    SeriesInstanceUID are added. Copies of the same image (same
    SOPInstanceUID, e.g. the same slice in another transfer syntax) are
    ignored. If the files found do not form one volume with it (duplicated
    positions, other orientations), the file is read alone and a note says why.
    A multi-frame file (enhanced CT/MR) is always read alone.

    Parameters
    ----------
    path : str or Path
        A DICOM file or a folder.
    single_file : bool
        Read only the given file, never its folder.
    progress : ProgressCallback, optional
        Header-reading progress.

    Returns
    -------
    scan : DicomScan
        The files to read.
    notes : list of str
        What was done (empty when ``path`` is a folder or the file was read alone
        for lack of other files); meant for the volume's warnings.
    """
    root = Path(path)
    scan = scan_dicom(root, progress=progress)
    if single_file or not root.is_file() or len(scan.files) != 1:
        return scan, []
    named = scan.files[0]
    if (named.n_frames > 1 or not named.series_uid or named.problem
            or named.sop_class not in VOLUME_SOP_CLASSES):
        return scan, []
    folder = root.parent
    seen = {named.series_uid}
    sops = {named.sop_instance_uid} if named.sop_instance_uid else set()
    siblings: list[FileHeader] = []
    broken: list[tuple[Path, str]] = []
    copies = 0
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return scan, []
    for p in entries:
        if p == root or p.name.startswith(".") or not p.is_file():
            continue
        with _warnings.catch_warnings():  # pydicom's complaints about unrelated files
            _warnings.simplefilter("ignore")
            header, problem, dicom_like = read_file_header(p, seen)
        if header is None:
            if dicom_like:
                broken.append((p, problem))
            continue
        if header.series_uid != named.series_uid:
            continue
        if header.sop_instance_uid and header.sop_instance_uid in sops:
            copies += 1
            continue
        sops.add(header.sop_instance_uid)
        siblings.append(header)
    copy_note = (
        [f"{copies} copy(ies) of the same image(s) (same SOPInstanceUID) in {folder} ignored"]
        if copies else []
    )
    if not siblings:
        return scan, copy_note
    combined = DicomScan(root=root, files=[named, *siblings], skipped=[], broken=broken)
    group = next(s for s in _group(combined) if s.uid == named.series_uid)
    if group.problem or group.geometry is None:
        return scan, [
            f"{root.name}: {len(siblings)} other file(s) in {folder} share its SeriesInstanceUID "
            f"but do not form one volume with it ({group.problem}); this file was read alone"
        ]
    return combined, [
        f"{root.name} is one image of a series: read the whole series from its folder "
        f"{folder} ({len(siblings) + 1} files with SeriesInstanceUID {named.series_uid}), "
        "as dcm2niix does; use --single-file (single_file=True) to read only this file",
        *copy_note,
    ]


def list_series(
    path: str | Path,
    *,
    single_file: bool = False,
    progress: ProgressCallback | None = None,
) -> list[SeriesInfo]:
    """List the DICOM series in a file, a folder or a folder tree.

    Only headers are read (``stop_before_pixels``). Non-image objects (SEG,
    RTSTRUCT, SR, dose reports) are listed with ``is_volume=False``.

    Parameters
    ----------
    path : str or Path
        A DICOM file or a folder (searched recursively). A single-frame image file
        stands for its whole series in its folder (see :func:`scan_for_reading`).
    single_file : bool
        List only the given file.
    progress : ProgressCallback, optional
        Header-reading progress.

    Returns
    -------
    list of SeriesInfo
        Sorted by study, series number and UID.

    Raises
    ------
    ImageReadError
        If the path does not exist or holds no readable DICOM file.
    """
    return series_from_scan(scan_for_reading(path, single_file=single_file, progress=progress)[0])


def series_from_scan(scan: DicomScan) -> list[SeriesInfo]:
    """The series of a :func:`scan_dicom` result (see :func:`list_series`)."""
    return [s.info for s in _group(scan)]


def skipped_note(scan: DicomScan) -> str:
    """One line about non-DICOM files skipped by the scan ("" if none)."""
    if not scan.skipped:
        return ""
    path, why = scan.skipped[0]
    more = f" and {len(scan.skipped) - 1} more" if len(scan.skipped) > 1 else ""
    return f"skipped {len(scan.skipped)} non-DICOM file(s): {path.name} ({why}){more}"


def _choose(series: list[_Series], series_uid: str | None, root: Path) -> _Series:
    if series_uid is not None:
        for s in series:
            if s.uid == series_uid:
                if s.problem or s.geometry is None:
                    raise ImageReadError(
                        f"{root}: series {series_uid} cannot be read as a volume: "
                        f"{s.problem or 'no image frames'}"
                    )
                return s
        available = "; ".join(
            f"{s.uid} ({s.info.modality}, {s.info.n_frames} frame(s), "
            f"{s.info.description or 'no description'})"
            for s in series
        )
        raise ImageReadError(
            f"{root}: no series with UID {series_uid}; available series: {available}"
        )
    infos = [s.info for s in series]
    best = choose_series(infos)
    if best is None:
        reasons = "; ".join(
            f"{s.uid or '(no UID)'} ({s.info.modality or '?'}): {s.problem}" for s in series[:5]
        )
        raise ImageReadError(f"{root}: no CT/MR image series that forms a volume ({reasons})")
    return next(s for s in series if s.info is best)


def choose_series(infos: list[SeriesInfo]) -> SeriesInfo | None:
    """The series read by default: the largest CT/MR volume that is not a localizer.

    Ranking: not a localizer, then CT before MR, then most frames, then largest
    frame. If there is no CT/MR volume, the largest other readable volume (PET).

    Returns
    -------
    SeriesInfo or None
        None if no series forms a volume.
    """
    candidates = [
        s for s in infos if s.is_volume and not s.is_localizer and s.modality in ("CT", "MR")
    ]
    if not candidates:
        candidates = [s for s in infos if s.is_volume]
    if not candidates:
        return None

    def rank(s: SeriesInfo) -> tuple[int, int, int, int]:
        size = s.size_ijk or (0, 0, 0)
        return (int(not s.is_localizer), int(s.modality == "CT"), s.n_frames, size[0] * size[1])

    return max(candidates, key=rank)


def _frame_stack_dtype(series: _Series) -> np.dtype:
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
    series: _Series, dtype: np.dtype, progress: ProgressCallback | None
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


def _volume_metadata(series: _Series, root: Path) -> dict[str, Any]:
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
    series = _group(scan)
    chosen = _choose(series, series_uid, root)
    broken = _broken_for(scan, chosen.uid)
    if broken:
        p, why = broken[0]
        raise ImageReadError(
            f"{p}: this file looks like part of series {chosen.uid} but cannot be read ({why}); "
            "the volume would be incomplete. Remove or replace the file and read again."
        )
    bad = [f for f in chosen.files if f.problem]
    if bad:
        raise ImageReadError(
            f"{bad[0].path}: file of series {chosen.uid} cannot be used ({bad[0].problem}); "
            "the volume would be incomplete. Remove or replace the file and read again."
        )
    g = chosen.geometry
    assert g is not None
    dtype = _frame_stack_dtype(chosen)
    try:
        stack, pad_warnings = _read_stack(chosen, dtype, subrange(progress, 0.3, 0.9))
    except _Int16Overflow:
        stack, pad_warnings = _read_stack(
            chosen, np.dtype(np.float32), subrange(progress, 0.3, 0.9)
        )
    warnings = notes + list(chosen.info.warnings) + pad_warnings
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
