"""``ir-planner ablate``: ablation zones, coverage and margins on a plan's trajectories."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ir_planner.cli.common import print_json, print_table, progress_printer
from ir_planner.core.errors import InputError, IRPlannerError, PlanError
from ir_planner.core.fileio import allow_in_place
from ir_planner.core.plan import Plan, TrajectoryRecord
from ir_planner.core.progress import subrange
from ir_planner.planning.ablation import (
    Candidate,
    CriticalModel,
    OptimizationResult,
    Probe,
    TumourModel,
    evaluate,
    load_catalog,
    optimize_multi,
    optimize_single,
    zone_for,
)

__all__ = ["register", "run"]

#: Structures within this distance (mm) of the tumour surface are sampled for damage.
CRITICAL_REACH_MM = 60.0


def register(subparsers: Any) -> None:
    """Add the ``ablate`` sub-command."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ablate", help="place ablation zones on a plan's trajectories; coverage and margins",
        description="Place an ablation device's zone on a trajectory of PLAN.json (from "
        "'ir-planner plan --out'), compute tumour coverage, the minimal ablative margin, "
        "critical-structure volumes and heat-sink warnings, and save them in the plan. The "
        "tumour is the plan's target_structure in its labels. Coordinates: LPS mm.")
    p.add_argument("plan", help="plan file (JSON)")
    p.add_argument("--device", required=True, help="device id (see 'ir-planner devices')")
    p.add_argument("--setting", help="device setting (default: the first; with --optimize: "
                   "try all unless given)")
    p.add_argument("--trajectory", action="append",
                   help="trajectory name (default: the plan's first); repeat it to place one "
                   "probe on each (their zones combine: union for heat, isotherms for cryo)")
    p.add_argument("--depth-offset", type=float, default=0.0, metavar="MM",
                   help="tip beyond (+) or short of (-) the trajectory's target, mm (default 0)")
    p.add_argument("--optimize", action="store_true",
                   help="choose depth and setting for a >= --margin mm margin; if one probe "
                   "cannot, place several on the plan's trajectories")
    p.add_argument("--margin", type=float, default=5.0, metavar="MM",
                   help="margin goal for --optimize (default 5 mm)")
    p.add_argument("--max-probes", type=int, default=4, help="upper limit with --optimize")
    p.add_argument("--calibration", type=float, default=1.0, metavar="F",
                   help="scale the catalog zone by F (measured zones are often smaller than "
                   "vendor charts; default 1.0)")
    p.add_argument("--no-safety", action="store_true",
                   help="with --optimize: do not use the planning engine (no safety check of "
                   "added probe paths, no searched candidate paths)")
    p.add_argument("--search-candidates", type=int, default=2, metavar="K",
                   help="with --optimize, when one probe is not enough: also ask the planning "
                   "engine's automatic search for K safe paths to the tumour centre and to 4 "
                   "points around it (default 2; 0 = only the plan's trajectories)")
    p.add_argument("--out", help="write the plan here (default: update PLAN in place)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _resolve(path_text: str, plan_path: Path, what: str) -> Path:
    if not path_text:
        raise PlanError(f"plan {plan_path} has no case.{what}; create it with 'ir-planner plan'")
    p = Path(path_text).expanduser()
    if not p.is_absolute() and not p.exists():
        p = plan_path.parent / p
    if not p.exists():
        raise PlanError(f"plan {plan_path}: case.{what} {path_text!r} does not exist")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.calibration) and 0.2 <= args.calibration <= 3.0):
        raise InputError(f"--calibration must be within 0.2-3.0; got {args.calibration}")
    if not math.isfinite(args.depth_offset) or abs(args.depth_offset) > 100:
        raise InputError(f"--depth-offset must be within ±100 mm; got {args.depth_offset}")
    if not (math.isfinite(args.margin) and 0 <= args.margin <= 20):
        raise InputError(f"--margin must be within 0-20 mm; got {args.margin}")
    if args.max_probes < 1 or args.max_probes > 8:
        raise InputError(f"--max-probes must be 1-8; got {args.max_probes}")
    if args.search_candidates < 0 or args.search_candidates > 10:
        raise InputError(f"--search-candidates must be 0-10; got {args.search_candidates}")


