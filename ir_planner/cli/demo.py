"""``ir-planner demo``: the main job, run end to end on the bundled synthetic case.

The demo is a list of steps (:data:`DEMO_STEPS`), each a function of a shared
:class:`DemoContext`. Later features (trajectory planning, ablation) add their
step to the list; the runner gives each step its share of the progress bar.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ir_planner.cli.common import print_json, print_table, progress_printer
from ir_planner.core.catalog import Category
from ir_planner.core.errors import InputError
from ir_planner.core.fileio import atomic_write_json
from ir_planner.core.labels import LabelMap
from ir_planner.core.plan import CaseRef, Plan
from ir_planner.core.progress import ProgressCallback, report, subrange
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import write_image_file
from ir_planner.io.load import load_image
from ir_planner.io.segmentation import load_labels, save_labels
from ir_planner.sample.case import SampleCase, ensure_sample_case, generate_sample_case

__all__ = ["DemoContext", "DemoStep", "DEMO_STEPS", "register", "run", "run_demo",
           "structure_centroid_lps"]


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


def step_write(ctx: DemoContext, progress: ProgressCallback | None) -> None:
    """Write summary.json, the CT as NIfTI, the label map and plan.json."""
    out = ctx.out_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from exc
    report(progress, 0.05, "writing planning_ct.nii.gz")
    ctx.outputs["planning_ct"] = write_image_file(ctx.need("image"), out / "planning_ct.nii.gz")
    report(progress, 0.6, "writing labels.nii.gz")
    ctx.outputs["labels"] = save_labels(ctx.need("labels"), out / "labels.nii.gz")
    report(progress, 0.85, "writing plan.json")
    ctx.outputs["plan"] = ctx.need("plan").save(out / "plan.json")
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
    print("\nOutputs")
    for key, path in ctx.outputs.items():
        print(f"  {key:<12} {path}")


def register(subparsers: Any) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the planner end to end on the bundled synthetic sample case",
        description="Generate (or reuse) the synthetic sample case, read it back through the "
        "real DICOM and label readers, summarise it and write summary.json, planning_ct.nii.gz, "
        "labels.nii.gz and plan.json. The sample data is synthetic, not patient data.",
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
