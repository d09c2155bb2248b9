"""The planning scene: named actors on a PyVista plotter, updated in place.

:class:`PlanningScene` draws a case (structure surfaces, slice planes through the
cursor) and the plan's objects (needles coloured by clearance, target and entry
markers, ablation zones with their margin shell, the skin risk map, a fused
intra-procedural volume). It works on any :class:`pyvista.Plotter`: an off-screen
one for pictures (:mod:`ir_planner.scene.render`) or the ``QtInteractor`` of the
workstation window. Every ``set_*`` method updates the existing actor's data when
there is one (no actor is rebuilt while the user drags a point).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyvista as pv
from numpy.typing import ArrayLike, NDArray

from ir_planner.core.errors import InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.progress import ProgressCallback
from ir_planner.core.volume import ImageVolume
from ir_planner.scene.actors import marker_mesh, needle_mesh, slice_quad
from ir_planner.scene.slices import (
    FusionMode,
    Orientation,
    SlicePlane,
    fuse,
    label_overlay,
    reslice,
    standard_plane,
    windowed_rgb,
)
from ir_planner.scene.style import (
    WindowLevel,
    default_window,
    structure_color,
    structure_opacity,
    structure_visible_by_default,
)
from ir_planner.scene.surfaces import MeshOptions, StructureMesh, mesh_labels

__all__ = ["PlanningScene", "FusionLayer", "CAMERA_VIEWS"]

#: Camera directions (from the focal point towards the camera, LPS) and view-up.
CAMERA_VIEWS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "anterior": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "posterior": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "right": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "left": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "superior": ((0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),
    "inferior": ((0.0, 0.0, -1.0), (0.0, -1.0, 0.0)),
    "3d": ((-0.55, -0.75, 0.35), (0.0, 0.0, 1.0)),
}


@dataclass
class FusionLayer:
    """An intra-procedural volume shown on the planning CT's slices.

    Attributes
    ----------
    volume : ImageVolume
        The intra-op scan in its own LPS frame.
    intraop_to_plan : ndarray (4, 4)
        Registration result mapping intra-op LPS to planning LPS.
    window : WindowLevel
    opacity : float
        Blend opacity (0–1) in ``blend`` mode.
    mode : FusionMode
    checker_mm : float
        Checkerboard square size in mm.
    """

    volume: ImageVolume
    intraop_to_plan: NDArray[np.float64]
    window: WindowLevel
    opacity: float = 0.5
    mode: FusionMode = FusionMode.BLEND
    checker_mm: float = 20.0


class PlanningScene:
    """Named actors of one case on a plotter.

    Parameters
    ----------
    plotter : pyvista.Plotter
        Off-screen plotter or the workstation's ``QtInteractor``.
    mesh_options : MeshOptions, optional
        Triangle budget and smoothing of structure surfaces.
    """

    def __init__(self, plotter: pv.Plotter, *, mesh_options: MeshOptions | None = None) -> None:
        self.plotter = plotter
        self.mesh_options = mesh_options or MeshOptions()
        self.image: ImageVolume | None = None
        self.labels: LabelMap | None = None
        self.window: WindowLevel | None = None
        self.meshes: dict[str, StructureMesh] = {}
        self.structure_actors: dict[str, Any] = {}
        self.visible: dict[str, bool] = {}
        self.cursor_lps: NDArray[np.float64] = np.zeros(3)
        self.slice_planes: dict[str, SlicePlane] = {}
        self._slice_meshes: dict[str, pv.PolyData] = {}
        self._slice_actors: dict[str, Any] = {}
        self.slices_visible = False
        self.slice_overlay = False
        self.fusion: FusionLayer | None = None
        self._meshes: dict[str, pv.PolyData] = {}
        self._actors: dict[str, Any] = {}
        plotter.set_background("#1b1f24", top="#3a4452")

    # -- case ------------------------------------------------------------------------
    def set_case(self, image: ImageVolume | None, labels: LabelMap | None, *,
                 progress: ProgressCallback | None = None) -> None:
        """Show a case: mesh (cached) and add every structure; set up the slices."""
        for name in list(self.structure_actors):
            self.plotter.remove_actor(self.structure_actors.pop(name), render=False)
        self.image, self.labels = image, labels
        self.meshes = {}
        if labels is not None:
            self.meshes = mesh_labels(labels, options=self.mesh_options, progress=progress)
            for name, sm in self.meshes.items():
                if sm.mesh.n_points == 0:
                    continue
                actor = self.plotter.add_mesh(
                    sm.mesh, color=structure_color(sm.structure),
                    opacity=structure_opacity(sm.structure), smooth_shading=True,
                    name=f"structure:{name}", render=False, reset_camera=False,
                    specular=0.3, specular_power=20)
                self.structure_actors[name] = actor
                self.visible[name] = structure_visible_by_default(sm.structure)
                actor.SetVisibility(self.visible[name])
        ref = image if image is not None else (labels.grid if labels is not None else None)
        if ref is not None:
            self.cursor_lps = ref.extent_lps().mean(axis=0)
            if image is not None:
                self.window = default_window(image)
            self.slice_planes = {o.value: standard_plane(ref, o, self.cursor_lps)
                                 for o in Orientation}
        if self.slices_visible:
            self._update_slices()

    def structure_names(self) -> list[str]:
        """Names of the structures with a surface."""
        return list(self.structure_actors)

    def set_structure_visible(self, name: str, visible: bool) -> None:
        """Show or hide one structure."""
        self._structure_actor(name).SetVisibility(bool(visible))
        self.visible[name] = bool(visible)

    def set_structure_opacity(self, name: str, opacity: float) -> None:
        """Opacity (0–1) of one structure."""
        if not 0.0 <= opacity <= 1.0:
            raise InputError(f"opacity must be between 0 and 1; got {opacity}")
        self._structure_actor(name).GetProperty().SetOpacity(float(opacity))

    def set_structure_color(self, name: str, rgb: tuple[float, float, float]) -> None:
        """Display colour (RGB 0–1) of one structure."""
        self._structure_actor(name).GetProperty().SetColor(*map(float, rgb))

    def _structure_actor(self, name: str) -> Any:
        try:
            return self.structure_actors[name]
        except KeyError:
            raise InputError(f"no structure surface named {name!r}; available: "
                             f"{', '.join(self.structure_actors) or '(none)'}") from None

    # -- slices ----------------------------------------------------------------------
    def set_window(self, window: WindowLevel) -> None:
        """Window/level of the slice planes."""
        self.window = window
        if self.slices_visible:
            self._update_slices()

    def set_cursor(self, point_lps: ArrayLike) -> None:
        """Move the three slice planes to pass through ``point_lps``."""
        p = np.asarray(point_lps, dtype=float).reshape(3)
        if not np.all(np.isfinite(p)):
            raise InputError("cursor must be finite LPS mm")
        self.cursor_lps = p
        self.slice_planes = {k: pl.moved_to(p) for k, pl in self.slice_planes.items()}
        if self.slices_visible:
            self._update_slices()

    def show_slices(self, visible: bool = True, *, overlay: bool | None = None) -> None:
        """Show or hide the axial/coronal/sagittal planes in 3D."""
        self.slices_visible = bool(visible)
        if overlay is not None:
            self.slice_overlay = overlay
        if visible:
            self._update_slices()
        for actor in self._slice_actors.values():
            actor.SetVisibility(self.slices_visible)

    def slice_rgb(self, plane: SlicePlane) -> NDArray[np.uint8]:
        """The RGB picture of a plane: windowed image, fused volume, structures."""
        if self.image is None:
            raise InputError("no image loaded; cannot draw a slice")
        window = self.window or default_window(self.image)
        overlay = None
        if self.slice_overlay and self.labels is not None:
            visible = {s.name for s in self.labels.structures
                       if self.visible.get(s.name, structure_visible_by_default(s))}
            overlay = label_overlay(self.labels, plane, visible=visible)
        rgb = windowed_rgb(reslice(self.image, plane), window, overlay)
        if self.fusion is not None:
            f = self.fusion
            other = reslice(f.volume, plane, volume_to_plane=f.intraop_to_plan, fill=np.nan)
            valid = np.isfinite(other)
            orgb = windowed_rgb(np.where(valid, other, f.window.low), f.window)
            rgb = fuse(rgb, orgb, valid, mode=f.mode, opacity=f.opacity,
                       checker_px=max(1, int(round(f.checker_mm / plane.spacing_mm))))
        return rgb

    def _update_slices(self) -> None:
        if self.image is None:
            return
        for key, plane in self.slice_planes.items():
            rgb = self.slice_rgb(plane)
            tex = pv.Texture(np.ascontiguousarray(rgb))  # pyvista: row 0 shows at the top
            quad = slice_quad(plane.corners_lps())
            if key in self._slice_actors:
                self._slice_meshes[key].points = quad.points
                self._slice_actors[key].texture = tex
            else:
                self._slice_meshes[key] = quad
                self._slice_actors[key] = self.plotter.add_mesh(
                    quad, texture=tex, name=f"slice:{key}", lighting=False,
                    render=False, reset_camera=False)
            self._slice_actors[key].SetVisibility(self.slices_visible)

    # -- fusion ------------------------------------------------------------------------
    def set_fusion(self, layer: FusionLayer | None) -> None:
        """Show (or clear with None) an intra-procedural volume on the slices."""
        if layer is not None:
            m = np.asarray(layer.intraop_to_plan, dtype=float)
            if m.shape != (4, 4) or not np.all(np.isfinite(m)):
                raise InputError("intraop_to_plan must be a finite 4×4 matrix")
            if not 0.0 <= layer.opacity <= 1.0:
                raise InputError(f"fusion opacity must be between 0 and 1; got {layer.opacity}")
        self.fusion = layer
        if self.slices_visible:
            self._update_slices()

    # -- plan objects ------------------------------------------------------------------
    def _put(self, key: str, mesh: pv.PolyData, **kwargs: Any) -> Any:
        """Add ``mesh`` as actor ``key`` or, when it exists, copy the data in place."""
        if key in self._actors:
            self._meshes[key].copy_from(mesh)
            self._actors[key].SetVisibility(True)
            return self._actors[key]
        self._meshes[key] = mesh
        actor = self.plotter.add_mesh(mesh, name=key, render=False, reset_camera=False,
                                      **kwargs)
        self._actors[key] = actor
        return actor

    def remove(self, key: str) -> None:
        """Remove a plan actor (needle:NAME, marker:target, zone:NAME, ...) if present."""
        actor = self._actors.pop(key, None)
        self._meshes.pop(key, None)
        if actor is not None:
            self.plotter.remove_actor(actor, render=False)

    def keys(self) -> list[str]:
        """Names of the plan actors currently in the scene."""
        return list(self._actors)

    def mesh(self, key: str) -> pv.PolyData:
        """The data of plan actor ``key``."""
        try:
            return self._meshes[key]
        except KeyError:
            raise InputError(f"no scene object {key!r}; present: {', '.join(self._actors)}") \
                from None

    def set_needle(self, name: str, entry_lps: ArrayLike, target_lps: ArrayLike, *,
                   diameter_mm: float, slack_mm: ArrayLike | None = None,
                   positions_mm: ArrayLike | None = None, caution_band_mm: float = 2.0,
                   markers: bool = True) -> None:
        """Draw or move needle ``name`` (true gauge diameter, coloured by clearance)."""
        mesh = needle_mesh(entry_lps, target_lps, diameter_mm=diameter_mm, slack_mm=slack_mm,
                           positions_mm=positions_mm, caution_band_mm=caution_band_mm)
        self._put(f"needle:{name}", mesh, scalars="RGB", rgb=True, smooth_shading=True)
        if markers:
            self.set_marker(f"entry:{name}", entry_lps, color=(0.25, 0.55, 1.0), radius_mm=2.0)

    def set_marker(self, key: str, point_lps: ArrayLike, *,
                   color: tuple[float, float, float] = (0.1, 0.9, 0.2),
                   radius_mm: float = 2.5) -> None:
        """A sphere marker (``target``, ``entry:NAME``, ...)."""
        self._put(f"marker:{key}", marker_mesh(point_lps, radius_mm=radius_mm), color=color,
                  smooth_shading=True)

    def set_surface(self, key: str, mesh: pv.PolyData, *,
                    color: tuple[float, float, float] | None = None, opacity: float = 1.0,
                    rgb_scalars: str | None = None, style: str = "surface") -> None:
        """Any other surface (``zone:NAME``, ``shell:NAME``, ``skin``)."""
        if mesh.n_points == 0:
            self.remove(key)
            return
        kwargs: dict[str, Any] = dict(opacity=opacity, smooth_shading=True, style=style)
        if rgb_scalars:
            kwargs.update(scalars=rgb_scalars, rgb=True)
        else:
            kwargs["color"] = color or (0.8, 0.8, 0.8)
        self._put(key, mesh, **kwargs)

    def set_zone(self, name: str, zone_surface: pv.PolyData,
                 shell_surface: pv.PolyData | None = None) -> None:
        """An ablation zone (translucent orange) and optionally its margin shell (wire)."""
        self.set_surface(f"zone:{name}", zone_surface, color=(1.0, 0.55, 0.1), opacity=0.35)
        if shell_surface is not None:
            self.set_surface(f"shell:{name}", shell_surface, color=(0.2, 1.0, 0.9),
                             opacity=0.25, style="wireframe")

    def set_skin_risk(self, skin_surface: pv.PolyData | None, *, opacity: float = 0.9) -> None:
        """The search's risk map on the skin (None removes it)."""
        if skin_surface is None:
            self.remove("skin")
            return
        self.set_surface("skin", skin_surface, rgb_scalars="RGB", opacity=opacity)

    # -- camera ------------------------------------------------------------------------
    def view(self, name: str = "3d", *, focus_lps: ArrayLike | None = None,
             zoom: float = 1.0) -> None:
        """Point the camera: ``anterior``, ``posterior``, ``left``, ``right``, ``superior``,
        ``inferior`` or ``3d`` (anterior-right-superior oblique)."""
        try:
            direction, up = CAMERA_VIEWS[name]
        except KeyError:
            raise InputError(f"unknown view {name!r}; use one of {sorted(CAMERA_VIEWS)}") \
                from None
        bounds = self._bounds()
        centre = np.array([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2,
                           (bounds[4] + bounds[5]) / 2]) if focus_lps is None else \
            np.asarray(focus_lps, float)
        radius = float(np.linalg.norm([bounds[1] - bounds[0], bounds[3] - bounds[2],
                                       bounds[5] - bounds[4]])) / 2 or 100.0
        cam = self.plotter.camera
        cam.focal_point = tuple(centre)
        cam.position = tuple(centre + np.asarray(direction) * radius * 3.2)
        cam.up = up
        cam.view_angle = 30.0
        self.plotter.reset_camera_clipping_range()
        cam.zoom(zoom)

    def centre_lps(self) -> NDArray[np.float64]:
        """Centre of the case's image extent (LPS mm)."""
        b = self._bounds()
        return np.array([(b[0] + b[1]) / 2, (b[2] + b[3]) / 2, (b[4] + b[5]) / 2])

    def _bounds(self) -> tuple[float, ...]:
        if self.labels is not None:
            ext = self.labels.grid.extent_lps()
        elif self.image is not None:
            ext = self.image.extent_lps()
        else:
            return tuple(self.plotter.bounds)
        lo, hi = ext.min(axis=0), ext.max(axis=0)
        return (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])

    def on_pick(self, callback: Callable[[NDArray[np.float64]], None]) -> None:
        """Call ``callback(point_lps)`` when the user picks a surface point (GUI use)."""
        def picked(point: Any) -> None:
            if point is not None:
                callback(np.asarray(point, dtype=float))

        self.plotter.enable_surface_point_picking(callback=picked, show_message=False,
                                                  show_point=False, left_clicking=False)