def run(args: argparse.Namespace) -> int:
    """Compute and save the ablation."""
    _check_args(args)
    progress = progress_printer(args)
    new_paths: list[TrajectoryRecord] = []
    catalog = load_catalog()
    device = catalog.get(args.device)
    for w in catalog.warnings:  # e.g. a user device file replacing a catalog device
        if repr(device.id) in w or "skipped" in w:
            print(f"warning: {w}", file=sys.stderr)
    if device.kind == "biopsy":
        raise InputError(f"device {device.id!r} is a biopsy needle; choose an ablation device "
                         f"({', '.join(d.id for d in catalog.devices() if d.settings)})")
    if args.setting:
        device.setting(args.setting)  # validate before any heavy work
    plan_path = Path(args.plan)
    plan = Plan.load(plan_path)
    if not plan.target_structure:
        raise PlanError(f"plan {plan_path} has no target_structure: an ablation zone needs a "
                        "tumour; plan with 'ir-planner plan ... --target-structure NAME --out PLAN'")
    if not plan.trajectories:
        raise PlanError(f"plan {plan_path} has no trajectories; add one with 'ir-planner plan'")
    trajs = ([plan.trajectory(n) for n in dict.fromkeys(args.trajectory)] if args.trajectory
             else [plan.trajectories[0]])
    if args.optimize and len(trajs) > 1:
        raise InputError("--optimize starts from one --trajectory (it adds probes on the plan's "
                         "other trajectories itself)")
    traj = trajs[0]

    from ir_planner.io.load import load_image
    from ir_planner.io.segmentation import load_labels

    image = None
    if plan.case.image_path:
        image = load_image(_resolve(plan.case.image_path, plan_path, "image_path"),
                           progress=subrange(progress, 0.0, 0.2))
    names = (_resolve(plan.case.names_path, plan_path, "names_path")
             if plan.case.names_path else None)
    labels = load_labels(_resolve(plan.case.labels_path, plan_path, "labels_path"), image=image,
                         names=names, progress=subrange(progress, 0.2, 0.3))
    tumour = TumourModel.from_labels(labels, plan.target_structure)
    critical = CriticalModel.from_labels(
        labels, exclude=[plan.target_structure], centre_lps=tumour.centre_lps,
        radius_mm=tumour.radius_mm + CRITICAL_REACH_MM, progress=subrange(progress, 0.3, 0.5))

    if args.optimize:
        result = optimize_single(device, traj.entry_lps, traj.target_lps, tumour, critical,
                                 settings=[args.setting] if args.setting else None,
                                 calibration=args.calibration, margin_goal_mm=args.margin,
                                 trajectory_name=traj.name, progress=subrange(progress, 0.5,
                                                                              0.7))
        if not result.goal_met and args.max_probes > 1:
            result, found = _multi(args, device, plan, traj.name, image, labels, tumour,
                                   critical, result, progress)
            used = {p.trajectory for p in result.probes}
            new_paths = [rec for name, rec in found.items() if name in used]
    else:
        from ir_planner.planning.ablation.optimize import ProbePlacement

        probes = [Probe.on_trajectory(device, args.setting, t.entry_lps, t.target_lps,
                                      depth_offset_mm=args.depth_offset,
                                      calibration=args.calibration, name=t.name) for t in trajs]
        metrics = evaluate(zone_for(probes), tumour, critical)
        result = OptimizationResult(
            device.id, args.calibration,
            [ProbePlacement(t.name, t.entry_lps, t.target_lps, pr.setting.name,
                            args.depth_offset, tuple(float(v) for v in pr.tip_lps))
             for t, pr in zip(trajs, probes)],
            metrics, metrics.min_margin_mm >= args.margin, args.margin,
            [f"{probes[0].setting.name} at tip offset {args.depth_offset:+.1f} mm on "
             f"{', '.join(t.name for t in trajs)} (as requested)"])
    if progress:
        progress(1.0, "done")
    _save(plan, result, device, args, plan_path, new_paths)
    _print(result, device, args)
    return 0


def _multi(args: argparse.Namespace, device: Any, plan: Plan, first: str, image: Any,
           labels: Any, tumour: TumourModel, critical: CriticalModel,
           single: OptimizationResult, progress: Any
           ) -> tuple[OptimizationResult, dict[str, TrajectoryRecord]]:
    cands = [Candidate(t.entry_lps, t.target_lps, t.name) for t in plan.trajectories]
    safety = None
    notes = []
    found: dict[str, TrajectoryRecord] = {}
    if not args.no_safety:
        from ir_planner.planning.ablation.optimize import engine_safety
        from ir_planner.planning.engine import PlanningEngine

        engine = PlanningEngine(image, labels, overrides=plan.structure_overrides,
                                progress=subrange(progress, 0.7, 0.8))
        safety = engine_safety(engine)
        notes.append("probe paths checked with the planning engine (entry → tip)")
        if args.search_candidates > 0:
            found = _searched_candidates(engine, tumour, first_dir(plan, first),
                                         args.search_candidates)
            cands += [Candidate(r.entry_lps, r.target_lps, r.name) for r in found.values()]
            notes.append(f"{len(found)} candidate path(s) from the planning engine's search")
    multi = optimize_multi(device, cands, tumour, critical,
                           setting=args.setting or single.probes[0].setting,
                           calibration=args.calibration, max_probes=args.max_probes,
                           margin_goal_mm=args.margin, safety=safety,
                           progress=subrange(progress, 0.85, 0.99))
    if len(plan.trajectories) == 1:
        notes.append("only one trajectory in the plan: add paths ('ir-planner plan --auto "
                     "--top K --out') for probes on other paths")
    better = multi.metrics.min_margin_mm > single.metrics.min_margin_mm + 1e-6
    chosen = multi if better else single
    chosen.reasons = (["one probe cannot reach the margin goal: " + single.reasons[0]]
                      + multi.reasons + notes) if better else (
        single.reasons + [f"several probes did not improve the margin ({multi.reasons[0]})"]
        + notes)
    return chosen, found


