"""``ir-planner demo``: the main job, run end to end on the bundled synthetic case.

The demo is a list of steps (:data:`DEMO_STEPS`), each a function of a shared
:class:`DemoContext`: sample case → read CT and labels back → summary → plan on
tumour_1 → automatic trajectory search (17 G, 150 mm, no posterior entry, ≥ 10 mm
of liver before the target) → microwave ablation on the best path (depth and
setting for a ≥ 5 mm margin) → a first guidance readout against the synthetic
generator's intra-op needle → outputs. The runner gives each step its share of the
progress bar.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ir_planner.cli.common import print_json, print_table, progress_printer
from ir_planner.core.catalog import Category
from ir_planner.core.errors import InputError, PlanError
from ir_planner.core.fileio import atomic_write_json
from ir_planner.core.labels import LabelMap
from ir_planner.core.plan import CaseRef, Plan
from ir_planner.core.progress import ProgressCallback, report, subrange
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import write_image_file
from ir_planner.io.load import load_image
from ir_planner.io.segmentation import load_labels, save_labels
from ir_planner.planning.devices import Needle
from ir_planner.planning.engine import PlanningEngine
from ir_planner.planning.search import SearchConstraints, SearchWeights
from ir_planner.sample.case import SampleCase, ensure_sample_case, generate_sample_case

__all__ = ["DemoContext", "DemoStep", "DEMO_STEPS", "DEMO_NEEDLE", "DEMO_CONSTRAINTS",
           "DEMO_TOP_K", "DEMO_MARGIN_GOAL_MM", "register", "run", "run_demo",
           "structure_centroid_lps", "guidance_readout"]

#: The demo's biopsy/introducer needle: 17 G, 150 mm usable.
DEMO_NEEDLE = Needle(gauge=17, usable_length_mm=150.0, name="17G coaxial 150 mm")
#: Search constraints for a supine patient: no entry through the back, at least 10 mm
#: of normal liver before the target.
DEMO_CONSTRAINTS = SearchConstraints(max_length_mm=DEMO_NEEDLE.usable_length_mm,
                                     excluded_regions=("posterior",),
                                     min_organ_length_mm={"liver": 10.0})
#: Number of diverse suggestions kept.
DEMO_TOP_K = 3
#: Minimal ablative margin sought (mm): no local progression was seen above 5 mm.
DEMO_MARGIN_GOAL_MM = 5.0


@dataclass
class DemoContext:
    """State shared by the demo steps (filled in as the steps run)."""

    out_dir: Path
    seed: int = 0
    case_dir: Path | None = None
    regenerate: bool = False
    case: SampleCase | None = None
    image: ImageVolume | None = None
    labels: LabelMap | None = None
    plan: Plan | None = None
    engine: PlanningEngine | None = None
    search_result: Any = None
    summary: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    log: Callable[[str], None] = print

    def need(self, name: str) -> Any:
        """An attribute an earlier step must have set (clear error otherwise)."""
        value = getattr(self, name)
        if value is None:
            raise InputError(f"demo step order: {name} is not available yet")
        return value


@dataclass(frozen=True)
class DemoStep:
    """One demo step: ``run(context, progress)``; ``weight`` sets its share of the bar."""

    name: str
    run: Callable[[DemoContext, ProgressCallback | None], None]
    weight: float = 1.0


def structure_centroid_lps(labels: LabelMap, name: str) -> np.ndarray:
    """Centroid (LPS, mm) of a structure's voxel centres."""
    k, j, i = np.nonzero(labels.mask(name))
    if k.size == 0:
        raise InputError(f"structure {name!r} is empty")
    ijk = np.array([i.mean(), j.mean(), k.mean()])
    return labels.grid.index_to_world(ijk)


# -- steps ---------------------------------------------------------------------------------
def step_sample_case(ctx: DemoContext, progress: ProgressCallback | None) -> None:
    """Generate the synthetic sample case, or reuse a complete one."""
    if ctx.regenerate:
        ctx.case = generate_sample_case(ctx.case_dir, seed=ctx.seed, progress=progress)
    else:
        ctx.case = ensure_sample_case(ctx.case_dir, seed=ctx.seed, progress=progress)
    ctx.log(f"sample case: {ctx.case.root} (synthetic, seed {ctx.seed})")


