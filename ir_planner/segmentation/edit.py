"""Editing structures of a label map, undoable, in step with the plan's undo.

Design
------
* A :class:`LabelEditor` owns a label map and edits its layer arrays **in
  place**, inside the bounding box (ROI) of what can change, so one edit on a
  512×512×300 grid costs milliseconds, not a copy of the volume.
* Every edit is stored as a sparse diff (:class:`EditRecord`): the flat indices
  of the voxels that changed in one layer, with their old and new values, plus
  the structure list before/after (when a structure was created). Undo writes
  the old values back, redo the new ones: exact, and memory proportional to the
  change.
* With a :class:`~ir_planner.core.plan.Plan` attached, each edit is also
  recorded in the plan through ``plan.apply`` as an entry of
  ``plan.settings["label_edits"]`` (operation, structure, parameters with units)
  so the plan file documents how the segmentation was edited. The editor
  listens to the plan: when ``plan.undo()`` / ``plan.redo()`` changes the number
  of recorded edits, the editor undoes / redoes its diffs to match. So there is
  one undo for everything: :meth:`LabelEditor.undo` simply calls ``plan.undo()``
  (without a plan it uses its own stack).
* Voxels of *another* structure in the same layer are never overwritten (they
  would silently disappear from it); they are counted in the record instead.

Operations: :meth:`~LabelEditor.paint_sphere`, :meth:`~LabelEditor.erase_sphere`,
:meth:`~LabelEditor.grow` (negative margin shrinks; distance-map based so
anisotropic voxels are handled), :meth:`~LabelEditor.fill_holes`,
:meth:`~LabelEditor.keep_largest`, :meth:`~LabelEditor.combine` (union, subtract,
intersect), :meth:`~LabelEditor.set_mask`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi

from ir_planner.core.errors import InputError
from ir_planner.core.labels import LabelMap, Structure
from ir_planner.core.plan import Plan

__all__ = ["EditRecord", "LabelEditor"]

Box = tuple[slice, slice, slice]


@dataclass
class EditRecord:
    """One edit as a sparse diff.

    Attributes
    ----------
    operation : str
        Operation name ("paint", "erase", "grow", ...).
    structure : str
        Edited structure.
    parameters : dict
        Operation parameters (units in the keys, LPS mm for points).
    layer : int
        Layer whose voxels changed.
    indices : numpy.ndarray of int64
        Flat indices (into the layer) of changed voxels.
    old_values, new_values : numpy.ndarray
        Layer values before and after, at ``indices``.
    structures_before, structures_after : list of Structure or None
        Structure lists when the edit created a structure, else None.
    skipped_voxels : int
        Voxels left alone because another structure of the same layer holds them.
    """

    operation: str
    structure: str
    parameters: dict[str, Any]
    layer: int
    indices: NDArray[np.int64]
    old_values: NDArray[Any]
    new_values: NDArray[Any]
    structures_before: list[Structure] | None = None
    structures_after: list[Structure] | None = None
    skipped_voxels: int = 0
    changed_voxels: int = field(init=False)

    def __post_init__(self) -> None:
        self.changed_voxels = int(self.indices.size)

    def to_plan_entry(self) -> dict[str, Any]:
        """What the plan records (JSON-friendly; no voxel data)."""
        return {"operation": self.operation, "structure": self.structure,
                "parameters": self.parameters, "changed_voxels": self.changed_voxels}


class LabelEditor:
    """Undoable editing of a :class:`LabelMap`, optionally in step with a :class:`Plan`.

    Parameters
    ----------
    labels : LabelMap
        Edited in place (its layer arrays are modified).
    plan : Plan, optional
        If given, every edit is recorded in ``plan.settings["label_edits"]`` and
        the plan's undo/redo drive the editor's.

    Examples
    --------
    >>> import numpy as np
    >>> from ir_planner.core.volume import ImageVolume
    >>> grid = ImageVolume(np.zeros((20, 20, 20)), np.eye(4))
    >>> editor = LabelEditor(LabelMap([np.zeros((20, 20, 20), np.uint8)], grid, []))
    >>> rec = editor.paint_sphere("tumour", (10, 10, 10), 3.0)
    >>> editor.labels.voxel_count("tumour")
    123
    >>> editor.undo()
    True
    >>> editor.labels.names
    []
    """

    def __init__(self, labels: LabelMap, plan: Plan | None = None) -> None:
        self.labels = labels
        self.plan = plan
        self._undo: list[EditRecord] = []
        self._redo: list[EditRecord] = []
        self._boxes: dict[str, Box | None] = {}
        self._syncing = False
        if plan is not None:
            self._base = len(plan.settings.get("label_edits", []))
            plan.connect(self._on_plan_change)

    # -- bookkeeping ----------------------------------------------------------------
    def close(self) -> None:
        """Stop listening to the plan."""
        if self.plan is not None:
            self.plan.disconnect(self._on_plan_change)

    @property
    def history(self) -> list[EditRecord]:
        """Applied edits, oldest first."""
        return list(self._undo)

    def _structure(self, name: str, create: bool) -> Structure:
        for s in self.labels.structures:
            if s.name == name:
                return s
        if not create:
            self.labels.get(name)  # raises InputError listing the names
        # a new structure: in a new layer, so it can overlap anything
        layer = np.zeros(self.labels.grid.shape, dtype=np.uint8)
        self.labels.layers.append(layer)
        s = Structure.from_name(name, 1, len(self.labels.layers) - 1)
        self.labels.structures = [*self.labels.structures, s]
        self._boxes[name] = None
        return s

    def _bbox(self, s: Structure) -> Box | None:
        if s.name in self._boxes:
            return self._boxes[s.name]
        mask = self.labels.layers[s.layer] == s.label
        box = _bbox_of(mask)
        self._boxes[s.name] = box
        return box

    def _grid_box(self, lo_kji: NDArray[np.int_], hi_kji: NDArray[np.int_]) -> Box | None:
        shape = np.asarray(self.labels.grid.shape)
        lo = np.clip(lo_kji, 0, shape)
        hi = np.clip(hi_kji, 0, shape)
        if np.any(hi <= lo):
            return None
        return (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])),
                slice(int(lo[2]), int(hi[2])))

    def _commit(self, operation: str, s: Structure, params: dict[str, Any], box: Box | None,
                new_mask: NDArray[np.bool_] | None, created: list[Structure] | None
                ) -> EditRecord:
        """Write ``new_mask`` (the structure's mask inside ``box``) as one undoable edit."""
        layer = self.labels.layers[s.layer]
        idx = np.zeros(0, dtype=np.int64)
        old = new = np.zeros(0, dtype=layer.dtype)
        skipped = 0
        if box is not None and new_mask is not None:
            sub = layer[box]
            cur = sub == s.label
            add = new_mask & ~cur
            free = sub == 0
            skipped = int(np.count_nonzero(add & ~free))
            add &= free
            remove = cur & ~new_mask
            change = add | remove
            local = np.flatnonzero(change)
            if local.size:
                coords = np.unravel_index(local, sub.shape)
                full = tuple(c + b.start for c, b in zip(coords, box))
                idx = np.ravel_multi_index(full, layer.shape).astype(np.int64)
                old = layer.flat[idx].copy()
                new = np.where(add.ravel()[local], s.label, 0).astype(layer.dtype)
                layer.flat[idx] = new
        rec = EditRecord(operation, s.name, params, s.layer, idx, old, new,
                         structures_before=created,
                         structures_after=(list(self.labels.structures) if created is not None
                                           else None),
                         skipped_voxels=skipped)
        if box is not None and s.name in self._boxes:
            # the cached bounding box stays a (conservative) superset of the structure
            self._boxes[s.name] = _union_box(self._boxes[s.name], box)
        self._undo.append(rec)
        self._redo.clear()
        if self.plan is not None:
            entry = rec.to_plan_entry()

            def change(plan: Plan) -> None:
                edits = list(plan.settings.get("label_edits", [])) + [entry]
                plan.settings = {**plan.settings, "label_edits": edits}

            self._syncing = True
            try:
                self.plan.apply(f"label edit: {operation} {s.name}", change)
            finally:
                self._syncing = False
        return rec

    def _revert(self, rec: EditRecord) -> None:
        layer = self.labels.layers[rec.layer]
        layer.flat[rec.indices] = rec.old_values
        if rec.structures_before is not None:
            self.labels.structures = list(rec.structures_before)
            if rec.layer == len(self.labels.layers) - 1 and not np.any(layer):
                self.labels.layers.pop()
        self._boxes.pop(rec.structure, None)

    def _reapply(self, rec: EditRecord) -> None:
        if rec.structures_after is not None:
            if rec.layer >= len(self.labels.layers):
                self.labels.layers.append(np.zeros(self.labels.grid.shape, dtype=np.uint8))
            self.labels.structures = list(rec.structures_after)
        self.labels.layers[rec.layer].flat[rec.indices] = rec.new_values
        self._boxes.pop(rec.structure, None)

    def _on_plan_change(self, what: str) -> None:
        if self._syncing or self.plan is None:
            return
        n = len(self.plan.settings.get("label_edits", [])) - self._base
        while len(self._undo) > n and self._undo:
            rec = self._undo.pop()
            self._revert(rec)
            self._redo.append(rec)
        while len(self._undo) < n and self._redo:
            rec = self._redo.pop()
            self._reapply(rec)
            self._undo.append(rec)

    # -- undo / redo ------------------------------------------------------------------
    def undo(self) -> bool:
        """Undo the last step (through the plan when one is attached: one undo for all)."""
        if self.plan is not None:
            return self.plan.undo()
        if not self._undo:
            return False
        rec = self._undo.pop()
        self._revert(rec)
        self._redo.append(rec)
        return True

    def redo(self) -> bool:
        """Redo the last undone step (through the plan when one is attached)."""
        if self.plan is not None:
            return self.plan.redo()
        if not self._redo:
            return False
        rec = self._redo.pop()
        self._reapply(rec)
        self._undo.append(rec)
        return True

    # -- operations ---------------------------------------------------------------------
    def _sphere(self, centre_lps: ArrayLike, radius_mm: float
                ) -> tuple[Box | None, NDArray[np.bool_] | None]:
        if not (np.isfinite(radius_mm) and radius_mm > 0):
            raise InputError(f"sphere radius must be a positive number of mm; got {radius_mm}")
        grid = self.labels.grid
        c = np.asarray(centre_lps, dtype=float).reshape(3)
        if not np.all(np.isfinite(c)):
            raise InputError(f"sphere centre must be three finite numbers (LPS mm); got {c}")
        c_kji = grid.world_to_index(c)[::-1]
        half = radius_mm / grid.spacing_mm[::-1]
        if not grid.is_orthogonal():
            half = np.full(3, radius_mm / float(grid.spacing_mm.min()))
        box = self._grid_box(np.floor(c_kji - half).astype(int),
                             np.ceil(c_kji + half).astype(int) + 1)
        if box is None:
            return None, None
        kk, jj, ii = np.meshgrid(*(np.arange(b.start, b.stop) for b in box), indexing="ij")
        pts = grid.index_to_world(np.stack([ii, jj, kk], axis=-1).astype(float))
        inside = np.sum((pts - c) ** 2, axis=-1) <= radius_mm ** 2
        return box, inside

    def paint_sphere(self, name: str, centre_lps: ArrayLike, radius_mm: float) -> EditRecord:
        """Add the voxels whose centres lie within ``radius_mm`` of ``centre_lps``.

        Creates the structure (in a new layer) if it does not exist.
        """
        before = list(self.labels.structures)
        existed = name in self.labels.names
        s = self._structure(name, create=True)
        box, inside = self._sphere(centre_lps, radius_mm)
        new = None
        if box is not None and inside is not None:
            new = (self.labels.layers[s.layer][box] == s.label) | inside
        params = {"centre_lps": [float(v) for v in np.ravel(centre_lps)],
                  "radius_mm": float(radius_mm)}
        return self._commit("paint", s, params, box, new, None if existed else before)

    def erase_sphere(self, name: str, centre_lps: ArrayLike, radius_mm: float) -> EditRecord:
        """Remove the structure's voxels within ``radius_mm`` of ``centre_lps``."""
        s = self._structure(name, create=False)
        box, inside = self._sphere(centre_lps, radius_mm)
        new = None
        if box is not None and inside is not None:
            new = (self.labels.layers[s.layer][box] == s.label) & ~inside
        params = {"centre_lps": [float(v) for v in np.ravel(centre_lps)],
                  "radius_mm": float(radius_mm)}
        return self._commit("erase", s, params, box, new, None)

    def grow(self, name: str, margin_mm: float) -> EditRecord:
        """Grow (margin > 0) or shrink (margin < 0) a structure by ``|margin_mm|``.

        Exact Euclidean distance map with the voxel spacing (anisotropic voxels
        handled): grown = voxels within ``margin`` of the structure; shrunk =
        voxels farther than ``|margin|`` from the outside.
        """
        if not np.isfinite(margin_mm):
            raise InputError(f"margin must be a finite number of mm; got {margin_mm}")
        s = self._structure(name, create=False)
        bb = self._bbox(s)
        params = {"margin_mm": float(margin_mm)}
        if bb is None or margin_mm == 0:
            return self._commit("grow", s, params, None, None, None)
        sp = self.labels.grid.spacing_mm[::-1]
        pad = np.ceil(max(margin_mm, 0.0) / sp).astype(int) + 1
        lo = np.array([b.start for b in bb]) - pad
        hi = np.array([b.stop for b in bb]) + pad
        box = self._grid_box(lo, hi)
        assert box is not None
        cur = self.labels.layers[s.layer][box] == s.label
        if margin_mm > 0:
            d = ndi.distance_transform_edt(~cur, sampling=sp)
            new = d <= margin_mm + 1e-6
        else:
            padded = np.pad(cur, 1, constant_values=False)  # outside the ROI is outside
            d = ndi.distance_transform_edt(padded, sampling=sp)[1:-1, 1:-1, 1:-1]
            new = d > -margin_mm + 1e-6
        return self._commit("grow" if margin_mm > 0 else "shrink", s, params, box, new, None)

    def fill_holes(self, name: str) -> EditRecord:
        """Fill enclosed cavities (3-D) of a structure."""
        s = self._structure(name, create=False)
        box = self._bbox(s)
        new = None
        if box is not None:
            new = ndi.binary_fill_holes(self.labels.layers[s.layer][box] == s.label)
        return self._commit("fill_holes", s, {}, box, new, None)

    def keep_largest(self, name: str) -> EditRecord:
        """Keep only the largest connected component (26-connectivity) of a structure."""
        s = self._structure(name, create=False)
        box = self._bbox(s)
        new = None
        if box is not None:
            cur = self.labels.layers[s.layer][box] == s.label
            lab, n = ndi.label(cur, structure=np.ones((3, 3, 3), dtype=bool))
            if n > 1:
                counts = np.bincount(lab.ravel())
                counts[0] = 0
                new = lab == int(np.argmax(counts))
            else:
                new = cur
        return self._commit("keep_largest", s, {}, box, new, None)

    def combine(self, name: str, other: str, operation: str) -> EditRecord:
        """``name ← name ∪ other`` ("union"), ``name \\ other`` ("subtract") or ``∩`` ("intersect")."""
        if operation not in ("union", "subtract", "intersect"):
            raise InputError(f"operation must be union, subtract or intersect; got {operation!r}")
        s = self._structure(name, create=False)
        o = self._structure(other, create=False)
        if s.name == o.name:
            raise InputError(f"cannot combine structure {name!r} with itself")
        bs, bo = self._bbox(s), self._bbox(o)
        box = _union_box(bs, bo) if operation == "union" else bs
        new = None
        if box is not None:
            cur = self.labels.layers[s.layer][box] == s.label
            oth = self.labels.layers[o.layer][box] == o.label
            new = cur | oth if operation == "union" else (
                cur & ~oth if operation == "subtract" else cur & oth)
        return self._commit(operation, s, {"other": other}, box, new, None)

    def set_mask(self, name: str, mask: NDArray[np.bool_], *, operation: str = "set") -> EditRecord:
        """Replace a structure's voxels by ``mask`` (full grid), creating it if needed."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.labels.grid.shape:
            raise InputError(f"mask shape {mask.shape} differs from grid {self.labels.grid.shape}")
        before = list(self.labels.structures)
        existed = name in self.labels.names
        s = self._structure(name, create=True)
        box = _union_box(self._bbox(s), _bbox_of(mask))
        new = mask[box] if box is not None else None
        return self._commit(operation, s, {}, box, new, None if existed else before)


def _bbox_of(mask: NDArray[np.bool_]) -> Box | None:
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return (out[0], out[1], out[2])


def _union_box(a: Box | None, b: Box | None) -> Box | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop))  # type: ignore[return-value]
                 for x, y in zip(a, b))
