"""The planning engine: exact trajectory metrics and the data the search needs.

Clearance definition (the contract)
-----------------------------------
A structure is the union of its voxels, each voxel a full cell of the grid
(``[n−½, n+½]`` in index space along each axis, possibly oblique or flipped in
LPS). The *clearance* of a needle to a structure is the Euclidean distance (mm)
from the needle's axis **segment** entry→target to that union, minus the needle's
outer radius. A structure is *crossed* when the axis segment passes through one of
its cells. :meth:`PlanningEngine.evaluate` computes clearances exactly (up to
floating point): the closest point of a union of cells to a segment outside it lies
on a *surface cell* (a cell with a face neighbour outside the structure); the
engine indexes every structure's surface cells once (blocks of 4³, 16³, 64³ voxels)
and a compiled branch and bound takes the exact segment-to-box distance of every
cell that can possibly be the closest
(:mod:`ir_planner.planning.clearance_table`); crossings come from an exact
traversal of the cells along the segment. The automatic search uses the same
kernel for every candidate × structure within the accuracy contract, exact near
each forbidden structure's margin (see :mod:`ir_planner.planning.search`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from ir_planner.core.catalog import CATEGORY_DEFAULTS, Category
from ir_planner.core.errors import InputError, PlanError
from ir_planner.core.labels import LabelMap, Structure
from ir_planner.core.plan import StructureOverride, TrajectoryRecord
from ir_planner.core.progress import ProgressCallback, report, subrange
from ir_planner.core.volume import ImageVolume, same_grid
from ir_planner.planning.body import PADDING_BELOW_HU, body_mask, next_to_padding, skin_points
from ir_planner.planning.clearance_table import (
    SurfaceIndex,
    build_surface_index,
    structure_distances,
)
from ir_planner.planning.devices import DEFAULT_NEEDLE, Needle
from ir_planner.planning.geometry import (
    GridFrame,
    segment_box_distance,
    traverse_cells,
)
from ir_planner.planning.metrics import Crossing, StructureClearance, TrajectoryMetrics, Verdict

__all__ = ["PlanningEngine", "effective_structures", "CAUTION_BAND_MM",
           "TARGET_ORGAN_CATEGORIES", "UNNAMED", "UNNAMED_NEAR_MM"]

#: A forbidden structure closer than margin + this band gives a "caution" verdict.
CAUTION_BAND_MM = 2.0
#: Outline points with one of these structures within this depth are not skin.
SKIN_ORGAN_MM = 3.0
SKIN_ORGAN_CATEGORIES = frozenset({Category.VESSEL, Category.LUNG, Category.AIRWAY,
                                   Category.BOWEL, Category.SOLID_ORGAN, Category.NERVE})

#: Names the label readers give to structures without a name (``label_7``,
#: ``layer1_label_3``): nothing tells what they are, so they are not avoided.
UNNAMED = re.compile(r"(layer\d+_)?label_\d+")

#: A path closer than this (mm) to an unnamed structure is never called "safe".
UNNAMED_NEAR_MM = 5.0

#: Forbidden categories that are allowed when they contain the target: the target's
#: organ (a lung nodule lies in the lung; pleural crossings then give a caution; a
#: splenic or pancreatic lesion lies in an organ avoided on the way to other targets).
TARGET_ORGAN_CATEGORIES = frozenset({Category.LUNG, Category.SOLID_ORGAN})


def effective_structures(
    labels: LabelMap, overrides: Mapping[str, StructureOverride | Mapping[str, Any]] | None
) -> list[Structure]:
    """The label map's structures with the plan's overrides applied.

    A category override first resets forbidden/margin to that category's defaults;
    explicit ``forbidden``/``margin_mm`` overrides win over both.
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(labels.names)
    if unknown:
        raise InputError(f"structure override(s) for unknown structure(s) {sorted(unknown)}; "
                         f"available: {', '.join(labels.names)}")
    out = []
    for s in labels.structures:
        ov = overrides.get(s.name)
        if ov is None:
            out.append(s)
            continue
        ov = ov if isinstance(ov, StructureOverride) else StructureOverride.model_validate(ov)
        changes: dict[str, Any] = {}
        if ov.category is not None:
            try:
                cat = Category(ov.category)
            except ValueError as exc:
                raise InputError(f"override for {s.name!r}: unknown category {ov.category!r}; "
                                 f"use one of {[c.value for c in Category]}") from exc
            d = CATEGORY_DEFAULTS[cat]
            changes.update(category=cat, forbidden=d.forbidden, margin_mm=d.margin_mm)
        if ov.forbidden is not None:
            changes["forbidden"] = ov.forbidden
        if ov.margin_mm is not None:
            changes["margin_mm"] = float(ov.margin_mm)
        out.append(replace(s, **changes))
    return out