def step_load_image(ctx: DemoContext, progress: ProgressCallback | None) -> None:
    """Read the planning CT back through the DICOM reader."""
    case: SampleCase = ctx.need("case")
    ctx.image = load_image(case.planning_dicom_dir, progress=progress)


def step_load_labels(ctx: DemoContext, progress: ProgressCallback | None) -> None:
    """Read the label map back through the segmentation reader, onto the CT grid."""
    case: SampleCase = ctx.need("case")
    ctx.labels = load_labels(case.planning_labels, image=ctx.need("image"), progress=progress)


def step_summarise(ctx: DemoContext, progress: ProgressCallback | None) -> None:
    """Image geometry, structure volumes (ml) and tumour targets (centroid LPS mm)."""
    image: ImageVolume = ctx.need("image")
    labels: LabelMap = ctx.need("labels")
    structures = []
    rows = labels.summary()
    for n, row in enumerate(rows):
        structures.append({k: row[k] for k in ("name", "label", "category", "volume_ml",
                                               "forbidden", "margin_mm")})
        report(progress, (n + 1) / len(rows), "measuring structures")
    targets = []
    for s in labels.by_category(Category.TARGET):
        if labels.voxel_count(s) == 0:
            continue
        volume_ml = labels.volume_ml(s)
        targets.append({
            "name": s.name,
            "centroid_lps_mm": [round(float(v), 3) for v in structure_centroid_lps(labels, s.name)],
            "volume_ml": round(volume_ml, 3),
            "equivalent_diameter_mm": round(float((6000.0 * volume_ml / np.pi) ** (1 / 3)), 2),
        })
    ctx.summary.update({
        "synthetic_case": True,
        "case_dir": str(ctx.need("case").root),
        "image": image.summary(),
        "image_extent_mm": [round(float(s * n), 2) for s, n in
                            zip(image.spacing_mm, image.shape_ijk)],
        "structures": structures,
        "targets": targets,
        "warnings": list(image.warnings) + list(labels.warnings),
    })


def step_plan(ctx: DemoContext, progress: ProgressCallback | None) -> None:
    """A Plan on the case, targeting the first tumour's centroid."""
    case: SampleCase = ctx.need("case")
    image: ImageVolume = ctx.need("image")
    manifest = case.read_manifest()
    plan = Plan(case=CaseRef(image_path=str(case.planning_dicom_dir),
                             labels_path=str(case.planning_labels),
                             series_uid=image.series_uid, study_uid=image.study_uid,
                             patient_id=str(manifest.get("patient_id", "")),
                             description="IR Planner synthetic sample case (not patient data)"))
    targets = ctx.summary.get("targets", [])
    if targets:
        first = targets[0]

        def set_target(p: Plan) -> None:
            p.target_structure = first["name"]
            p.target_lps = tuple(first["centroid_lps_mm"])  # type: ignore[assignment]

        plan.apply("target", set_target)
    ctx.plan = plan
    report(progress, 1.0, "plan ready")


