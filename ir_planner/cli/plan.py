"""``ir-planner plan IMAGE [--labels LABELS] --target X Y Z``: needle trajectories.

Evaluates a given trajectory (``--entry``) and/or searches the skin for safe,
diverse entry points (``--auto``); prints a table, writes the plan (``--out``) and
every evaluated candidate (``--candidates-out``). Coordinates are LPS mm.

Without ``--labels`` the image is segmented first (classic automatic segmentation:
body, bone, lung, airway, bowel gas, contrast vessels; a lesion grown from the
target point); the plan records that its labels were generated, and every
trajectory carries the segmentation's limits (e.g. vessels not avoided on a
non-contrast CT: such paths are never called "safe").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ir_planner.cli.common import parse_point, print_table, progress_printer
from ir_planner.core.catalog import Category
from ir_planner.core.errors import InputError, PlanError
from ir_planner.core.labels import LabelMap
from ir_planner.core.plan import CaseRef, Plan, StructureOverride
from ir_planner.core.progress import ProgressCallback, subrange
from ir_planner.core.volume import ImageVolume
from ir_planner.io.load import load_image
from ir_planner.io.segmentation import load_labels, save_labels
from ir_planner.planning.devices import Needle
from ir_planner.planning.engine import UNNAMED, PlanningEngine
from ir_planner.planning.metrics import TrajectoryMetrics, Verdict
from ir_planner.planning.search import REGIONS, SearchConstraints, SearchWeights
from ir_planner.segmentation.auto import (
    GAS_THRESHOLD_HU,
    UNCLASSIFIED_GAS,
    UNCLASSIFIED_GAS_MARGIN_MM,
    segment_for_planning,
)

#: Printed on stderr before the automatic segmentation runs.
AUTO_SEGMENT_MESSAGE = ("no --labels given: segmenting body, bone, lung, airway, bowel gas, "
                        "contrast vessels automatically...")

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``plan`` sub-command."""
    p = subparsers.add_parser(
        "plan",
        help="evaluate a needle trajectory and/or search safe entry points for a target",
        description="Plan straight needle paths on a segmented scan. Clearance = distance from "
        "the needle axis segment to a structure's voxel cells minus the needle's outer radius. "
        "Forbidden structures (vessels, bone, lung, airway, bowel, ducts, nerves by default; "
        "spleen and pancreas unless they hold the target) must be cleared by their margins. Without --labels the scan is segmented automatically "
        "first (body, bone, lung, airway, bowel gas, contrast vessels, the lesion at --target): "
        "coarser than a supplied segmentation, and vessels are NOT avoided on a non-contrast "
        "CT or MR. Coordinates are DICOM patient LPS in mm.",
    )
    p.add_argument("image", type=Path, help="image: DICOM folder/file or .nii.gz/.nrrd/.mha")
    p.add_argument("--labels", type=Path, default=None,
                   help="segmentation: label-map file, mask folder or DICOM SEG (default: "
                   "segment the image automatically, coarser: see the warnings it prints)")
    p.add_argument("--names", type=Path, default=None, help="names table for a label-map file")
    p.add_argument("--labels-out", type=Path, default=None, metavar="FILE",
                   help="without --labels: write the automatic segmentation here "
                   "(.nii.gz/.nrrd + names sidecar)")
    p.add_argument("--lesion-radius", type=float, default=None, metavar="MM",
                   help="without --labels: rough radius of the lesion at --target, mm")
    tgt = p.add_mutually_exclusive_group(required=True)
    tgt.add_argument("--target", type=float, nargs=3, metavar=("X", "Y", "Z"),
                     help="target point, LPS mm")
    tgt.add_argument("--target-structure", metavar="NAME",
                     help="use a point inside this structure (its centroid) as the target")
    p.add_argument("--entry", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="evaluate this entry point (LPS mm)")
    p.add_argument("--auto", action="store_true", help="search the skin for entry points")
    p.add_argument("--top", type=int, default=5, metavar="K",
                   help="number of diverse suggestions (default 5)")
    p.add_argument("--needle-length", type=float, default=150.0, metavar="MM",
                   help="usable needle length in mm (default 150)")
    p.add_argument("--gauge", type=int, default=17, metavar="G",
                   help="needle gauge, 13-22 (default 17 G; sets the outer radius from the "
                   "device catalog's tubing table)")
    p.add_argument("--max-cc-angle", type=float, default=None, metavar="DEG",
                   help="largest craniocaudal angle in degrees (0 = in-plane only)")
    p.add_argument("--exclude-region", action="append", default=[], choices=sorted(REGIONS),
                   help="skin region not to enter through (repeatable), e.g. posterior; "
                        "'table' = the side the patient lies on (from the DICOM "
                        "PatientPosition; posterior when unknown)")
    p.add_argument("--exclude-sphere", type=float, nargs=4, action="append", default=[],
                   metavar=("X", "Y", "Z", "R"),
                   help="exclude skin entries within R mm of the LPS point X Y Z (mm), e.g. "
                        "a wound or stoma (repeatable)")
    p.add_argument("--body-threshold", type=float, default=None, metavar="VALUE",
                   help="threshold (image units) for the body outline when the labels have "
                        "no body structure (default -300 HU on CT, automatic on MR)")
    p.add_argument("--min-organ-length", nargs=2, action="append", default=[],
                   metavar=("ORGAN", "MM"),
                   help="minimum length through an organ, e.g. liver 10 (repeatable)")
    p.add_argument("--min-separation", type=float, default=15.0, metavar="DEG",
                   help="minimum angle between suggestions (default 15°)")
    p.add_argument("--exact-candidates", action="store_true",
                   help="with --no-all-clearances: minimum clearance within the accuracy "
                        "contract for every candidate, also far from all structures (slower)")
    p.add_argument("--allow-reentry", action="store_true",
                   help="with --auto: also suggest paths that leave and re-enter the target's "
                        "organ (two capsule punctures, or through a cavity such as a "
                        "vertebra's spinal canal); rejected by default")
    p.add_argument("--allow", action="append", default=[], metavar="NAME",
                   help="allow a forbidden structure for this plan (repeatable), e.g. the "
                   "target's own bone for a bone biopsy: --allow vertebrae_L2 (recorded in "
                   "the plan's structure overrides)")
    p.add_argument("--plan", type=Path, default=None, metavar="PLAN",
                   help="start from this plan file (its structure overrides apply)")
    p.add_argument("--out", type=Path, default=None, help="write the plan JSON here (atomic)")
    p.add_argument("--all-clearances", action=argparse.BooleanOptionalAction, default=True,
                   help="with --auto: every candidate's clearance to every structure (one "
                        "clearance_<name>_mm column per structure in --candidates-out; "
                        "default on); --no-all-clearances computes the minimum clearance "
                        "only (faster)")
    p.add_argument("--candidates-out", type=Path, default=None, metavar="FILE.csv",
                   help="write one CSV row per evaluated candidate entry")
    p.add_argument("--json", action="store_true", help="print the trajectories as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ir-planner plan``."""
    if args.entry is None and not args.auto:
        raise InputError("give --entry X Y Z to evaluate a trajectory and/or --auto to search")
    if args.top < 1:
        raise InputError(f"--top must be ≥ 1; got {args.top}")
    auto_labels = args.labels is None
    if auto_labels and args.target_structure:
        raise InputError("--target-structure needs --labels: without a segmentation give the "
                         "target as --target X Y Z (LPS mm)")
    if auto_labels and args.names is not None:
        raise InputError("--names describes a --labels file; give --labels too, or drop --names")
    if not auto_labels:
        for value, what in ((args.labels_out, "--labels-out"),
                            (args.lesion_radius, "--lesion-radius")):
            if value is not None:
                raise InputError(f"{what} only applies without --labels (automatic "
                                 "segmentation); drop it or drop --labels")
    if args.lesion_radius is not None and not args.lesion_radius > 0:
        raise InputError(f"--lesion-radius must be > 0 mm; got {args.lesion_radius}")
    if args.max_cc_angle is not None and not 0 <= args.max_cc_angle <= 90:
        raise InputError(f"--max-cc-angle must be 0–90°; got {args.max_cc_angle}")
    if not 0 <= args.min_separation <= 180:
        raise InputError(f"--min-separation must be 0–180°; got {args.min_separation}")
    for path, what in ((args.out, "--out"), (args.candidates_out, "--candidates-out"),
                       (args.labels_out, "--labels-out")):
        if path is not None and not path.parent.exists():
            raise InputError(f"{what} {path}: folder {path.parent} does not exist")
    min_len: dict[str, float] = {}
    for organ, mm in args.min_organ_length:
        try:
            min_len[organ] = float(mm)
        except ValueError as exc:
            raise InputError(f"--min-organ-length {organ} {mm}: {mm!r} is not a number") from exc
        if not min_len[organ] >= 0:
            raise InputError(f"--min-organ-length {organ} {mm}: must be ≥ 0 mm")
    needle = Needle(gauge=args.gauge, usable_length_mm=args.needle_length)
    progress = progress_printer(args)
    plan = Plan.load(args.plan) if args.plan is not None else Plan()
    overrides = dict(plan.structure_overrides)
    for name in args.allow:
        current = overrides.get(name, StructureOverride())
        overrides[name] = current.model_copy(update={"forbidden": False})

    auto_info: dict[str, Any] | None = None
    if auto_labels:
        image = load_image(args.image, progress=subrange(progress, 0.0, 0.1))
        target = parse_point(args.target, "--target")
        assert target is not None
        labels, auto_info = auto_segment(image, target, lesion_radius_mm=args.lesion_radius,
                                         progress=subrange(progress, 0.1, 0.5))
        missing = sorted(set(min_len) - set(labels.names))
        if missing:
            raise InputError(
                f"--min-organ-length {', '.join(missing)}: the automatic segmentation has no "
                f"such structure (it has {', '.join(labels.names)}); supply --labels with "
                "the organ, or drop the option")
        if args.labels_out is not None:
            auto_info["labels_out"] = str(save_labels(labels, args.labels_out))
        engine_range = (0.5, 0.65)
    else:
        image = load_image(args.image, progress=subrange(progress, 0.0, 0.2))
        labels = load_labels(args.labels, image=image, names=args.names,
                             progress=subrange(progress, 0.2, 0.35))
        engine_range = (0.35, 0.6)
    engine = PlanningEngine(image, labels, overrides=overrides, needle=needle,
                            body_threshold=args.body_threshold,
                            progress=subrange(progress, *engine_range))
    label_warnings = labels_warnings(labels, engine)
    if args.target_structure:
        target = engine.structure_point(args.target_structure)
    else:
        target = parse_point(args.target, "--target")
    assert target is not None
    engine.check_target(target)
    target_structure = (engine.structure(args.target_structure).name
                        if args.target_structure else "")
    if auto_info is not None and auto_info.get("lesion"):
        target_structure = auto_info["lesion"]["name"]
    entry = parse_point(args.entry, "--entry")
    constraints = SearchConstraints(
        max_length_mm=needle.usable_length_mm, max_cc_angle_deg=args.max_cc_angle,
        excluded_regions=tuple(args.exclude_region),
        excluded_spheres=tuple(tuple(float(v) for v in sph) for sph in args.exclude_sphere),
        min_organ_length_mm=min_len,
        min_separation_deg=args.min_separation, allow_reentry=args.allow_reentry,
        exact_clearance=args.exact_candidates,
        all_clearances=args.all_clearances)

    results: list[tuple[str, str, TrajectoryMetrics]] = []
    if entry is not None:
        m = engine.evaluate(entry, target, max_cc_angle_deg=args.max_cc_angle,
                            min_organ_length_mm=min_len or None)
        results.append(("manual", "manual", m))
    search_result = None
    if args.auto:
        lo = engine_range[1]
        engine.precompute_search(progress=subrange(progress, lo, lo + 0.5 * (1 - lo)))
        search_result = engine.search(target, constraints, top_k=args.top,
                                      weights=SearchWeights(),
                                      progress=subrange(progress, lo + 0.5 * (1 - lo), 1.0))
        if args.candidates_out is not None:
            search_result.write_csv(args.candidates_out)
        if not search_result.suggestions and entry is None:
            written = (f" (every candidate and what ruled it out: {args.candidates_out})"
                       if args.candidates_out is not None else "")
            raise PlanError("no feasible path to the target: " + search_result.explain()
                            + written)
        for n, m in enumerate(search_result.suggestions, start=1):
            results.append((f"auto{n}", "auto", m))

    if auto_info is not None:
        for _, _, m in results:
            apply_segmentation_limits(m, auto_info)

    def change(pl: Plan) -> None:
        labels_path = (str(args.labels) if args.labels is not None
                       else auto_info.get("labels_out", "") if auto_info else "")
        pl.case = CaseRef(image_path=str(args.image), labels_path=labels_path,
                          names_path=str(args.names) if args.names is not None else "",
                          series_uid=image.series_uid, study_uid=image.study_uid,
                          patient_id=str(image.metadata.get("patient_id", "")),
                          description=pl.case.description if pl.case else "")
        pl.structure_overrides = overrides
        pl.target_structure = target_structure
        pl.target_lps = (float(target[0]), float(target[1]), float(target[2]))
        names = {t.name for t in pl.trajectories}
        for name, source, m in results:
            rec = engine.to_record(m, _unique(name, names), source=source)
            names.add(rec.name)
            pl.trajectories = [*pl.trajectories, rec]
        pl.settings = {**pl.settings, "planning": {
            "needle": needle.to_dict(), "constraints": constraints.to_dict(),
            "weights": SearchWeights().to_dict(), "caution_band_mm": engine.caution_band_mm,
            "body_outline": engine.body_source,
            "labels_source": ("automatic" if auto_info is not None else "file"),
            "automatic_segmentation": auto_info,
            "labels_warnings": label_warnings,
            "structures": {s.name: {"category": s.category.value, "forbidden": s.forbidden,
                                    "margin_mm": s.margin_mm} for s in engine.structures},
            "search": ({"candidates": search_result.n_candidates,
                        "feasible": int(search_result.feasible.sum()),
                        "summary": search_result.explain(),
                        "timings_s": {k: round(v, 3)
                                      for k, v in search_result.timings_s.items()}}
                       if search_result is not None else None),
        }}

    plan.apply("plan trajectories", change)
    if args.out is not None:
        plan.save(args.out)

    if args.json:
        print(json.dumps({name: {"entry_lps": [round(float(v), 3) for v in m.entry_lps],
                                 "target_lps": [round(float(v), 3) for v in m.target_lps],
                                 **m.to_dict()} for name, _, m in results}, indent=2))
    else:
        _print(results, target, search_result, engine)
        if auto_info is not None:
            for w in auto_info["warnings"]:
                print(f"WARNING: {w}")
    for w in label_warnings:  # after the results: an error stays one line
        print(f"WARNING: {w}", file=sys.stderr, flush=True)
    # with --json, stdout is the JSON document only (parseable as a whole)
    info = sys.stderr if args.json else sys.stdout
    if args.out is not None:
        print(f"plan written to {args.out}", file=info)
    if args.candidates_out is not None and search_result is not None:
        print(f"{search_result.n_candidates} candidates written to {args.candidates_out}",
              file=info)
    return 0


def auto_segment(image: ImageVolume, target_lps: Any, *, lesion_radius_mm: float | None = None,
                 progress: ProgressCallback | None = None,
                 log: Any = None) -> tuple[LabelMap, dict[str, Any]]:
    """Segment an image that came without labels, for planning to ``target_lps``.

    Runs :func:`ir_planner.segmentation.auto.segment_for_planning` (body, bone, lung,
    airway, bowel gas, contrast vessels), then grows the lesion from the target
    point; when no lesion is found there, the plan aims at the point itself.

    Parameters
    ----------
    image : ImageVolume
        CT (or MR: body outline only).
    target_lps : array_like, shape (3,)
        Target point (LPS mm), also the lesion seed.
    lesion_radius_mm : float, optional
        Rough lesion radius (mm) for the lesion growth.
    progress : ProgressCallback, optional
    log : callable, optional
        Receives each message line (default: print to stderr).

    Returns
    -------
    labels : LabelMap
        The generated structures (plus ``"lesion"`` when found), on the image grid.
    info : dict
        ``source`` ("automatic"), the segmentation report, ``lesion`` (or None),
        ``lesion_error`` (why no lesion), ``vessels_avoided``, ``airway_avoided`` and
        ``warnings`` (human-readable, the loudest first).
    """
    say = log if log is not None else (lambda m: print(m, file=sys.stderr, flush=True))
    say(AUTO_SEGMENT_MESSAGE)
    labels, seg_report = segment_for_planning(
        image, lesion_seed_lps=target_lps, lesion_radius_mm=lesion_radius_mm,
        lesion_required=False, progress=progress)
    lesion_info = seg_report["lesion"]
    lesion_error = seg_report["lesion_error"]
    gas = seg_report["unclassified_gas"]
    gas_ml, gas_parts = gas["volume_ml"], gas["components"]
    vessels, airway = seg_report["vessels_avoided"], seg_report["airway_avoided"]
    warnings: list[str] = []
    if not vessels:
        warnings.append(
            "VESSELS ARE NOT AVOIDED: the automatic segmentation found no contrast-enhanced "
            "vessels (non-contrast CT or MR), so no path is checked against arteries or "
            "veins. Check every path against the vessels yourself, or supply --labels with "
            "the vessels segmented.")
    warnings.append(
        "labels were generated automatically (classic methods): coarser than a supplied "
        "segmentation; organs (liver, kidney, ...), nerves and non-gas bowel are not segmented "
        "and are not avoided. Review the structures (write them with --labels-out).")
    if not airway:
        warnings.append("airways were not segmented: not avoided")
    warnings.extend(f"segmentation: {w}" for w in seg_report.get("warnings", []))
    if gas_parts:
        warnings.append(
            f"{gas_parts} gas pocket(s) inside the body ({gas_ml:.1f} ml, < "
            f"{GAS_THRESHOLD_HU:.0f} HU) belong to no automatic structure (e.g. a lung tip or "
            f"bowel loop the classic segmentation dropped): avoided as {UNCLASSIFIED_GAS!r} "
            f"with a {UNCLASSIFIED_GAS_MARGIN_MM:.0f} mm margin")
    if lesion_info is None:
        warnings.append(f"no lesion segmented at the target, planning to the point target "
                        f"({lesion_error})")
    else:
        d = lesion_info["diameters_mm"]
        say(f"lesion found at the target: {lesion_info['volume_ml']:.2f} ml, diameters "
            f"{d[0]:.1f} × {d[1]:.1f} × {d[2]:.1f} mm; used as the target structure "
            f"{lesion_info['name']!r}")
    for w in warnings:
        say(f"WARNING: {w}")
    info = {"source": "automatic", "segmentation": seg_report, "lesion": lesion_info,
            "unclassified_gas": gas, "lesion_error": lesion_error, "vessels_avoided": vessels,
            "airway_avoided": airway, "warnings": warnings}
    return labels, info


def apply_segmentation_limits(metrics: TrajectoryMetrics, info: dict[str, Any]) -> None:
    """Never call a path "safe" against structures that were not segmented.

    With automatic labels that have no vessels, a "safe" verdict becomes "caution"
    with the reason stated (in place).
    """
    if not info.get("vessels_avoided", True):
        metrics.reasons = [*metrics.reasons,
                           "vessels NOT segmented (automatic labels): vessel clearance "
                           "not checked"]
        if metrics.verdict == Verdict.SAFE:
            metrics.verdict = Verdict.CAUTION


def unnamed_structures(engine: PlanningEngine) -> list[str]:
    """Structures that came without a name (the catalog cannot classify them)."""
    return [s.name for s in engine.structures if UNNAMED.fullmatch(s.name)]


def unrecognised_structures(engine: PlanningEngine) -> list[str]:
    """Named structures the catalog does not recognise (category ``other``, not forbidden)."""
    return [s.name for s in engine.structures
            if not UNNAMED.fullmatch(s.name) and s.category == Category.OTHER
            and not s.forbidden]


def labels_warnings(labels: LabelMap, engine: PlanningEngine) -> list[str]:
    """What the reader and the engine had to do, and what the labels cannot protect.

    Printed on stderr and stored in the plan (``settings.planning.labels_warnings``):
    resampling onto the image grid, dropped structures, unnamed labels, no forbidden
    structure at all.
    """
    out = [*labels.warnings, *engine.warnings]
    unnamed = unnamed_structures(engine)
    if unnamed:
        shown = ", ".join(unnamed[:8]) + (", ..." if len(unnamed) > 8 else "")
        out.append(f"{len(unnamed)} structure(s) have no name ({shown}): nothing tells what "
                   "they are, so they are NOT avoided; give the names table (--names) or a "
                   "<stem>.labels.json sidecar")
    odd = unrecognised_structures(engine)
    if odd:
        shown = ", ".join(odd[:8]) + (", ..." if len(odd) > 8 else "")
        out.append(f"{len(odd)} structure name(s) not recognised ({shown}): category 'other', "
                   "NOT avoided; set their category in the plan (structure overrides) if they "
                   "matter")
    if not engine.forbidden:
        out.append("no structure in the labels is forbidden (vessels, bone, lung, airway, "
                   "bowel, nerves): no path is checked against anything, so none is called "
                   "safe")
    return out


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def _print(results: list[tuple[str, str, TrajectoryMetrics]], target: Any,
           search_result: Any, engine: PlanningEngine) -> None:
    print(f"target (LPS mm): {target[0]:.1f} {target[1]:.1f} {target[2]:.1f}  "
          f"in: {', '.join(engine.labels_at(target)) or '(no structure)'}")
    if search_result is not None:
        print(f"skin from: {engine.body_source}")
        print("search: " + search_result.explain())
    rows = []
    for name, _, m in results:
        closest = m.min_forbidden_clearance()
        rows.append([name, m.verdict.value, " ".join(f"{v:.1f}" for v in m.entry_lps),
                     m.length_mm, m.insertion_depth_mm, m.craniocaudal_angle_deg,
                     m.in_plane_angle_deg, m.approach,
                     closest[0] if closest else "-", closest[1] if closest else float("nan"),
                     m.pleural_crossings])
    print_table(["name", "verdict", "entry x y z (LPS mm)", "length (mm)", "depth (mm)",
                 "cc angle (°)", "in-plane (°)", "approach", "closest forbidden",
                 "clearance (mm)", "pleura (×)"], rows)
    for name, _, m in results:
        print(f"{name}: " + "; ".join(m.reasons))
        crossed = ", ".join(f"{c.name} {c.enter_mm_from_entry:.1f}–{c.exit_mm_from_entry:.1f} mm"
                            for c in m.crossings)
        print(f"  crosses: {crossed or 'nothing'}")