@dataclass
class _StructureData:
    struct: Structure
    bbox_lo: NDArray[np.int64]  # ijk inclusive
    bbox_hi: NDArray[np.int64]
    centres_q: NDArray[np.float64]  # surface cell centres, scaled-index mm (a view)
    index: int  # column in the engine's surface index
    dist_field: Any = None  # search distance field, built lazily by the search module
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tree(self) -> cKDTree:
        """k-d tree of the surface cell centres (built on first use)."""
        t = self.extra.get("tree")
        if t is None:
            t = self.extra["tree"] = cKDTree(self.centres_q)
        return t


class PlanningEngine:
    """Precomputed planning data for one image + label map, and the planning API.

    Parameters
    ----------
    image : ImageVolume or None
        The CT/MR on the label grid. Used for the body outline when the labels have
        no body/skin structure (CT threshold); may be None if they do.
    labels : LabelMap
        The segmentation. Empty structures are ignored (with a warning).
    overrides : mapping, optional
        ``Plan.structure_overrides`` (name → forbidden / margin_mm / category).
    needle : Needle
        Default needle (gauge → outer radius; usable length).
    caution_band_mm : float
        A forbidden structure within margin + this band makes the verdict "caution".
    field_spacing_mm : float
        Search distance maps use blocks of ⌊field_spacing_mm / spacing⌋ voxels per
        axis (1 on grids coarser than this): bounds stay guaranteed, only looser.
    body_threshold : float, optional
        Threshold (image units) of the body outline when the labels have no body
        structure; default −300 HU on CT, automatic (Otsu) on MR / non-HU images.
    progress : ProgressCallback, optional
        Reports the precomputation.

    Examples
    --------
    >>> engine = PlanningEngine(ct, labels)                       # doctest: +SKIP
    >>> m = engine.evaluate(entry_lps, target_lps)                # doctest: +SKIP
    >>> m.verdict, m.clearances["aorta"].clearance_mm             # doctest: +SKIP
    """

    def __init__(
        self,
        image: ImageVolume | None,
        labels: LabelMap,
        *,
        overrides: Mapping[str, StructureOverride | Mapping[str, Any]] | None = None,
        needle: Needle = DEFAULT_NEEDLE,
        caution_band_mm: float = CAUTION_BAND_MM,
        field_spacing_mm: float = 1.5,
        body_threshold: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        if image is not None and not same_grid(image, labels.grid, tol_mm=1e-2):
            raise InputError(
                f"labels (grid {labels.grid.shape_ijk}, spacing "
                f"{np.round(labels.grid.spacing_mm, 3).tolist()} mm) do not match the image "
                f"(grid {image.shape_ijk}, spacing {np.round(image.spacing_mm, 3).tolist()} mm); "
                "resample the labels onto the image grid"
            )
        self.image = image
        self.labels = labels
        self.grid = labels.grid
        self.frame = GridFrame.from_volume(self.grid)
        self.needle = needle
        self.caution_band_mm = float(caution_band_mm)
        self.field_spacing_mm = float(field_spacing_mm)
        self.warnings: list[str] = []
        self.structures = effective_structures(labels, overrides)
        report(progress, 0.0, "indexing structures")
        self._data: dict[str, _StructureData] = {}
        self._label_to_name: list[dict[int, str]] = [{} for _ in labels.layers]
        self._build_index()
        report(progress, 0.6, "indexing structures")
        if not self._data:
            raise InputError("the label map has no non-empty structure; nothing to plan against")
        report(progress, 0.6, "body outline")
        self.body, self.body_source = body_mask(image, labels, threshold=body_threshold)
        self._skin: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
        self._skin_progress = subrange(progress, 0.6, 1.0)
        try:
            self.skin_points()
        except InputError as exc:
            # e.g. an image cropped inside the patient: trajectories can still be
            # evaluated; the search raises this error (it needs a skin to enter through)
            self.warnings.append(f"no skin surface for the search: {exc}")
        report(progress, 1.0, "precomputation done")

    # -- precomputation -------------------------------------------------------------
    def _build_index(self) -> None:
        """Surface cells of every structure (one compiled pass over the label layers),
        grouped for the exact distance kernel; empty structures are dropped with a
        warning."""
        labels = self.labels
        structs = self.structures
        n_lut = max((s.label for s in structs), default=0) + 1
        luts = np.full((max(1, len(labels.layers)), n_lut), -1, dtype=np.int16)
        for n, s in enumerate(structs):
            luts[s.layer, s.label] = n
        index = build_surface_index(labels.layers, luts, len(structs), self.frame.spacing_mm)
        counts = index.cell_counts()
        keep = np.flatnonzero(counts > 0)
        for n in np.flatnonzero(counts == 0):
            self.warnings.append(f"structure {structs[n].name!r} is empty; ignored")
        if len(keep) < len(structs):
            index = index.subset(keep)
            remap = np.full(len(structs) + 1, -1, dtype=np.int16)
            remap[keep] = np.arange(len(keep))
            luts = np.where(luts >= 0, remap[luts], -1).astype(np.int16)
        bb_lo, bb_hi = index.bounding_boxes_ijk()
        for col, n in enumerate(keep):
            s = structs[n]
            first, stop = index.cell_range(col)
            self._label_to_name[s.layer][s.label] = s.name
            self._data[s.name] = _StructureData(s, bb_lo[col], bb_hi[col],
                                                index.cells[first:stop], col)
        self._index = index
        self._index_luts = luts

    @property
    def surface_index(self) -> SurfaceIndex:
        """Surface cells of every (non-empty) structure, columns in :attr:`_data` order."""
        return self._index

    def endpoint_zero(self, a_q: NDArray[np.float64], b_q: NDArray[np.float64]
                      ) -> NDArray[np.bool_]:
        """(n, n_struct) pairs (segment ``a_q[n] → b_q``, structure) with an endpoint
        inside one of the structure's cells: distance 0 (the kernel searches surface
        cells only)."""
        a_q = np.asarray(a_q, dtype=np.float64).reshape(-1, 3)
        luts = self._index_luts
        shape = np.asarray(self.frame.shape_ijk)
        sp = self.frame.spacing_mm
        n = len(a_q)
        zero = np.zeros((n, self._index.n_struct), dtype=bool)
        for pts, rows in ((a_q, np.arange(n)), (np.asarray(b_q, float).reshape(1, 3), None)):
            u = pts / sp
            inside = np.all((u >= -0.5) & (u <= shape - 0.5), axis=1)
            ijk = np.clip(np.floor(u + 0.5).astype(np.int64), 0, shape - 1)
            for li, layer in enumerate(self.labels.layers):
                lab = layer[ijk[:, 2], ijk[:, 1], ijk[:, 0]].astype(np.int64)
                ok = inside & (lab > 0) & (lab < luts.shape[1])
                s_idx = np.where(ok, luts[li][np.where(ok, lab, 0)], -1)
                hit = s_idx >= 0
                if rows is None:
                    if hit[0]:
                        zero[:, s_idx[0]] = True
                else:
                    zero[rows[hit], s_idx[hit]] = True
        return zero

    def skin_points(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Skin surface points (LPS mm, ≤ 2 mm apart) and outward unit normals."""
        if self._skin is None:
            report(self._skin_progress, 0.0, "skin surface")
            pts, nrm = skin_points(self.body, self.grid, spacing_mm=2.0)
            if self.image is not None and self.body_source.startswith("CT threshold"):
                # Outline against scanner padding (a truncated field of view): not skin.
                pad = next_to_padding(pts, nrm, self.image)
                if pad.any():
                    msg = (f"{int(pad.sum())} of {len(pts)} outline points border image "
                           f"padding (< {PADDING_BELOW_HU:g} HU): the field of view cuts "
                           "through the patient there; they are not used as entries")
                    self.warnings.append(msg)
                    self.body_source += f" (WARNING: {msg})"
                    pts, nrm = pts[~pad], nrm[~pad]
            at_organ = self._skin_at_organ(pts, nrm)
            if at_organ.any():
                msg = (f"{int(at_organ.sum())} of {len(pts)} outline points lie within "
                       f"{SKIN_ORGAN_MM:g} mm of an internal organ or vessel (the image is cut "
                       "or padded there: the real skin lies beyond); they are not used as "
                       "entries")
                self.warnings.append(msg)
                self.body_source += f" (WARNING: {msg})"
                pts, nrm = pts[~at_organ], nrm[~at_organ]
            self._skin = (pts, nrm)
            report(self._skin_progress, 1.0, "skin surface")
        return self._skin

    def _skin_at_organ(self, pts: NDArray[np.float64], nrm: NDArray[np.float64]
                       ) -> NDArray[np.bool_]:
        """Outline points with an internal organ, vessel, bowel, lung, airway or nerve
        cell at 1, 2 or 3 mm inward (nearest voxel): real skin is never that close to
        them, a body cut by a padded or resampled image's edge is."""
        out = np.zeros(len(pts), dtype=bool)
        inner = [s for s in self.structures
                 if s.category in SKIN_ORGAN_CATEGORIES and s.name in self._data]
        if not inner or not len(pts):
            return out
        shape = np.asarray(self.grid.shape_ijk)
        for depth in np.arange(1.0, SKIN_ORGAN_MM + 0.5, 1.0):
            ijk = np.rint(self.grid.world_to_index(pts - depth * nrm)).astype(np.int64)
            ok = np.all((ijk >= 0) & (ijk < shape), axis=1)
            for layer_n in sorted({s.layer for s in inner}):
                wanted = np.array([s.label for s in inner if s.layer == layer_n])
                v = self.labels.layers[layer_n][ijk[ok, 2], ijk[ok, 1], ijk[ok, 0]]
                out[ok] |= np.isin(v, wanted)
        return out

    # -- helpers ---------------------------------------------------------------------------
    def structure(self, name: str) -> Structure:
        """Effective (override-applied) structure called ``name``."""
        for s in self.structures:
            if s.name == name:
                return s
        # "Liver" from a DICOM SEG, "liver" typed: one case-insensitive match is accepted
        folded = [s for s in self.structures if s.name.casefold() == name.casefold()]
        if len(folded) == 1:
            return folded[0]
        raise InputError(f"no structure named {name!r}; available: "
                         f"{', '.join(s.name for s in self.structures)}")

    def unclassified(self, name: str) -> bool:
        """Whether nothing tells what structure ``name`` is: no name (``label_7``) or a
        name the catalog does not recognise (category ``other``, no override)."""
        s = self.structure(name)
        return bool(UNNAMED.fullmatch(s.name)) or s.category == Category.OTHER

    @property
    def forbidden(self) -> list[Structure]:
        """Non-empty forbidden structures (after overrides)."""
        return [d.struct for d in self._data.values() if d.struct.forbidden]

    def structure_point(self, name: str) -> tuple[float, float, float]:
        """A point inside a structure (LPS mm): its centroid if inside, else the
        interior voxel farthest from the boundary."""
        s = self.structure(name)
        if s.name not in self._data:
            raise InputError(f"structure {name!r} is empty")
        d = self._data[s.name]
        lo, hi = d.bbox_lo, d.bbox_hi
        crop = self.labels.layers[s.layer][lo[2]:hi[2] + 1, lo[1]:hi[1] + 1,
                                            lo[0]:hi[0] + 1] == s.label
        kji = np.argwhere(crop)
        c = kji.mean(axis=0)
        ci = np.rint(c).astype(int)
        if not crop[tuple(ci)]:
            dist = ndi.distance_transform_edt(crop, sampling=self.frame.spacing_mm[::-1])
            ci = np.array(np.unravel_index(int(np.argmax(dist)), crop.shape))
            c = ci.astype(float)
        ijk = c[::-1] + lo
        p = self.grid.index_to_world(ijk)
        return (float(p[0]), float(p[1]), float(p[2]))

    def labels_at(self, point_lps: ArrayLike) -> list[str]:
        """Names of the structures whose cell contains ``point_lps``."""
        ijk = np.floor(self.frame.lps_to_index(np.asarray(point_lps, float)) + 0.5).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= np.asarray(self.frame.shape_ijk)):
            return []
        out = []
        for n, layer in enumerate(self.labels.layers):
            v = int(layer[ijk[2], ijk[1], ijk[0]])
            if v and v in self._label_to_name[n]:
                out.append(self._label_to_name[n][v])
        return out

    def in_body(self, ijk: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Body-mask value of cells (m, 3) (False outside the grid)."""
        ijk = np.atleast_2d(ijk)
        ok = np.all((ijk >= 0) & (ijk < np.asarray(self.frame.shape_ijk)), axis=1)
        c = np.clip(ijk, 0, np.asarray(self.frame.shape_ijk) - 1)
        return ok & self.body[c[:, 2], c[:, 1], c[:, 0]]

    def check_target(self, target_lps: ArrayLike) -> NDArray[np.float64]:
        """Validate a target: inside the image, not inside a forbidden structure."""
        t = _point(target_lps, "target")
        if not bool(self.grid.contains_world(t)):
            ext = self.grid.extent_lps()
            raise InputError(
                f"target {np.round(t, 1).tolist()} (LPS mm) is outside the image "
                f"(x {ext[:, 0].min():.1f}..{ext[:, 0].max():.1f}, "
                f"y {ext[:, 1].min():.1f}..{ext[:, 1].max():.1f}, "
                f"z {ext[:, 2].min():.1f}..{ext[:, 2].max():.1f} mm)")
        allowed = self.allowed_at_target(t)
        bad = [n for n in self.labels_at(t)
               if self._data[n].struct.forbidden and n not in allowed]
        if bad:
            raise PlanError(
                f"target {np.round(t, 1).tolist()} (LPS mm) lies inside forbidden structure "
                f"{', '.join(bad)}; move the target or allow the structure "
                "(structure override forbidden=false)")
        return t

    def allowed_at_target(self, target_lps: ArrayLike) -> set[str]:
        """Forbidden structures allowed for paths to this target: those of the target's
        organ categories (:data:`TARGET_ORGAN_CATEGORIES`, e.g. lung) containing it."""
        return {n for n in self.labels_at(target_lps)
                if self._data[n].struct.forbidden
                and self._data[n].struct.category in TARGET_ORGAN_CATEGORIES}

    # -- exact clearance -----------------------------------------------------------------
    def exact_distance(self, name: str, a_lps: ArrayLike, b_lps: ArrayLike
                       ) -> tuple[float, float]:
        """Exact distance (mm) from segment a→b to a structure's cells and its parameter t.

        Assumes nothing about crossing: returns 0 when the segment touches a cell.
        The segment parameter t runs from a (0) to b (1).
        """
        d = self._data[name]
        a = self.frame.lps_to_q(np.asarray(a_lps, float))
        b = self.frame.lps_to_q(np.asarray(b_lps, float))
        return self._exact_q(d, a, b)

    def _exact_q(self, d: _StructureData, a: NDArray[np.float64], b: NDArray[np.float64],
                 cap: float = np.inf) -> tuple[float, float]:
        """Exact distance (q-space segment a→b); if it is ≥ ``cap`` a lower bound ≥ cap
        may be returned instead (cheaper)."""
        return self._exact_many([d], a, b, cap=cap)[0]

    def _exact_many(self, datas: list[_StructureData], a: NDArray[np.float64],
                    b: NDArray[np.float64], cap: float = np.inf) -> list[tuple[float, float]]:
        """Exact (distance mm, t) from segment a→b (q-space) to each structure's cells.

        Branch and bound over the structure's surface cells (compiled kernel of
        :mod:`ir_planner.planning.clearance_table`, ``tol = 0``), then the exact
        segment-to-box distance and its parameter t (0 at a, 1 at b) of the closest
        cell. With a finite ``cap``, structures whose distance is ≥ cap get
        (cap + 1e-6, 0) instead of their exact distance.
        """
        if not datas:
            return []
        a = np.asarray(a, dtype=np.float64).reshape(3)
        b = np.asarray(b, dtype=np.float64).reshape(3)
        want = np.zeros(self._index.n_struct, dtype=bool)
        cols = np.array([d.index for d in datas], dtype=np.int64)
        want[cols] = True
        zero = self.endpoint_zero(a, b)
        _, hi, cell = structure_distances(self._index, a[None, :], b, zero=zero, want=want,
                                          cap_mm=float(cap), return_cells=True)
        sp = self.frame.spacing_mm
        e = cell[0, cols].astype(np.int64)
        found = (e >= 0) & ~zero[0, cols]
        dist = np.full(len(cols), float(cap) + 1e-6)
        t = np.zeros(len(cols))
        if found.any():
            c = self._index.cells[e[found]]
            dist[found], t[found] = segment_box_distance(a, b, c - sp / 2, c + sp / 2)
        z = zero[0, cols]
        if z.any():
            # an endpoint lies in one of its cells: distance 0 at that end
            za = self.endpoint_zero(a, a)[0, cols]
            dist[z] = 0.0
            t[z] = np.where(za[z], 0.0, 1.0)
        return [(float(x), float(y)) for x, y in zip(dist, t)]

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(
        self,
        entry_lps: ArrayLike,
        target_lps: ArrayLike,
        *,
        needle: Needle | None = None,
        structures: str = "all",
        check_entry: bool = True,
        max_cc_angle_deg: float | None = None,
        min_organ_length_mm: Mapping[str, float] | None = None,
        range_mm: float | None = None,
    ) -> TrajectoryMetrics:
        """All metrics of the straight trajectory entry → target (exact clearances).

        Parameters
        ----------
        entry_lps, target_lps : array_like (3,)
            LPS mm.
        needle : Needle, optional
            Defaults to the engine's needle.
        structures : {"all", "forbidden"}
            Which clearances to compute; "forbidden" is the fast path used while the
            user drags a point (crossings and the verdict are always complete).
        check_entry : bool
            Raise when the entry lies deep inside the body.
        max_cc_angle_deg : float, optional
            Adds a caution when the craniocaudal angle exceeds it.
        min_organ_length_mm : mapping, optional
            Organ name → required length (mm) through it; caution if shorter.
        range_mm : float, optional
            When given, structures farther than this (axis distance, mm) from the
            needle are not computed exactly: their clearance is a lower bound (≥ the
            range, or the distance to their bounding box) flagged ``exact=False``.
            None = all exact.

        Raises
        ------
        InputError, PlanError
            Zero-length path, target outside the image or inside a forbidden
            structure, entry inside the body.
        """
        needle = needle or self.needle
        target = self.check_target(target_lps)
        allowed = self.allowed_at_target(target)

        def is_forb(name: str) -> bool:
            return self._data[name].struct.forbidden and name not in allowed

        entry = _point(entry_lps, "entry")
        length = float(np.linalg.norm(target - entry))
        if length < 1e-6:
            raise InputError("entry and target are the same point: zero-length trajectory")
        direction = (target - entry) / length
        radius = needle.outer_radius_mm
        frame = self.frame

        # Exact traversal of the cells along entry -> target.
        u0 = frame.lps_to_index(entry)
        u1 = frame.lps_to_index(target)
        cells, t_in, t_out = traverse_cells(u0, u1, frame.shape_ijk)
        inside_grid = cells[:, 0] >= 0
        body = self.in_body(cells) & inside_grid
        skin_lps: NDArray[np.float64] | None = None
        if body.any():
            first = int(np.argmax(body))
            skin_t = float(t_in[first])
            skin_lps = entry + skin_t * (target - entry)
            if check_entry and first == 0:
                # Entry in a body cell: accept it on the skin (a 3x3x3 neighbour outside).
                c = cells[0]
                nb = c + np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1)
                                   for k in (-1, 0, 1)])
                if self.in_body(nb).all():
                    raise PlanError(
                        f"entry {np.round(entry, 1).tolist()} (LPS mm) lies inside the body, "
                        "not on the skin; choose an entry point on or outside the skin")
        depth = length * (1.0 - (skin_t if skin_lps is not None else 0.0))

        crossings: list[Crossing] = []
        inside_len: dict[str, float] = {}
        lung_cells = np.zeros(len(cells), dtype=bool)
        for n, layer in enumerate(self.labels.layers):
            vals = np.zeros(len(cells), dtype=np.int64)
            c = cells[inside_grid]
            vals[inside_grid] = layer[c[:, 2], c[:, 1], c[:, 0]]
            for lab in np.unique(vals[vals > 0]):
                name = self._label_to_name[n].get(int(lab))
                if name is None:
                    continue
                s = self._data[name].struct
                on = vals == lab
                if s.category == Category.LUNG:
                    lung_cells |= on
                for start, stop in _runs(on):
                    enter_mm = float(t_in[start]) * length
                    exit_mm = float(t_out[stop - 1]) * length
                    crossings.append(Crossing(name, enter_mm, exit_mm, is_forb(name)))
                    inside_len[name] = inside_len.get(name, 0.0) + exit_mm - enter_mm
        crossings.sort(key=lambda c: c.enter_mm_from_entry)
        pleural = len(_runs(lung_cells))
        crossed = {c.name for c in crossings}

        clearances: dict[str, StructureClearance] = {}
        a_q = frame.lps_to_q(entry)
        b_q = frame.lps_to_q(target)
        todo = [d for d in self._data.values()
                if d.struct.name not in crossed
                and (structures != "forbidden" or is_forb(d.struct.name))]
        far: dict[str, tuple[float, float]] = {}
        if range_mm is not None and todo:
            # Lower bound from the structures' bounding boxes: beyond range_mm the
            # exact value is not needed (reported as a lower bound, exact=False).
            sp = frame.spacing_mm
            lo = np.array([d.bbox_lo for d in todo]) * sp - sp / 2
            hi = np.array([d.bbox_hi for d in todo]) * sp + sp / 2
            bd, bt = segment_box_distance(a_q[None, :], b_q[None, :], lo, hi)
            far = {d.struct.name: (float(x), float(y))
                   for d, x, y in zip(todo, bd, bt) if x > range_mm}
            todo = [d for d in todo if d.struct.name not in far]
        cap = range_mm if range_mm is not None else np.inf
        exact = dict(zip([d.struct.name for d in todo],
                         self._exact_many(todo, a_q, b_q, cap=cap)))
        # Values beyond the range are lower bounds only (cheap early exit).
        far.update({k: v for k, v in exact.items() if v[0] >= cap})
        for name, d in self._data.items():
            s = d.struct
            if structures == "forbidden" and not is_forb(name):
                continue
            if name in crossed:
                first_c = next(c for c in crossings if c.name == name)
                t = first_c.enter_mm_from_entry / length
                dist = 0.0
            elif name in far:
                dist, t = far[name]
            else:
                dist, t = exact[name]
            clearances[name] = StructureClearance(
                name, dist - radius, t * length,
                tuple(float(v) for v in entry + t * (target - entry)),  # type: ignore[arg-type]
                is_forb(name), float(s.margin_mm), exact=name not in far)

        # Checks the labels and the image extent cannot pass silently.
        extra_unsafe: list[str] = []
        extra_caution: list[str] = []
        if len(cells) and not inside_grid[0] and inside_grid.any():
            f = int(np.argmax(inside_grid))
            if body[f]:
                extra_unsafe.append(
                    f"enters the image inside the body {float(t_in[f]) * length:.1f} mm from "
                    "the entry: that part runs through anatomy outside the scan (not "
                    "checked; depth measured from the image edge)")
        target_structs = self.labels_at(target)
        for name in target_structs:
            if self._data[name].struct.category == Category.BODY:
                continue
            runs = [c for c in crossings if c.name == name]
            if len(runs) > 1:
                where = ", ".join(f"{a.exit_mm_from_entry:.1f}–{b.enter_mm_from_entry:.1f} mm"
                                  for a, b in zip(runs, runs[1:]))
                extra_caution.append(
                    f"leaves and re-enters {name} (gap {where} from the entry): its surface "
                    f"is crossed {len(runs)}×, or a cavity lies between (e.g. the spinal "
                    "canal, avoided only when segmented)")
        if not any(d.struct.forbidden and d.struct.name not in allowed
                   for d in self._data.values()):
            extra_caution.append("no forbidden structure in the labels: nothing was avoided")
        near_unnamed = [
            n for n in self._data if self.unclassified(n) and n not in target_structs
            and (n in crossed or (n in clearances
                                  and clearances[n].clearance_mm < UNNAMED_NEAR_MM))]
        if near_unnamed:
            extra_caution.append(
                f"crosses or passes within {UNNAMED_NEAR_MM:g} mm of unnamed or unrecognised "
                f"structure(s) {', '.join(near_unnamed)} (not classified, not avoided; set "
                "its category in the plan)")

        cc = math.degrees(math.asin(max(-1.0, min(1.0, float(direction[2])))))
        horiz = math.hypot(float(direction[0]), float(direction[1]))
        in_plane = (math.degrees(math.atan2(abs(float(direction[0])), abs(float(direction[1]))))
                    if horiz > 1e-9 else 0.0)
        approach = _approach(direction)
        organ = self._target_organ(target_structs)
        capsule = None
        if organ is not None:
            runs = [c for c in crossings if c.name == organ]
            if runs:
                last = runs[-1]
                p = entry + direction * last.enter_mm_from_entry
                capsule = self._capsule_angle(organ, p[None, :], direction[None, :])[0]
        long_enough = length <= needle.usable_length_mm + 1e-9

        verdict, reasons = self._verdict(clearances, crossings, long_enough, length, needle,
                                         pleural, cc, max_cc_angle_deg, inside_len,
                                         min_organ_length_mm, extra_unsafe, extra_caution)
        return TrajectoryMetrics(
            entry_lps=_tuple(entry), target_lps=_tuple(target), length_mm=length,
            skin_lps=_tuple(skin_lps) if skin_lps is not None else None,
            insertion_depth_mm=depth, needle=needle.to_dict(), needle_long_enough=long_enough,
            craniocaudal_angle_deg=cc, in_plane_angle_deg=in_plane, approach=approach,
            clearances=clearances, crossings=crossings, pleural_crossings=pleural,
            length_in_structure_mm=inside_len, target_structures=target_structs,
            capsule_angle_deg=capsule, verdict=verdict, reasons=reasons)

    def rescore(self, entry_lps: ArrayLike, target_lps: ArrayLike, *,
                range_mm: float = 10.0) -> TrajectoryMetrics:
        """Fast path while dragging (a few ms): :meth:`evaluate` with forbidden-structure
        clearances only, exact within ``range_mm`` of the needle and lower bounds beyond.

        Crossings, angles, lengths and the verdict are complete and exact (``range_mm``
        is above every margin + caution band, so far structures cannot change it).
        """
        max_margin = max((s.margin_mm for s in self.forbidden), default=0.0)
        range_mm = max(range_mm, max_margin + self.caution_band_mm + 1.0)
        return self.evaluate(entry_lps, target_lps, structures="forbidden", check_entry=False,
                             range_mm=range_mm)

    def _verdict(self, clearances: dict[str, StructureClearance], crossings: list[Crossing],
                 long_enough: bool, length: float, needle: Needle, pleural: int, cc: float,
                 max_cc: float | None, inside_len: dict[str, float],
                 min_len: Mapping[str, float] | None, extra_unsafe: list[str] | None = None,
                 extra_caution: list[str] | None = None) -> tuple[Verdict, list[str]]:
        unsafe: list[str] = list(extra_unsafe or [])
        caution: list[str] = []
        for c in crossings:
            if c.forbidden:
                unsafe.append(f"crosses {c.name} (forbidden) from {c.enter_mm_from_entry:.1f} "
                              f"to {c.exit_mm_from_entry:.1f} mm from the entry")
        crossed = {c.name for c in crossings}
        for c in sorted(clearances.values(), key=lambda x: x.clearance_mm):
            if not c.forbidden or c.name in crossed:
                continue
            if c.clearance_mm < c.margin_mm:
                unsafe.append(f"passes {max(c.clearance_mm, 0.0):.1f} mm from {c.name} "
                              f"(margin {c.margin_mm:.1f} mm)")
            elif c.clearance_mm < c.margin_mm + self.caution_band_mm:
                caution.append(f"passes {c.clearance_mm:.1f} mm from {c.name} "
                               f"(margin {c.margin_mm:.1f} mm + {self.caution_band_mm:.1f} mm "
                               "caution band)")
        if not long_enough:
            unsafe.append(f"needle too short: path {length:.1f} mm > usable "
                          f"{needle.usable_length_mm:.1f} mm")
        if pleural and not any(c.forbidden for c in crossings
                               if self._data[c.name].struct.category == Category.LUNG):
            caution.append(f"crosses the pleura {pleural}× (pneumothorax risk)")
        # Half a slice over the path length is tolerated (as in the search): an entry
        # within the target's slice is in-plane.
        slice_mm = float(np.max(np.abs(self.frame.rotation[2] * self.frame.spacing_mm)))
        cc_tol = math.degrees(math.atan2(0.5 * slice_mm, max(length, 1e-9)))
        if max_cc is not None and abs(cc) > max_cc + cc_tol + 1e-9:
            caution.append(f"craniocaudal angle {abs(cc):.1f}° exceeds {max_cc:.1f}°")
        caution.extend(extra_caution or [])
        for organ, need in (min_len or {}).items():
            got = inside_len.get(organ, 0.0)
            if got < need:
                caution.append(f"only {got:.1f} mm through {organ} (want ≥ {need:.1f} mm)")
        if unsafe:
            return Verdict.UNSAFE, unsafe + caution
        if caution:
            return Verdict.CAUTION, caution
        return Verdict.SAFE, ["clear of all forbidden structures by their margins"]

    def _target_organ(self, target_structs: list[str]) -> str | None:
        organs = [n for n in target_structs
                  if self._data[n].struct.category not in (Category.TARGET, Category.BODY)]
        return organs[0] if organs else None

    def _capsule_angle(self, organ: str, points_lps: NDArray[np.float64],
                       directions: NDArray[np.float64]) -> NDArray[np.float64]:
        """Angle (deg) between needle directions and the organ surface normal near points.

        The normal is the least-variance axis of the nearest boundary cell centres.
        """
        d = self._data[organ]
        k = int(min(27, len(d.centres_q)))
        if k < 4:
            return np.zeros(len(points_lps))
        q = self.frame.lps_to_q(points_lps)
        _, idx = d.tree.query(q, k=k)
        pts = d.centres_q[idx]
        cen = pts - pts.mean(axis=1, keepdims=True)
        cov = np.einsum("nki,nkj->nij", cen, cen)
        _, vecs = np.linalg.eigh(cov)
        normal_q = vecs[:, :, 0]
        normal = normal_q @ self.frame.rotation.T
        cosang = np.abs(np.sum(normal * directions, axis=1))
        return np.degrees(np.arccos(np.clip(cosang, 0.0, 1.0)))

    def precompute_search(self, *, fields: bool = False,
                          progress: ProgressCallback | None = None) -> None:
        """Load the search's compiled kernels now; with ``fields`` also build the
        distance maps of the minimum-clearance-only search (else built lazily)."""
        from ir_planner.planning.search import precompute_fields

        precompute_fields(self, fields=fields, progress=progress)

    # -- search and records ------------------------------------------------------------------
    def search(self, target_lps: ArrayLike, constraints: Any = None, *, top_k: int = 5,
               weights: Any = None, progress: ProgressCallback | None = None) -> Any:
        """Automatic entry search for a target; see :func:`ir_planner.planning.search.search`."""
        from ir_planner.planning.search import search

        return search(self, target_lps, constraints, top_k=top_k, weights=weights,
                      progress=progress)

    def to_record(self, metrics: TrajectoryMetrics, name: str, *, source: str = "manual"
                  ) -> TrajectoryRecord:
        """A :class:`~ir_planner.core.plan.TrajectoryRecord` holding all metrics."""
        return TrajectoryRecord(name=name, entry_lps=metrics.entry_lps,
                                target_lps=metrics.target_lps, needle=dict(metrics.needle),
                                metrics=metrics.to_dict(), source=source)


def _point(p: ArrayLike, what: str) -> NDArray[np.float64]:
    arr = np.asarray(p, dtype=float).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise InputError(f"{what} must be three finite numbers (LPS mm); got {p!r}")
    return arr


def _tuple(p: NDArray[np.float64]) -> tuple[float, float, float]:
    return (float(p[0]), float(p[1]), float(p[2]))


def _runs(on: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(start, stop) index pairs of runs of True."""
    if not on.any():
        return []
    x = np.concatenate([[0], on.astype(np.int8), [0]])
    dx = np.diff(x)
    return list(zip(np.flatnonzero(dx == 1).tolist(), np.flatnonzero(dx == -1).tolist()))


def _approach(direction: NDArray[np.float64]) -> str:
    """Patient side the needle comes from ("anterior-right", ...), from its direction."""
    from_dir = -direction  # where the entry is relative to the target
    parts = []
    if from_dir[1] < -0.38:
        parts.append("anterior")
    elif from_dir[1] > 0.38:
        parts.append("posterior")
    if from_dir[0] < -0.38:
        parts.append("right")
    elif from_dir[0] > 0.38:
        parts.append("left")
    if from_dir[2] > 0.38:
        parts.append("superior")
    elif from_dir[2] < -0.38:
        parts.append("inferior")
    return "-".join(parts) or "oblique"
