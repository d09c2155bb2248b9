"""``ir-planner labels PATH``: the structures of a segmentation and their planning defaults."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ir_planner.cli.common import print_json, print_table, progress_printer
from ir_planner.core.progress import subrange
from ir_planner.io.load import load_image
from ir_planner.io.segmentation import load_labels

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``labels`` sub-command."""
    parser = subparsers.add_parser(
        "labels",
        help="list the structures of a segmentation (label map, mask folder, DICOM SEG, "
        "RTSTRUCT) with volumes, categories and safety margins",
        description="Read a segmentation and list every structure: label and layer, voxel "
        "count, volume in ml, category, default safety margin in mm and whether needles must "
        "avoid it. PATH is a label-map file (.nii.gz/.nrrd/.mha, names from <stem>.labels.json, "
        "--names or a Slicer .seg.nrrd header), a folder with one mask per structure "
        "(TotalSegmentator), a DICOM SEG or an RTSTRUCT (needs --image).",
    )
    parser.add_argument("path", type=Path, help="segmentation file or mask folder")
    parser.add_argument("--image", type=Path, default=None,
                        help="image (DICOM folder/file or .nii.gz/.nrrd/.mha) the segmentation "
                        "belongs to; results are put on its grid")
    parser.add_argument("--names", type=Path, default=None,
                        help="names table for a label-map file (JSON, TotalSegmentator "
                        "classes.json or ITK-SNAP label description)")
    parser.add_argument("--task", default=None,
                        help="task of a multi-task names table (TotalSegmentator: total, "
                        "total_mr, total_v1; default total)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the structure table and the reader's warnings."""
    progress = progress_printer(args)
    image = None
    if args.image is not None:
        image = load_image(args.image, progress=subrange(progress, 0.0, 0.5))
    labelmap = load_labels(
        args.path, image=image, names=args.names, task=args.task,
        progress=subrange(progress, 0.5 if image is not None else 0.0, 1.0),
    )
    rows = labelmap.summary()
    grid = labelmap.grid.summary()
    if args.json:
        print_json({
            "path": str(args.path),
            "grid": {k: grid[k] for k in ("size_ijk", "spacing_mm", "origin_lps_mm", "orientation")},
            "layers": len(labelmap.layers),
            "voxel_volume_ml": labelmap.grid.voxel_volume_ml,
            "structures": rows,
            "warnings": list(labelmap.warnings),
        })
        return 0
    size = "×".join(str(v) for v in grid["size_ijk"])
    spacing = "×".join(f"{v:.4g}" for v in grid["spacing_mm"])
    print(f"{args.path}: {len(rows)} structures in {len(labelmap.layers)} layer(s) on a "
          f"{size} grid of {spacing} mm ({grid['orientation']})")
    print_table(
        ["name", "label", "layer", "voxels", "volume_ml", "category", "margin_mm", "forbidden"],
        [[r["name"], r["label"], r["layer"], r["voxels"], r["volume_ml"], r["category"],
          r["margin_mm"], "yes" if r["forbidden"] else "no"] for r in rows],
    )
    for warning in labelmap.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