def step_search(ctx: DemoContext, progress: ProgressCallback | None) -> None:
    """Automatic trajectory search to the plan's target; suggestions go into the plan."""
    image: ImageVolume = ctx.need("image")
    labels: LabelMap = ctx.need("labels")
    plan: Plan = ctx.need("plan")
    if plan.target_lps is None:
        raise PlanError("the sample case has no tumour to plan to")
    engine = PlanningEngine(image, labels, overrides=plan.structure_overrides,
                            needle=DEMO_NEEDLE, progress=subrange(progress, 0.0, 0.35))
    engine.precompute_search(progress=subrange(progress, 0.35, 0.6))
    weights = SearchWeights()
    result = engine.search(plan.target_lps, DEMO_CONSTRAINTS, top_k=DEMO_TOP_K, weights=weights,
                           progress=subrange(progress, 0.6, 1.0))
    if not result.suggestions:
        raise PlanError("no feasible path to the target: " + result.explain())
    ctx.engine, ctx.search_result = engine, result
    records = [engine.to_record(m, f"auto{n}", source="auto")
               for n, m in enumerate(result.suggestions, start=1)]

    def change(p: Plan) -> None:
        p.trajectories = [*p.trajectories, *records]
        p.settings = {**p.settings, "planning": {
            "needle": DEMO_NEEDLE.to_dict(), "constraints": DEMO_CONSTRAINTS.to_dict(),
            "weights": weights.to_dict(), "caution_band_mm": engine.caution_band_mm,
            "body_outline": engine.body_source, "labels_source": "file",
            "structures": {st.name: {"category": st.category.value, "forbidden": st.forbidden,
                                     "margin_mm": st.margin_mm} for st in engine.structures},
            "search": {"candidates": result.n_candidates, "feasible": int(result.feasible.sum()),
                       "summary": result.explain(),
                       "timings_s": {k: round(v, 3) for k, v in result.timings_s.items()}},
        }}

    plan.apply("demo: automatic trajectories", change)
    rows = []
    for rec, m in zip(records, result.suggestions):
        closest = m.min_forbidden_clearance()
        rows.append({
            "name": rec.name, "verdict": m.verdict.value,
            "entry_lps_mm": [round(v, 1) for v in m.entry_lps],
            "length_mm": round(m.length_mm, 1), "insertion_depth_mm": round(m.insertion_depth_mm, 1),
            "craniocaudal_angle_deg": round(m.craniocaudal_angle_deg, 1),
            "in_plane_angle_deg": round(m.in_plane_angle_deg, 1), "approach": m.approach,
            "liver_before_target_mm": round(m.length_in_structure_mm.get("liver", 0.0), 1),
            "closest_forbidden": closest[0] if closest else None,
            "closest_clearance_mm": round(closest[1], 2) if closest else None,
            "reasons": list(m.reasons),
        })
    ctx.summary["search"] = {
        "target": plan.target_structure, "target_lps_mm": list(plan.target_lps),
        "needle": DEMO_NEEDLE.to_dict(), "constraints": DEMO_CONSTRAINTS.to_dict(),
        "candidates": result.n_candidates, "feasible": int(result.feasible.sum()),
        "explain": result.explain(), "suggestions": rows,
    }


def _best_trajectory(plan: Plan) -> Any:
    """The first suggestion with the best verdict (safe, then caution)."""
    for verdict in ("safe", "caution"):
        for t in plan.trajectories:
            if t.metrics.get("verdict") == verdict:
                return t
    raise PlanError("no safe or caution trajectory to place an ablation on")


