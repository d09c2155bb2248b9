"""``ir-planner info PATH``: what a DICOM folder/file or an image file holds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ir_planner.cli.common import print_json, print_table, progress_printer
from ir_planner.io.dicom import choose_series, scan_for_reading, series_from_scan, skipped_note
from ir_planner.io.image_files import is_image_file
from ir_planner.io.load import check_input_path, image_file_info

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``info`` sub-command."""
    parser = subparsers.add_parser(
        "info",
        help="list DICOM studies/series or describe an image file (size, spacing, orientation)",
        description="List the DICOM studies and series under PATH (headers only) with size, "
        "spacing in mm, orientation code, patient position, modality and warnings (gantry "
        "tilt, uneven spacing, missing slices), or describe a NIfTI/NRRD/MHA file. "
        "The series marked '*' is the one `convert` and planning use by default.",
    )
    parser.add_argument("path", type=Path, help="DICOM folder or file, or .nii.gz/.nrrd/.mha")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--single-file", action="store_true",
                        help="with a DICOM file as PATH: describe only that file, not its series")
    parser.set_defaults(func=run)


def _fmt_triplet(values: Any, fmt: str = "{:.3g}") -> str:
    if not values:
        return "-"
    return "×".join(fmt.format(v) for v in values)


def run(args: argparse.Namespace) -> int:
    """Print the series table (or the image file summary)."""
    path: Path = args.path
    check_input_path(path)
    if path.is_file() and is_image_file(path):
        info = image_file_info(path)
        if args.json:
            print_json({"kind": "image", **info})
            return 0
        print(f"image file  {info['path']}")
        print(f"size (i×j×k)       {_fmt_triplet(info['size_ijk'], '{}')} voxels")
        print(f"spacing            {_fmt_triplet(info['spacing_mm'], '{:.4g}')} mm")
        print(f"origin (LPS)       {', '.join(f'{v:.2f}' for v in info['origin_lps_mm'])} mm")
        print(f"orientation        {info['orientation']}")
        print(f"pixel type         {info['pixel_type']}")
        return 0
    scan, notes = scan_for_reading(
        path, single_file=getattr(args, "single_file", False), progress=progress_printer(args)
    )
    infos = series_from_scan(scan)
    default = choose_series(infos)
    skipped = skipped_note(scan)
    if args.json:
        print_json(
            {
                "kind": "dicom",
                "path": str(path),
                "notes": notes,
                "default_series_uid": default.series_uid if default else None,
                "skipped_files": [[str(p), why] for p, why in scan.skipped],
                "unreadable_dicom_files": [[str(p), why] for p, why in scan.broken],
                "series": [s.summary() for s in infos],
            }
        )
        return 0
    studies = sorted({s.study_uid for s in infos})
    print(f"{path}: {len(studies)} study(ies), {len(infos)} series")
    for note in notes:
        print(f"  note: {note}")
    rows = []
    for s in infos:
        rows.append(
            [
                "*" if s is default else "",
                s.series_number if s.series_number is not None else "-",
                s.modality or "-",
                s.n_frames,
                _fmt_triplet(s.size_ijk, "{}"),
                _fmt_triplet(s.spacing_mm, "{:.3g}"),
                s.orientation or "-",
                s.patient_position or "-",
                (s.description or "")[:28] or "-",
                s.series_uid,
            ]
        )
    print_table(
        ["", "#", "mod", "frames", "size i×j×k", "spacing mm", "orient", "pos",
         "description", "series UID"],
        rows,
    )
    for s in infos:
        notes = ([f"not a volume: {s.problem}"] if s.problem else []) + list(s.warnings)
        if s.is_localizer:
            notes.insert(0, "localizer/scout (not used for planning)")
        for note in notes:
            print(f"  series {s.series_number if s.series_number is not None else '?'} "
                  f"({s.modality}): {note}")
    if skipped:
        print(f"  {skipped}")
    for p, why in scan.broken:
        print(f"  unreadable DICOM file {p}: {why}")
    if default is None:
        print("no series forms a CT/MR volume")
    return 0
