"""Compare ``ir-planner convert`` with dcm2niix on any DICOM folders or files.

Run from the repository root (dcm2niix from PyPI must be installed)::

    python bench/compare_dcm2niix.py /data/scan1 /data/scan2/IM0001.dcm
    python bench/compare_dcm2niix.py /data/study --series 1.2.840... --threshold 300
    python bench/compare_dcm2niix.py /data/scan1 --json

For every PATH: IR Planner's volume (``ir-planner convert`` to NIfTI, read back
with nibabel) and dcm2niix's output for the same series (``_Tilt_Eq`` / ``_Eq``
when dcm2niix writes one) are compared in world space (LPS, mm): intensity
correlation at common world points, distance between the centroids of the bright
voxels, corner positions and axis directions. See ``tests/io/dcm2niix_compare.py``
for the exact definitions. Suggested acceptance: r ≥ 0.99 (≥ 0.95 for tilted or
unevenly spaced series, which both resample), centroid ≤ 1 mm, axis angle ≈ 0°
(corner distance ≈ 0 mm unless the series was resampled).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.io.dcm2niix_compare import compare_with_dcm2niix  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Print one row per PATH; exit 1 if any comparison failed to run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="DICOM folders or files")
    parser.add_argument("--series", default=None, help="SeriesInstanceUID (default: ours)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="bright-voxel threshold (default: 98th percentile)")
    parser.add_argument("--variant", default="auto",
                        choices=["auto", "plain", "_Tilt_Eq", "_Eq", "_Tilt"],
                        help="dcm2niix output to compare with (auto: _Tilt_Eq > _Eq > _Tilt > "
                        "plain)")
    parser.add_argument("--direct", action="store_true",
                        help="compare the in-memory volume instead of convert's NIfTI")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    header = ["path", "ours i×j×k", "dcm2niix i×j×k", "r", "centroid mm", "corner mm",
              "axis °", "dcm2niix file"]
    rows: list[list[str]] = []
    results = []
    failed = 0
    for path in args.paths:
        try:
            agreement = compare_with_dcm2niix(
                path, series_uid=args.series, threshold=args.threshold,
                via_convert=not args.direct, variant=args.variant,
            )
        except Exception as exc:  # noqa: BLE001 - report and go on with the next path
            failed += 1
            short = "/".join(path.parts[-2:])
            why = str(exc).replace(str(path), "").lstrip(": ")
            rows.append([short, "-", "-", "-", "-", "-", "-", f"FAILED: {why}"[:150]])
            results.append({"path": str(path), "error": str(exc)})
            continue
        rows.append(agreement.row())
        results.append(agreement.as_dict())
    if args.json:
        print(json.dumps(results, indent=2))
        return 1 if failed else 0
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
    for res in results:
        for note in res.get("notes", []):
            print(f"  {Path(res['path']).name}: dcm2niix: {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