def step_ablation(ctx: DemoContext, progress: ProgressCallback | None) -> None:
    """Microwave ablation on the best trajectory, depth/setting for a ≥ 5 mm margin."""
    from ir_planner.cli.ablate import CRITICAL_REACH_MM
    from ir_planner.planning.ablation import (
        CriticalModel,
        Probe,
        TumourModel,
        engine_safety,
        evaluate,
        load_catalog,
        optimize_single,
        zone_for,
    )

    labels: LabelMap = ctx.need("labels")
    plan: Plan = ctx.need("plan")
    engine: PlanningEngine = ctx.need("engine")
    catalog = load_catalog()
    microwave = catalog.devices("microwave")
    if not microwave:
        raise PlanError("the device catalog has no microwave device")
    device = microwave[0]
    best = _best_trajectory(plan)
    tumour = TumourModel.from_labels(labels, plan.target_structure)
    critical = CriticalModel.from_labels(
        labels, exclude=[plan.target_structure], centre_lps=tumour.centre_lps,
        radius_mm=tumour.radius_mm + CRITICAL_REACH_MM, progress=subrange(progress, 0.0, 0.3))
    # Depth is optimised for the device's first (default) setting; every other setting is
    # evaluated at the chosen tip, so a smaller measured zone is shown next to the chart.
    first = device.settings[0].name
    result = optimize_single(device, best.entry_lps, best.target_lps, tumour, critical,
                             settings=[first], margin_goal_mm=DEMO_MARGIN_GOAL_MM,
                             safety=engine_safety(engine), trajectory_name=best.name,
                             progress=subrange(progress, 0.3, 0.95))
    m = result.metrics
    offset = result.probes[0].depth_offset_mm
    others = []
    for st in device.settings[1:]:
        probe = Probe.on_trajectory(device, st.name, best.entry_lps, best.target_lps,
                                    depth_offset_mm=offset, calibration=result.calibration,
                                    name=best.name)
        om = evaluate(zone_for(probe), tumour, critical)
        others.append({"setting": st.name, "setting_label": st.label(), "basis": st.basis,
                       "coverage_pct": round(om.coverage_pct, 2),
                       "min_margin_mm": round(om.min_margin_mm, 2),
                       "goal_met": bool(om.min_margin_mm >= DEMO_MARGIN_GOAL_MM)})
    report(progress, 1.0, "ablation evaluated")
    records = result.to_records(device)

    def change(p: Plan) -> None:
        p.ablations = [*p.ablations, *records]

    plan.apply(f"demo: ablation {device.id} on {best.name}", change)
    probe = result.probes[0]
    ctx.summary["ablation"] = {
        "device_id": device.id, "device": device.name, "trajectory": probe.trajectory,
        "setting": probe.setting, "setting_label": device.setting(probe.setting).label(),
        "basis": device.setting(probe.setting).basis,
        "tip_depth_offset_mm": round(probe.depth_offset_mm, 2),
        "tip_lps_mm": [round(v, 2) for v in probe.tip_lps],
        "calibration": result.calibration,
        "coverage_pct": round(m.coverage_pct, 2),
        "shell_coverage_pct": {k: round(v, 2) for k, v in m.shell_coverage_pct.items()},
        "min_margin_mm": round(m.min_margin_mm, 2),
        "min_margin_point_lps_mm": [round(v, 2) for v in m.min_margin_point_lps],
        "zone_volume_ml": round(m.zone_volume_ml, 2),
        "tumour_volume_ml": round(m.tumour_volume_ml, 2),
        "critical_damage_ml": round(m.critical_damage_ml, 3),
        "margin_goal_mm": result.margin_goal_mm, "goal_met": result.goal_met,
        "reasons": list(result.reasons), "warnings": list(m.warnings),
        "other_settings_at_same_tip": others,
    }


