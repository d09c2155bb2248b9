"""``ir-planner convert PATH OUT``: write the planning volume as NIfTI/NRRD/MHA."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from ir_planner.cli.common import progress_printer
from ir_planner.core.errors import InputError
from ir_planner.io.image_files import write_image_file
from ir_planner.io.load import load_image

__all__ = ["register", "run", "OUTPUT_SUFFIXES"]

OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def register(subparsers: Any) -> None:
    """Add the ``convert`` sub-command."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a DICOM series (or image file) to .nii.gz/.nrrd/.mha, geometry preserved",
        description="Read the volume the project would plan on (by default the largest CT/MR "
        "series; tilted or unevenly spaced series are resampled onto a regular orthogonal grid) "
        "and write it as NIfTI (.nii.gz/.nii, RAS affine with qform/sform as written by "
        "SimpleITK), NRRD or MetaImage.",
    )
    parser.add_argument("path", type=Path,
                        help="DICOM folder or file (a single-frame file brings the rest of its "
                        "series from its folder, like dcm2niix), or an image file")
    parser.add_argument("out", type=Path, help="output file (.nii.gz, .nii, .nrrd or .mha)")
    parser.add_argument("--series", metavar="UID", default=None,
                        help="SeriesInstanceUID to convert (see `ir-planner info`)")
    parser.add_argument("--single-file", action="store_true",
                        help="with a DICOM file as PATH: convert only that file, not its series")
    parser.set_defaults(func=run)


def _check_output(out: Path) -> None:
    name = out.name.lower()
    if not any(name.endswith(s) for s in OUTPUT_SUFFIXES):
        raise InputError(
            f"output {out}: unsupported suffix; use one of {', '.join(OUTPUT_SUFFIXES)}"
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output {out}: folder {parent} does not exist")
    try:  # a real write test (os.access is wrong for root and some file systems)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".irp-write-test-"):
            pass
    except OSError as exc:
        raise InputError(
            f"output {out}: folder {parent} is not writable ({exc.strerror or exc})"
        ) from exc
    if out.is_dir():
        raise InputError(f"output {out} is a folder; give a file name")


def run(args: argparse.Namespace) -> int:
    """Convert and print a one-line summary plus the reader's warnings."""
    out: Path = args.out
    _check_output(out)
    volume = load_image(args.path, series_uid=args.series, single_file=args.single_file,
                        progress=progress_printer(args))
    write_image_file(volume, out)
    size = "×".join(str(s) for s in volume.shape_ijk)
    spacing = "×".join(f"{s:.4g}" for s in volume.spacing_mm)
    print(
        f"wrote {out}: {volume.modality or 'image'} {size} voxels, {spacing} mm, "
        f"{volume.orientation_code()}, {volume.array.dtype}"
    )
    for warning in volume.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
