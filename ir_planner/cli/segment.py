"""``ir-planner segment IMAGE --out LABELS``: structures from an image with no segmentation."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ir_planner.cli.common import parse_point, print_json, print_table, progress_printer
from ir_planner.core.catalog import Category
from ir_planner.core.errors import InputError
from ir_planner.core.fileio import atomic_write_json
from ir_planner.core.plugins import PluginError
from ir_planner.core.progress import subrange
from ir_planner.io.image_files import is_image_file
from ir_planner.io.load import load_image
from ir_planner.io.segmentation import save_labels
from ir_planner.segmentation.auto import segment_auto
from ir_planner.segmentation.lesion import segment_lesion
from ir_planner.segmentation.plugins import get_segmenter

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``segment`` sub-command."""
    parser = subparsers.add_parser(
        "segment",
        help="segment an image automatically (body, bone, lung, airway, bowel gas, contrast "
        "vessels) and optionally a lesion from one click",
        description="Automatic classic segmentation of a CT (body/skin without the table, bone, "
        "lungs, airways, gas-filled bowel, contrast-enhanced vessels when contrast is seen) or "
        "of an MR (body contour only). With --lesion X Y Z (LPS mm) a lesion is grown from "
        "that seed point and added as structure 'lesion'. Writes a label map plus its "
        "<stem>.labels.json sidecar.",
    )
    parser.add_argument("image", type=Path, help="DICOM folder/file or .nii.gz/.nrrd/.mha")
    parser.add_argument("--out", type=Path, required=True,
                        help="output label map (.nii.gz, .nii, .nrrd or .mha)")
    parser.add_argument("--lesion", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        default=None, help="seed point inside a lesion, LPS mm")
    parser.add_argument("--radius", type=float, default=None, metavar="MM",
                        help="rough lesion radius in mm (with --lesion)")
    parser.add_argument("--names-out", type=Path, default=None,
                        help="also write the structure table (name, label, layer, category) "
                        "as JSON here")
    parser.add_argument("--segmenter", default="classic",
                        help="segmenter plugin to use (default classic; 'totalsegmentator' if "
                        "installed; 'none' with --lesion for the lesion only)")
    parser.add_argument("--series-uid", default=None, help="DICOM series to read")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    parser.set_defaults(func=run)


def _check_output(path: Path, what: str) -> None:
    if path.exists() and path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise InputError(f"{what} {path}: folder {path.parent} does not exist")


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    if not is_image_file(args.out):
        raise InputError(f"--out {args.out}: unsupported suffix; use .nii.gz, .nii, .nrrd or "
                         ".mha")
    _check_output(args.out, "--out")
    if args.names_out is not None:
        _check_output(args.names_out, "--names-out")
    seed = parse_point(args.lesion, "--lesion")
    if args.radius is not None and seed is None:
        raise InputError("--radius needs --lesion X Y Z")
    if args.radius is not None and not args.radius > 0:
        raise InputError(f"--radius must be a positive number of mm; got {args.radius}")
    name = args.segmenter.lower()
    if name == "none" and seed is None:
        raise InputError("--segmenter none makes sense only with --lesion X Y Z")
    segmenter = None
    if name not in ("none", "classic"):  # a plugin's: unknown or unusable -> one line why
        try:
            segmenter = get_segmenter(name)
        except PluginError as exc:
            raise InputError(f"--segmenter {args.segmenter!r}: {exc}; or use 'none' with "
                             "--lesion") from exc
    progress = progress_printer(args)
    image = load_image(args.image, series_uid=args.series_uid,
                       progress=subrange(progress, 0.0, 0.15))
    if seed is not None and not bool(image.contains_world(seed)):
        raise InputError(f"--lesion {list(seed)} (LPS mm) is outside the image {args.image}")
    report_data: dict[str, Any] = {"image": str(args.image), "segmenter": name}
    if name == "classic":
        labels, rep = segment_auto(image, progress=subrange(progress, 0.15, 0.9))
        report_data["auto"] = rep.to_dict()
    elif name == "none":
        import numpy as np

        from ir_planner.core.labels import LabelMap

        labels = LabelMap([np.zeros(image.shape, dtype=np.uint8)], image, [])
    else:
        assert segmenter is not None
        labels = segmenter.run(image, subrange(progress, 0.15, 0.9))
    if seed is not None:
        lesion = segment_lesion(image, seed, radius_mm=args.radius)
        lesion_name = "lesion" if "lesion" not in labels.names else "lesion_click"
        labels = labels.with_structure(lesion_name, lesion.mask, category=Category.TARGET)
        report_data["lesion"] = {"name": lesion_name, "seed_lps_mm": list(seed),
                                 **lesion.to_dict()}
    if progress:
        progress(0.95, f"writing {args.out.name}")
    save_labels(labels, args.out)
    rows = labels.summary()
    if args.names_out is not None:
        _write_json(args.names_out, {"coordinate_system": "LPS", "structures": [
            {k: r[k] for k in ("name", "label", "layer", "category")} for r in rows]})
    if progress:
        progress(1.0, "done")
    warnings = list(dict.fromkeys(labels.warnings))
    report_data["structures"] = [{k: r[k] for k in ("name", "category", "voxels", "volume_ml")}
                                 for r in rows]
    report_data["warnings"] = warnings
    report_data["out"] = str(args.out)
    if args.json:
        print_json(report_data)
        return 0
    print_table(["structure", "voxels", "volume ml", "category"],
                [[r["name"], r["voxels"], float(r["volume_ml"]), r["category"]] for r in rows])
    if "lesion" in report_data:
        les = report_data["lesion"]
        d = les["diameters_mm"]
        print(f"lesion: {les['volume_ml']:.2f} ml, diameters {d[0]:.1f} × {d[1]:.1f} × "
              f"{d[2]:.1f} mm ({les['polarity']}dense, {les['elapsed_s']:.2f} s)")
    for w in warnings:
        print(f"warning: {w}")
    print(f"wrote {args.out}")
    return 0


def _write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, what="--names-out")
