"""Pictures of a plan without Qt: an off-screen PyVista render to RGB or PNG.

:func:`render` draws the case and the plan (structures, needles coloured by
clearance, markers, ablation zones with margin shells, skin risk) from one of
the views of :data:`VIEWS` and returns an RGB array; :func:`save_png` writes it
atomically. The CLI's ``render`` command, the demo and the PDF report use it.

The drawing of plan objects (:func:`show_plan`) is shared with the workstation
window, so a picture and the window show the same thing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyvista as pv
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from ir_planner.core.errors import InputError, PlanError
from ir_planner.core.fileio import atomic_write_bytes
from ir_planner.core.labels import LabelMap
from ir_planner.core.plan import Plan, TrajectoryRecord
from ir_planner.core.volume import ImageVolume
from ir_planner.planning.ablation import Probe, get_device, zone_for
from ir_planner.planning.engine import PlanningEngine
from ir_planner.scene.actors import clearance_profile, margin_shell_mesh, zone_mesh
from ir_planner.scene.scene import PlanningScene
from ir_planner.scene.slices import (
    Orientation,
    SlicePlane,
    bullseye_plane,
    needle_plane,
    orientation_letters,
    standard_plane,
)
from ir_planner.scene.style import WindowLevel
from ir_planner.scene.surfaces import MeshOptions

__all__ = ["VIEWS", "render", "engine_slack", "SlackFunction", "save_png", "show_plan", "plane_for_view", "RenderOptions",
           "needle_diameter_mm", "zone_for_record"]

#: Views :func:`render` knows: 3D camera directions and planar slices.
VIEWS = ("3d", "anterior", "posterior", "left", "right", "superior", "inferior",
         "axial", "coronal", "sagittal", "along-needle", "bullseye")
_PLANAR = ("axial", "coronal", "sagittal", "along-needle", "bullseye")

#: Outer diameter (mm) used when a trajectory record names no needle (18 G).
DEFAULT_NEEDLE_DIAMETER_MM = 1.27

#: A slack function: (a_lps, b_lps) → smallest (axis distance − margin) in mm of
#: the needle *axis* piece a→b to any forbidden structure (the needle's radius is
#: subtracted per trajectory when colouring).
SlackFunction = Callable[[NDArray[np.float64], NDArray[np.float64]], float]


def engine_slack(engine: PlanningEngine, target_lps: ArrayLike, entry_lps: ArrayLike, *,
                 band_mm: float = 2.0) -> SlackFunction:
    """An exact :data:`SlackFunction` for one trajectory from the planning engine.

    Structures allowed at the target (its organ) are left out, as in the engine's
    verdict. Structures whose distance to the whole needle already exceeds their
    margin + ``band_mm`` + 10 mm are green along all of it and not sampled.
    """
    allowed = engine.allowed_at_target(target_lps)
    a = np.asarray(entry_lps, float)
    b = np.asarray(target_lps, float)
    near = []
    for s in engine.forbidden:
        if s.name in allowed:
            continue
        d, _ = engine.exact_distance(s.name, a, b)
        if d - s.margin_mm <= band_mm + 10.0:
            near.append(s)

    def slack(p: NDArray[np.float64], q: NDArray[np.float64]) -> float:
        values = [engine.exact_distance(s.name, p, q)[0] - s.margin_mm for s in near]
        return float(min(values, default=np.inf))

    return slack


@dataclass(frozen=True)
class RenderOptions:
    """What :func:`render` draws and how big.

    Attributes
    ----------
    size : tuple of int
        Width and height in pixels.
    mesh_options : MeshOptions
        Triangle budget of the structure surfaces.
    trajectory : str, optional
        The trajectory the along-needle and bull's-eye views follow (default: the
        first with an ablation, else the first).
    window : WindowLevel, optional
        Slice window (default: abdomen for CT, automatic otherwise).
    hide : tuple of str
        Structures not drawn (e.g. ``("skin",)``).
    margin_mm : float
        Ablative margin of the shell around the target (mm).
    """

    size: tuple[int, int] = (1280, 960)
    mesh_options: MeshOptions = MeshOptions(triangle_budget=150_000)
    trajectory: str | None = None
    window: WindowLevel | None = None
    hide: tuple[str, ...] = ()
    margin_mm: float = 5.0


def needle_diameter_mm(record: TrajectoryRecord) -> float:
    """Outer diameter (mm) of a trajectory's needle from its record."""
    d = record.needle.get("outer_diameter_mm") if record.needle else None
    try:
        return float(d) if d and float(d) > 0 else DEFAULT_NEEDLE_DIAMETER_MM
    except (TypeError, ValueError):
        return DEFAULT_NEEDLE_DIAMETER_MM


