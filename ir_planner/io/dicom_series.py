"""DICOM series: what a file, folder or tree holds, and which series to read.

* :func:`list_series` — the series in a file, folder or tree (headers only);
* :func:`scan_for_reading` — a single-frame file brings the rest of its series;
* :func:`choose_series` — the series read by default (largest CT/MR volume).

Reading pixels is :mod:`ir_planner.io.dicom` (which re-exports these names).
"""

from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import UID

from ir_planner.core.errors import ImageReadError
from ir_planner.core.progress import ProgressCallback
from ir_planner.io.dicom_geometry import SeriesGeometry, analyse_frames, orientation_code
from ir_planner.io.dicom_scan import (
    VOLUME_SOP_CLASSES,
    DicomScan,
    FileHeader,
    read_file_header,
    scan_dicom,
)

__all__ = [
    "SeriesInfo",
    "Series",
    "group_series",
    "broken_for",
    "list_series",
    "series_from_scan",
    "skipped_note",
    "choose_series",
    "choose",
    "scan_for_reading",
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
class Series:
    """One series of a scan: its files, geometry (None if not a volume) and summary."""

    uid: str
    files: list[FileHeader]
    geometry: SeriesGeometry | None
    problem: str
    info: SeriesInfo


def group_series(scan: DicomScan) -> list[Series]:
    by_uid: dict[str, list[FileHeader]] = {}
    for h in scan.files:
        by_uid.setdefault(h.series_uid, []).append(h)
    out: list[Series] = []
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
        broken = broken_for(scan, uid)
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
        out.append(Series(uid, files, geometry, problem, info))
    out.sort(key=lambda s: (s.info.study_uid, s.info.series_number or 0, s.uid))
    return out


def broken_for(scan: DicomScan, series_uid: str) -> list[tuple[Path, str]]:
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
    group = next(s for s in group_series(combined) if s.uid == named.series_uid)
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
    return [s.info for s in group_series(scan)]


def skipped_note(scan: DicomScan) -> str:
    """One line about non-DICOM files skipped by the scan ("" if none)."""
    if not scan.skipped:
        return ""
    path, why = scan.skipped[0]
    more = f" and {len(scan.skipped) - 1} more" if len(scan.skipped) > 1 else ""
    return f"skipped {len(scan.skipped)} non-DICOM file(s): {path.name} ({why}){more}"


def choose(series: list[Series], series_uid: str | None, root: Path) -> Series:
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
