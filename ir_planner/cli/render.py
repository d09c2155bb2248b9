"""``ir-planner render PLAN.json -o OUT.png``: a picture of a plan, without Qt."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ir_planner.cli.common import progress_printer
from ir_planner.core.errors import InputError, PlanError
from ir_planner.core.plan import Plan, TrajectoryRecord
from ir_planner.core.progress import subrange
from ir_planner.io.load import load_image
from ir_planner.io.segmentation import load_labels
from ir_planner.planning.engine import PlanningEngine
from ir_planner.scene.render import VIEWS, RenderOptions, engine_slack, render, save_png
from ir_planner.scene.surfaces import MeshOptions

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``render`` sub-command."""
    parser = subparsers.add_parser(
        "render", help="draw a picture of a plan (3D scene or a slice view) to a PNG file",
        description="Render the plan's case (structure surfaces or a CT slice) with its "
        "trajectories (needles at true gauge, coloured by clearance: red = margin violated, "
        "amber = within 2 mm of it, green = clear), target, and ablation zones with their "
        "margin shell, off-screen, to a PNG file. Views: 3d (oblique), anterior, posterior, "
        "left, right, superior, inferior; axial, coronal, sagittal (radiological convention, "
        "through the target); along-needle (the oblique plane containing the needle) and "
        "bullseye (perpendicular to the needle at the target).")
    parser.add_argument("plan", type=Path, help="plan file (.json)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--view", choices=VIEWS, default="3d", help="view (default 3d)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=(1280, 960),
                        help="picture size in pixels (default 1280 960)")
    parser.add_argument("--image", type=Path,
                        help="image (DICOM folder or file) when the plan's image has moved")
    parser.add_argument("--labels", type=Path,
                        help="label map when the plan's labels have moved")
    parser.add_argument("--trajectory", help="trajectory followed by along-needle/bullseye")
    parser.add_argument("--triangles", type=int, default=150_000,
                        help="triangle budget of all structure surfaces (default 150000)")
    parser.add_argument("--approximate-colours", action="store_true",
                        help="colour needles from the plan's stored metrics instead of exact "
                        "clearances (no planning precomputation)")
    parser.set_defaults(func=run)


def _existing(path: Path | None, stored: str, what: str, option: str, plan: Path) -> Path:
    p = path if path is not None else (Path(stored) if stored else None)
    if p is None:
        raise InputError(f"plan {plan} names no {what}; give it with {option} PATH")
    if not p.exists():
        raise InputError(f"the {what} of plan {plan} is not at {p} (moved or deleted?); "
                         f"give its new place with {option} PATH")
    return p


def run(args: argparse.Namespace) -> int:
    """Load the plan's case, render, write the PNG."""
    plan = Plan.load(args.plan)
    out: Path = args.output
    if out.suffix.lower() != ".png":
        raise InputError(f"output {out} must be a .png file")
    if not out.parent.is_dir():
        raise InputError(f"output folder {out.parent} does not exist")
    image_path = _existing(args.image, plan.case.image_path, "image", "--image", args.plan)
    labels_path = _existing(args.labels, plan.case.labels_path, "label map", "--labels",
                            args.plan)
    for src in (args.plan, image_path, labels_path):
        if out.resolve() == Path(src).resolve():
            raise InputError(f"output {out} would overwrite the input {src}")
    progress = progress_printer(args)
    image = load_image(image_path, progress=subrange(progress, 0.0, 0.2))
    labels = load_labels(labels_path, image=image, progress=subrange(progress, 0.2, 0.3))
    slack_fn = None
    if plan.trajectories and not args.approximate_colours:
        try:
            engine = PlanningEngine(image, labels, overrides=plan.structure_overrides,
                                    progress=subrange(progress, 0.3, 0.6))
        except (InputError, PlanError) as exc:
            raise PlanError(f"cannot measure clearances on plan {args.plan}: {exc} "
                            "(use --approximate-colours to draw from the stored metrics)") from exc

        def slack_fn(t: TrajectoryRecord) -> Any:
            return engine_slack(engine, t.target_lps, t.entry_lps)

    options = RenderOptions(size=(int(args.size[0]), int(args.size[1])),
                            mesh_options=MeshOptions(triangle_budget=args.triangles),
                            trajectory=args.trajectory)
    rgb = render(image, labels, plan, view=args.view, options=options, slack_fn=slack_fn)
    save_png(rgb, out)
    if progress is not None:
        progress(1.0, "picture written")
    print(f"wrote {out} ({args.view} view, {rgb.shape[1]}×{rgb.shape[0]} pixels)")
    return 0