def zone_for_record(plan: Plan, index: int) -> Any:
    """The ablation zone of ``plan.ablations[index]`` (device catalog + trajectory)."""
    rec = plan.ablations[index]
    traj = plan.trajectory(rec.trajectory)
    device = get_device(rec.device_id)
    probe = Probe.on_trajectory(device, rec.setting or None, traj.entry_lps, traj.target_lps,
                                depth_offset_mm=rec.tip_depth_offset_mm,
                                calibration=rec.calibration, name=rec.trajectory)
    return zone_for(probe)


def _record_slack(record: TrajectoryRecord, samples: int = 24
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """A coarse clearance profile from the metrics stored in a record: each forbidden
    structure's clearance at its closest point, growing linearly away from it."""
    clear = record.metrics.get("clearance_mm") if record.metrics else None
    if not isinstance(clear, dict) or not clear:
        return None
    length = float(np.linalg.norm(np.subtract(record.target_lps, record.entry_lps)))
    pos = np.linspace(0.0, length, samples)
    slack = np.full(samples, np.inf)
    for c in clear.values():
        if not isinstance(c, dict) or not c.get("forbidden"):
            continue
        try:
            value = float(c["clearance_mm"]) - float(c.get("margin_mm", 0.0))
            at = float(c.get("at_mm_from_entry", 0.0))
        except (KeyError, TypeError, ValueError):
            continue
        slack = np.minimum(slack, value + np.abs(pos - at))
    return pos, slack


def show_plan(scene: PlanningScene, plan: Plan, *,
              slack_fn: Callable[[TrajectoryRecord], SlackFunction | None] | None = None,
              margin_mm: float = 5.0, selected: str | None = None) -> list[str]:
    """Draw the plan's target, trajectories and ablations on ``scene``.

    Needles are coloured by the clearance along them: exactly from ``slack_fn``
    (the planning session's per-piece clearance) when given, else approximately
    from the metrics stored in each record. Returns warnings (e.g. an ablation
    whose device is unknown).

    Parameters
    ----------
    scene : PlanningScene
    plan : Plan
    slack_fn : callable, optional
        ``slack_fn(record)`` gives the :data:`SlackFunction` of a trajectory (e.g.
        :func:`engine_slack`), or None to use the record's stored metrics.
    margin_mm : float
        Ablative margin of the shell drawn around the target structure.
    selected : str, optional
        Trajectory drawn with its entry marker highlighted.
    """
    warnings: list[str] = []
    if plan.target_lps is not None:
        scene.set_marker("target", plan.target_lps, color=(0.1, 0.95, 0.3), radius_mm=2.5)
    wanted = {f"needle:{t.name}" for t in plan.trajectories}
    for key in scene.keys():
        if key.startswith("needle:") and key not in wanted:
            name = key.split(":", 1)[1]
            scene.remove(key)
            scene.remove(f"marker:entry:{name}")
    for t in plan.trajectories:
        fn = slack_fn(t) if slack_fn is not None else None
        if fn is not None:
            pos, axis_slack = clearance_profile(fn, t.entry_lps, t.target_lps)
            slack = axis_slack - needle_diameter_mm(t) / 2.0
        else:
            prof = _record_slack(t)
            pos, slack = prof if prof is not None else (None, None)
        scene.set_needle(t.name, t.entry_lps, t.target_lps, diameter_mm=needle_diameter_mm(t),
                         slack_mm=slack, positions_mm=pos)
        if selected is not None and t.name == selected:
            scene.set_marker(f"entry:{t.name}", t.entry_lps, color=(1.0, 1.0, 0.2),
                             radius_mm=2.5)
    zones = {f"zone:{a.trajectory}" for a in plan.ablations}
    for key in scene.keys():
        if key.startswith(("zone:", "shell:")) and "zone:" + key.split(":", 1)[1] not in zones:
            scene.remove(key)
    for n, rec in enumerate(plan.ablations):
        try:
            zone = zone_for_record(plan, n)
        except (InputError, PlanError) as exc:
            warnings.append(f"ablation on {rec.trajectory}: {exc}")
            continue
        shell = None
        labels = scene.labels
        if labels is not None and plan.target_structure and \
                plan.target_structure in labels.names and labels.voxel_count(
                    plan.target_structure) > 0:
            shell = margin_shell_mesh(labels, plan.target_structure, margin_mm)
        scene.set_zone(rec.trajectory, zone_mesh(zone), shell)
    return warnings


def _pick_trajectory(plan: Plan | None, name: str | None) -> TrajectoryRecord | None:
    if plan is None or not plan.trajectories:
        if name:
            raise InputError(f"no trajectory named {name!r}: the plan has no trajectories")
        return None
    if name:
        return plan.trajectory(name)
    with_zone = {a.trajectory for a in plan.ablations}
    for t in plan.trajectories:
        if t.name in with_zone:
            return t
    for verdict in ("safe", "caution"):
        for t in plan.trajectories:
            if t.metrics.get("verdict") == verdict:
                return t
    return plan.trajectories[0]


def plane_for_view(view: str, image: ImageVolume, plan: Plan | None, *,
                   trajectory: str | None = None) -> SlicePlane:
    """The slice plane a planar view shows: standard planes through the target (or the
    image centre), the needle plane or the bull's-eye plane of a trajectory."""
    traj = _pick_trajectory(plan, trajectory)
    if view in ("along-needle", "bullseye"):
        if traj is None:
            raise InputError(f"view {view!r} needs a plan with a trajectory")
        if view == "along-needle":
            return needle_plane(traj.entry_lps, traj.target_lps,
                                spacing_mm=float(max(0.5, image.spacing_mm.min())))
        return bullseye_plane(traj.entry_lps, traj.target_lps,
                              spacing_mm=float(max(0.4, image.spacing_mm.min() / 1.5)))
    through: ArrayLike | None = None
    if traj is not None:
        through = traj.target_lps
    elif plan is not None and plan.target_lps is not None:
        through = plan.target_lps
    return standard_plane(image, Orientation(view), through)


def render(image: ImageVolume | None, labels: LabelMap | None, plan: Plan | None = None, *,
           view: str = "3d", options: RenderOptions | None = None,
           slack_fn: Callable[[TrajectoryRecord], SlackFunction | None] | None = None,
           skin: pv.PolyData | None = None) -> NDArray[np.uint8]:
    """Render a picture of a case and its plan off-screen (no Qt).

    Parameters
    ----------
    image : ImageVolume or None
        Needed for planar views.
    labels : LabelMap or None
    plan : Plan, optional
    view : str
        One of :data:`VIEWS`.
    options : RenderOptions, optional
    slack_fn : callable, optional
        Per-trajectory exact clearance of needle pieces (see :func:`show_plan`).
    skin : pyvista.PolyData, optional
        A skin risk surface (:func:`~ir_planner.scene.actors.skin_risk_mesh`).

    Returns
    -------
    numpy.ndarray, uint8, shape (height, width, 3)
    """
    opts = options or RenderOptions()
    if view not in VIEWS:
        raise InputError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    w, h = opts.size
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise InputError(f"picture size must be 16–8192 pixels per side; got {w}×{h}")
    if view in _PLANAR and image is None:
        raise InputError(f"view {view!r} needs the image")
    plotter = pv.Plotter(off_screen=True, window_size=(w, h))
    try:
        scene = PlanningScene(plotter, mesh_options=opts.mesh_options)
        planar = view in _PLANAR
        scene.set_case(image, None if planar else labels)
        if planar:
            scene.labels = labels
        for name in opts.hide:
            if name in scene.structure_actors:
                scene.set_structure_visible(name, False)
        if opts.window is not None:
            scene.window = opts.window
        if plan is not None:
            show_plan(scene, plan, slack_fn=slack_fn, margin_mm=opts.margin_mm)
        if skin is not None:
            scene.set_skin_risk(skin)
        if planar:
            assert image is not None
            _planar_view(scene, plotter, view, image, labels, plan, opts)
        else:
            plotter.enable_lightkit()
            focus = None
            if plan is not None and plan.target_lps is not None:
                focus = (np.asarray(plan.target_lps) + np.asarray(scene.centre_lps())) / 2.0
            scene.view(view, focus_lps=focus, zoom=1.35)
            plotter.add_text(_caption(plan, view), font_size=10, color="white",
                             position="upper_left")
            _orientation_marker(plotter)
        plotter.render()
        img = plotter.screenshot(return_img=True)
    finally:
        plotter.close()
    return np.asarray(img)[..., :3].astype(np.uint8)


def _caption(plan: Plan | None, view: str) -> str:
    lines = [f"IR Planner - {view} view (research use only)"]
    if plan is not None:
        if plan.target_structure:
            lines.append(f"target: {plan.target_structure}")
        for t in plan.trajectories[:4]:
            v = t.metrics.get("verdict", "?")
            length = t.metrics.get("length_mm")
            lines.append(f"{t.name}: {v}" + (f", {length:.0f} mm" if isinstance(
                length, (int, float)) else ""))
    return "\n".join(lines)


def _orientation_marker(plotter: pv.Plotter) -> None:
    """Patient-direction axes in the corner (L, P, S = +x, +y, +z)."""
    plotter.add_axes(xlabel="L", ylabel="P", zlabel="S", line_width=2,
                     color="white", interactive=False)


def _planar_view(scene: PlanningScene, plotter: pv.Plotter, view: str, image: ImageVolume,
                 labels: LabelMap | None, plan: Plan | None, opts: RenderOptions) -> None:
    plane = plane_for_view(view, image, plan, trajectory=opts.trajectory)
    scene.slice_overlay = labels is not None
    scene.slice_planes = {"view": plane}
    scene.show_slices(True)
    # objects in front of the plane are clipped by the camera: put the camera on the
    # plane's viewer side at a distance and use a parallel projection
    centre = np.asarray(plane.centre_lps)
    normal = plane.normal_lps
    cam = plotter.camera
    cam.focal_point = tuple(centre)
    cam.position = tuple(centre + normal * 1000.0)
    cam.up = tuple(plane.v_lps)
    plotter.enable_parallel_projection()
    cam.parallel_scale = plane.height_mm / 2.0
    cam.clipping_range = (1000.0 - 3.0, 1000.0 + 3.0) if view != "bullseye" else \
        (1000.0 - 0.5, 1000.0 + 400.0)
    letters = orientation_letters(plane)
    plotter.add_text(letters["top"], position="upper_edge", font_size=14, color="yellow")
    plotter.add_text(letters["left"], position="left_edge", font_size=14, color="yellow")
    plotter.add_text(letters["right"], position="right_edge", font_size=14, color="yellow")
    plotter.add_text(f"{view} (1 px = {plane.spacing_mm:.2f} mm)", position="lower_left",
                     font_size=9, color="white")


def save_png(rgb: NDArray[np.uint8], path: str | os.PathLike[str]) -> Path:
    """Write an RGB(A) uint8 array as a PNG file atomically."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise InputError(f"expected an RGB(A) uint8 picture; got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return atomic_write_bytes(Path(path), buf.getvalue())