def first_dir(plan: Plan, name: str) -> np.ndarray:
    """Unit direction (entry → target) of trajectory ``name``."""
    t = plan.trajectory(name)
    d = np.subtract(t.target_lps, t.entry_lps)
    return d / np.linalg.norm(d)


def _searched_candidates(engine: Any, tumour: TumourModel, axis: np.ndarray, k: int
                         ) -> dict[str, TrajectoryRecord]:
    """Safe paths from the engine's search to the tumour centre and 4 points around it."""
    centre = tumour.centre_lps
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    r = 0.5 * tumour.radius_mm
    targets = [centre] + [centre + r * v for v in (e1, -e1, e2, -e2)]
    out: dict[str, TrajectoryRecord] = {}
    for n, t in enumerate(targets):
        try:
            res = engine.search(t, top_k=k)
        except IRPlannerError:
            continue  # e.g. that point lies in a forbidden structure
        for m, sug in enumerate(res.suggestions):
            name = f"ablate-S{n + 1}.{m + 1}"
            out[name] = engine.to_record(sug, name, source="auto")
    return out


def _save(plan: Plan, result: OptimizationResult, device: Any, args: argparse.Namespace,
          plan_path: Path, new_paths: list[TrajectoryRecord]) -> None:
    group = result.group
    records = result.to_records(device)
    involved = {p.trajectory for p in result.probes}

    def change(p: Plan) -> None:
        names = {r.name for r in new_paths}
        p.trajectories = [t for t in p.trajectories if t.name not in names] + list(new_paths)
        keep = [a for a in p.ablations
                if not (a.device_id == device.id and a.trajectory in involved)]
        p.ablations = keep + records

    plan.apply(f"ablation {group}", change)
    if not args.out:
        allow_in_place(plan_path)  # ablate PLAN updates PLAN (the output guard allows it)
    plan.save(Path(args.out) if args.out else plan_path)


def _print(result: OptimizationResult, device: Any, args: argparse.Namespace) -> None:
    if args.json:
        print_json(result.to_dict())
        return
    m = result.metrics
    print_table(["trajectory", "setting", "tip offset mm", "tip LPS mm"],
                [[p.trajectory, p.setting, f"{p.depth_offset_mm:+.2f}",
                  " ".join(f"{v:.1f}" for v in p.tip_lps)] for p in result.probes])
    print()
    rows = [
        ["tumour coverage", f"{m.coverage_pct:.1f} %"],
        ["tumour + 5 mm coverage", f"{m.shell_coverage_pct['5mm']:.1f} %"],
        ["tumour + 10 mm coverage", f"{m.shell_coverage_pct['10mm']:.1f} %"],
        ["minimal margin", f"{m.min_margin_mm:.1f} mm at LPS "
         + " ".join(f"{v:.1f}" for v in m.min_margin_point_lps)],
        ["margin p5 / p50 / p95", " / ".join(f"{m.margin_percentiles_mm[k]:.1f}"
                                             for k in ("p5", "p50", "p95")) + " mm"],
        ["zone volume", f"{m.zone_volume_ml:.1f} ml (tumour {m.tumour_volume_ml:.1f} ml)"],
        ["critical structures in zone", f"{m.critical_damage_ml:.2f} ml"],
    ]
    for name, vol in sorted(m.structure_volumes_ml.items(), key=lambda kv: -kv[1]):
        if vol >= 0.01:
            rows.append([f"  {name}", f"{vol:.2f} ml"])
    print_table(["metric", "value"], rows)
    for line in result.reasons:
        print(f"- {line}")
    for w in m.warnings:
        print(f"warning: {w}")
    if np.isfinite(result.calibration) and result.calibration == 1.0:
        print("note: catalog zone sizes used as charted (calibration 1.0)")