def guidance_readout(truth: dict[str, Any], trajectories: list[Any],
                     tips_lps: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Compare a needle (entry/tip in the plan frame) with planned trajectories.

    Parameters
    ----------
    truth : dict
        ``intraop_truth.json`` of the sample case (``needle.entry_plan_lps_mm``,
        ``needle.tip_plan_lps_mm``: LPS mm in the planning CT's frame).
    trajectories : list of TrajectoryRecord
    tips_lps : dict, optional
        Trajectory name → planned tip (LPS mm) when it differs from the target (an
        ablation probe's optimised depth).

    Returns
    -------
    list of dict
        Per trajectory: ``angle_deg`` between the needle axis and the planned axis
        (entry → target), ``tip_distance_mm`` from the needle tip to the planned tip,
        ``tip_lateral_offset_mm`` (distance of the needle tip from the planned axis
        line) and ``tip_depth_error_mm`` (along the planned axis; + = beyond the
        planned tip).
    """
    tip = np.asarray(truth["needle"]["tip_plan_lps_mm"], dtype=float)
    entry = np.asarray(truth["needle"]["entry_plan_lps_mm"], dtype=float)
    axis = (tip - entry) / np.linalg.norm(tip - entry)
    rows = []
    for t in trajectories:
        a = np.asarray(t.entry_lps, dtype=float)
        planned_tip = np.asarray((tips_lps or {}).get(t.name, t.target_lps), dtype=float)
        d = np.asarray(t.target_lps, dtype=float) - a
        d /= np.linalg.norm(d)
        angle = math.degrees(math.acos(float(np.clip(np.dot(axis, d), -1.0, 1.0))))
        rel = tip - planned_tip
        along = float(np.dot(rel, d))
        rows.append({"trajectory": t.name, "angle_deg": round(angle, 2),
                     "tip_distance_mm": round(float(np.linalg.norm(rel)), 2),
                     "tip_lateral_offset_mm": round(float(np.linalg.norm(rel - along * d)), 2),
                     "tip_depth_error_mm": round(along, 2)})
    return rows


def step_guidance(ctx: DemoContext, progress: ProgressCallback | None) -> None:
    """First guidance readout: the intra-op needle (ground truth) against the plan."""
    case: SampleCase = ctx.need("case")
    plan: Plan = ctx.need("plan")
    truth = case.read_truth()
    tips = {a.trajectory: a.metrics["tip_lps"] for a in plan.ablations if "tip_lps" in a.metrics}
    rows = guidance_readout(truth, plan.trajectories, tips)
    closest = min(rows, key=lambda r: r["angle_deg"]) if rows else None
    needle_path: dict[str, Any] = {}
    if ctx.engine is not None:
        m = ctx.engine.evaluate(truth["needle"]["entry_plan_lps_mm"],
                                truth["needle"]["tip_plan_lps_mm"], check_entry=False)
        near = m.min_forbidden_clearance()
        needle_path = {"verdict": m.verdict.value,
                       "closest_forbidden": near[0] if near else None,
                       "closest_clearance_mm": round(near[1], 2) if near else None,
                       "tip_in": ctx.engine.labels_at(truth["needle"]["tip_plan_lps_mm"])}
    ctx.summary["guidance"] = {
        "source": "ground truth from the synthetic generator (intraop_truth.json), not a needle "
                  "detected in the intra-op image",
        "needle_entry_plan_lps_mm": truth["needle"]["entry_plan_lps_mm"],
        "needle_tip_plan_lps_mm": truth["needle"]["tip_plan_lps_mm"],
        "needle_gauge": truth["needle"].get("gauge"),
        "per_trajectory": rows,
        "closest_trajectory": closest["trajectory"] if closest else None,
        "needle_path_check": needle_path,
    }
    report(progress, 1.0, "guidance readout")


def step_write(ctx: DemoContext, progress: ProgressCallback | None) -> None:
    """Write summary.json, the CT as NIfTI, the label map, plan.json and candidates.csv."""
    out = ctx.out_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from exc
    report(progress, 0.05, "writing planning_ct.nii.gz")
    ctx.outputs["planning_ct"] = write_image_file(ctx.need("image"), out / "planning_ct.nii.gz")
    report(progress, 0.6, "writing labels.nii.gz")
    ctx.outputs["labels"] = save_labels(ctx.need("labels"), out / "labels.nii.gz")
    report(progress, 0.8, "writing plan.json")
    ctx.outputs["plan"] = ctx.need("plan").save(out / "plan.json")
    if ctx.search_result is not None:
        report(progress, 0.85, "writing candidates.csv")
        ctx.outputs["candidates"] = ctx.search_result.write_csv(out / "candidates.csv")
    ctx.summary["outputs"] = {k: str(v) for k, v in ctx.outputs.items()}
    ctx.summary["outputs"]["summary"] = str(out / "summary.json")
    ctx.outputs["summary"] = _write_json_atomic(out / "summary.json", ctx.summary)
    report(progress, 1.0, "outputs written")


def _write_json_atomic(path: Path, data: Any) -> Path:
    return atomic_write_json(path, data)


#: The demo's steps in order. Features add theirs (e.g. before "write outputs").
DEMO_STEPS: list[DemoStep] = [
    DemoStep("sample case", step_sample_case, 3.0),
    DemoStep("load planning CT", step_load_image, 1.0),
    DemoStep("load labels", step_load_labels, 1.0),
    DemoStep("summarise", step_summarise, 0.5),
    DemoStep("plan", step_plan, 0.2),
    DemoStep("trajectory search", step_search, 4.0),
    DemoStep("ablation", step_ablation, 2.0),
    DemoStep("guidance readout", step_guidance, 0.1),
    DemoStep("write outputs", step_write, 1.5),
]


def run_demo(ctx: DemoContext, *, steps: list[DemoStep] | None = None,
             progress: ProgressCallback | None = None) -> DemoContext:
    """Run the demo steps on ``ctx`` with one overall progress bar."""
    todo = DEMO_STEPS if steps is None else steps
    total = sum(s.weight for s in todo) or 1.0
    start = 0.0
    for n, step in enumerate(todo):
        stop = 1.0 if n == len(todo) - 1 else min(1.0, start + step.weight / total)
        report(progress, start, step.name)
        step.run(ctx, subrange(progress, start, stop))
        start = stop
    report(progress, 1.0, "demo finished")
    return ctx


def _print_summary(ctx: DemoContext) -> None:
    s = ctx.summary
    img = s["image"]
    print("\nPlanning CT (synthetic)")
    print(f"  size (i, j, k)   {img['size_ijk']} voxels")
    print(f"  spacing          {img['spacing_mm']} mm")
    print(f"  origin           {img['origin_lps_mm']} mm (LPS)")
    print(f"  orientation      {img['orientation']}  extent {s['image_extent_mm']} mm")
    print(f"\nStructures ({len(s['structures'])})")
    print_table(["name", "category", "volume (ml)", "forbidden", "margin (mm)"],
                [[r["name"], r["category"], r["volume_ml"], r["forbidden"], r["margin_mm"]]
                 for r in s["structures"]])
    print("\nTargets")
    print_table(["name", "centroid LPS (mm)", "volume (ml)", "eq. diameter (mm)"],
                [[t["name"], "(" + ", ".join(f"{v:.1f}" for v in t["centroid_lps_mm"]) + ")",
                  t["volume_ml"], t["equivalent_diameter_mm"]] for t in s["targets"]])
    if "search" in s:
        _print_search(s["search"])
    if "ablation" in s:
        _print_ablation(s["ablation"])
    if "guidance" in s:
        _print_guidance(s["guidance"])
    print("\nOutputs")
    for key, path in ctx.outputs.items():
        print(f"  {key:<12} {path}")


def _lps(v: Any) -> str:
    return " ".join(f"{x:.1f}" for x in v)


def _print_search(r: dict[str, Any]) -> None:
    n = r["needle"]
    print(f"\nAutomatic trajectories to {r['target']} (LPS mm {_lps(r['target_lps_mm'])}); "
          f"needle {n['gauge']} G ({n['outer_diameter_mm']} mm), {n['usable_length_mm']:.0f} mm; "
          "no posterior entry; ≥ 10 mm of liver before the target")
    print(f"  {r['explain']}")
    print_table(["name", "verdict", "entry x y z (LPS mm)", "length (mm)", "cc angle (°)",
                 "in-plane (°)", "approach", "liver (mm)", "closest forbidden",
                 "clearance (mm)"],
                [[t["name"], t["verdict"], _lps(t["entry_lps_mm"]), t["length_mm"],
                  t["craniocaudal_angle_deg"], t["in_plane_angle_deg"], t["approach"],
                  t["liver_before_target_mm"], t["closest_forbidden"] or "-",
                  t["closest_clearance_mm"] if t["closest_clearance_mm"] is not None else "-"]
                 for t in r["suggestions"]])


def _print_ablation(a: dict[str, Any]) -> None:
    print(f"\nAblation on {a['trajectory']}: {a['device']} ({a['device_id']}), setting "
          f"{a['setting_label']}, tip {a['tip_depth_offset_mm']:+.1f} mm beyond the target "
          f"(LPS mm {_lps(a['tip_lps_mm'])}), calibration {a['calibration']}")
    goal = "met" if a["goal_met"] else "NOT met"
    print_table(["metric", "value"], [
        ["tumour coverage", f"{a['coverage_pct']:.1f} %"],
        ["tumour + 5 mm coverage", f"{a['shell_coverage_pct'].get('5mm', float('nan')):.1f} %"],
        ["tumour + 10 mm coverage",
         f"{a['shell_coverage_pct'].get('10mm', float('nan')):.1f} %"],
        ["minimal ablative margin", f"{a['min_margin_mm']:.1f} mm (goal ≥ "
         f"{a['margin_goal_mm']:.0f} mm: {goal})"],
        ["zone volume", f"{a['zone_volume_ml']:.1f} ml (tumour {a['tumour_volume_ml']:.1f} ml)"],
        ["critical structures in zone", f"{a['critical_damage_ml']:.2f} ml"],
    ])
    print(f"  zone: {a['basis']}")
    for line in a["reasons"]:
        print(f"  - {line}")
    for w in a["warnings"]:
        print(f"  warning: {w}")
    for o in a.get("other_settings_at_same_tip", []):
        print(f"  same tip, setting {o['setting']} ({o['basis']}): coverage "
              f"{o['coverage_pct']:.1f} %, minimal margin {o['min_margin_mm']:.1f} mm"
              + ("" if o["goal_met"] else f" (below the {a['margin_goal_mm']:.0f} mm goal)"))


def _print_guidance(g: dict[str, Any]) -> None:
    print(f"\nGuidance readout: intra-op needle ({g['needle_gauge']} G) vs plan — "
          f"{g['source']}")
    print(f"  needle entry LPS mm {_lps(g['needle_entry_plan_lps_mm'])}, tip "
          f"{_lps(g['needle_tip_plan_lps_mm'])} (planning CT frame)")
    print_table(["trajectory", "angle to plan (°)", "tip to planned tip (mm)",
                 "tip off axis (mm)", "tip depth error (mm)"],
                [[r["trajectory"] + (" *" if r["trajectory"] == g["closest_trajectory"] else ""),
                  r["angle_deg"], r["tip_distance_mm"], r["tip_lateral_offset_mm"],
                  f"{r['tip_depth_error_mm']:+.2f}"] for r in g["per_trajectory"]])
    print("  * the planned trajectory closest in direction to the needle")
    c = g.get("needle_path_check") or {}
    if c:
        print(f"  the needle's own path checked on the planning labels: {c['verdict']}, closest "
              f"forbidden {c['closest_forbidden'] or '-'} at {c['closest_clearance_mm']} mm; "
              f"tip in {', '.join(c['tip_in']) or '(no structure)'}")


def register(subparsers: Any) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the planner end to end on the bundled synthetic sample case",
        description="Generate (or reuse) the synthetic sample case, read it back through the "
        "real DICOM and label readers, search safe needle paths to tumour_1 (17 G, 150 mm, no "
        "posterior entry, >= 10 mm liver), place a microwave ablation on the best one for a "
        ">= 5 mm margin, compare the synthetic intra-op needle with the plan, and write "
        "summary.json, plan.json, candidates.csv, planning_ct.nii.gz and labels.nii.gz. The "
        "sample data is synthetic, not patient data.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"),
                        help="output folder (default ./demo_output)")
    parser.add_argument("--seed", type=int, default=0, help="sample case seed (default 0)")
    parser.add_argument("--case-dir", type=Path, default=None,
                        help="sample case folder (default $IR_PLANNER_SAMPLE_DIR, the "
                        "checkout's sample_data/generated, or ~/.cache/ir-planner/sample)")
    parser.add_argument("--regenerate", action="store_true",
                        help="regenerate the sample case even if it exists")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ir-planner demo``."""
    if args.seed < 0:
        raise InputError(f"--seed must be ≥ 0; got {args.seed}")
    quiet_log: Callable[[str], None] = (lambda _m: None) if args.json else print
    ctx = DemoContext(out_dir=args.out, seed=args.seed, case_dir=args.case_dir,
                      regenerate=args.regenerate, log=quiet_log)
    run_demo(ctx, progress=progress_printer(args))
    if args.json:
        print_json(ctx.summary)
    else:
        _print_summary(ctx)
    return 0
