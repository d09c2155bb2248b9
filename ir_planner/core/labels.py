"""Label maps: structures on an image grid, overlaps allowed.

A :class:`LabelMap` stores its voxels as one or more integer *layers* on a
common grid (the Slicer segmentation model): structures that do not overlap
share a layer, each with its own label value; a structure that overlaps another
lives in another layer. One layer of uint16 is the common case, so a whole
TotalSegmentator output costs one integer volume, not 104 masks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ir_planner.core.catalog import Category, lookup
from ir_planner.core.errors import GeometryError, InputError
from ir_planner.core.volume import ImageVolume

__all__ = ["Structure", "LabelMap", "MAX_MARGIN_MM"]

#: Largest safety margin accepted (mm): larger values are typing errors, not margins.
MAX_MARGIN_MM = 100.0


@dataclass(frozen=True)
class Structure:
    """One segmented structure.

    Attributes
    ----------
    name : str
        Unique name within the label map.
    label : int
        Voxel value of the structure in its layer (> 0).
    layer : int
        Index of the layer holding it.
    category : Category
        Clinical category (sets planning defaults).
    color : tuple of float
        Display RGB in [0, 1].
    margin_mm : float
        Safety margin in mm a needle must keep from it when forbidden.
    forbidden : bool
        Whether needles must avoid it.
    """

    name: str
    label: int
    layer: int = 0
    category: Category = Category.OTHER
    color: tuple[float, float, float] = (0.6, 0.6, 0.6)
    margin_mm: float = 0.0
    forbidden: bool = False

    def __post_init__(self) -> None:
        margin = self.margin_mm
        if (isinstance(margin, bool) or not isinstance(margin, (int, float))
                or not math.isfinite(margin) or not 0.0 <= margin <= MAX_MARGIN_MM):
            raise InputError(
                f"structure {self.name!r}: margin_mm must be a finite number from 0 to "
                f"{MAX_MARGIN_MM:g} mm; got {margin!r}"
            )
        if len(self.color) != 3 or not all(
            isinstance(c, (int, float)) and math.isfinite(c) and 0.0 <= c <= 1.0
            for c in self.color
        ):
            raise InputError(
                f"structure {self.name!r}: colour must be three numbers in [0, 1]; got "
                f"{self.color!r}"
            )

    @classmethod
    def from_name(cls, name: str, label: int, layer: int = 0, **overrides: Any) -> "Structure":
        """A structure with category, colour, margin and forbidden flag from the catalog."""
        info = lookup(name)
        values: dict[str, Any] = dict(
            category=info.category, color=info.color, margin_mm=info.margin_mm,
            forbidden=info.forbidden,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(name=name, label=int(label), layer=int(layer), **values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "name": self.name, "label": self.label, "layer": self.layer,
            "category": self.category.value, "color": list(self.color),
            "margin_mm": self.margin_mm, "forbidden": self.forbidden,
        }


@dataclass(eq=False)
class LabelMap:
    """Structures on an image grid.

    Parameters
    ----------
    layers : list of numpy.ndarray
        Integer arrays, each shaped like ``grid.array`` (``[k, j, i]``); 0 = background.
    grid : ImageVolume
        Geometry carrier (its ``index_to_lps`` places the voxels). Its array may be
        the first layer itself or any array of the same shape.
    structures : list of Structure
        Every structure with its (layer, label).
    """

    layers: list[NDArray[np.integer[Any]]]
    grid: ImageVolume
    structures: list[Structure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.layers:
            raise InputError("a label map needs at least one layer")
        for n, layer in enumerate(self.layers):
            if layer.shape != self.grid.shape:
                raise GeometryError(
                    f"label layer {n} has shape {layer.shape}, grid has {self.grid.shape}"
                )
            if not np.issubdtype(layer.dtype, np.integer):
                raise InputError(f"label layer {n} must be integer; got {layer.dtype}")
        seen: set[str] = set()
        for s in self.structures:
            if s.name in seen:
                raise InputError(f"duplicate structure name {s.name!r} in label map")
            seen.add(s.name)
            if not 0 <= s.layer < len(self.layers):
                raise InputError(f"structure {s.name!r} refers to missing layer {s.layer}")
            if s.label <= 0:
                raise InputError(f"structure {s.name!r} has label {s.label}; labels must be > 0")

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_array(
        cls, array: NDArray[Any], grid: ImageVolume, names: dict[int, str] | None = None
    ) -> "LabelMap":
        """A single-layer label map; structures named from ``names`` (label → name).

        Labels present in the array but absent from ``names`` are named ``label_N``.
        """
        arr = np.asarray(array)
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise InputError("label array has non-integer values")
            arr = arr.astype(np.int32)
        if arr.min(initial=0) < 0:
            raise InputError("label array has negative values")
        top = int(arr.max(initial=0))
        dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
        arr = arr.astype(dtype, copy=False)
        present = [int(v) for v in np.unique(arr) if v != 0]
        names = dict(names or {})
        labels = sorted(set(present) | set(names))
        structures = [Structure.from_name(names.get(v, f"label_{v}"), v) for v in labels]
        return cls([arr], grid, structures)

    @classmethod
    def from_masks(
        cls, masks: Iterable[tuple[str, NDArray[np.bool_]]], grid: ImageVolume
    ) -> "LabelMap":
        """Pack named boolean masks into as few layers as overlaps allow."""
        layers: list[NDArray[np.uint16]] = []
        next_label: list[int] = []
        structures: list[Structure] = []
        for name, mask in masks:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != grid.shape:
                raise GeometryError(f"mask {name!r} has shape {mask.shape}, grid {grid.shape}")
            for n, layer in enumerate(layers):
                if next_label[n] < 65535 and not np.any(layer[mask]):
                    break
            else:
                layers.append(np.zeros(grid.shape, dtype=np.uint16))
                next_label.append(1)
                n = len(layers) - 1
            label = next_label[n]
            layers[n][mask] = label
            next_label[n] += 1
            structures.append(Structure.from_name(name, label, n))
        if not layers:
            layers.append(np.zeros(grid.shape, dtype=np.uint16))
        return cls(layers, grid, structures)

    # -- access ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Structure]:
        return iter(self.structures)

    def __len__(self) -> int:
        return len(self.structures)

    @property
    def names(self) -> list[str]:
        """Structure names in order."""
        return [s.name for s in self.structures]

    def get(self, name: str) -> Structure:
        """The structure called ``name``; clear error listing the names otherwise."""
        for s in self.structures:
            if s.name == name:
                return s
        raise InputError(
            f"no structure named {name!r}; available: {', '.join(self.names) or '(none)'}"
        )

    def mask(self, name: str | Structure) -> NDArray[np.bool_]:
        """Boolean mask ``[k, j, i]`` of one structure."""
        s = self.get(name) if isinstance(name, str) else name
        return self.layers[s.layer] == s.label

    def voxel_count(self, name: str | Structure) -> int:
        """Number of voxels of a structure."""
        return int(np.count_nonzero(self.mask(name)))

    def volume_ml(self, name: str | Structure) -> float:
        """Volume of a structure in millilitres."""
        return self.voxel_count(name) * self.grid.voxel_volume_ml

    def union_mask(self, names: Iterable[str | Structure]) -> NDArray[np.bool_]:
        """Union of several structures' masks."""
        out = np.zeros(self.grid.shape, dtype=bool)
        for name in names:
            out |= self.mask(name)
        return out

    def any_mask(self) -> NDArray[np.bool_]:
        """Voxels that belong to any structure."""
        out = np.zeros(self.grid.shape, dtype=bool)
        for layer in self.layers:
            out |= layer != 0
        return out

    # -- modification --------------------------------------------------------------------
    def with_structure(self, name: str, mask: NDArray[np.bool_], **attrs: Any) -> "LabelMap":
        """A new label map with ``name`` set to ``mask`` (replaced if it exists).

        The mask goes into the first layer where it overlaps nothing else; a new
        layer is added when none fits. Attribute overrides (category, margin_mm, ...)
        are applied on top of the catalog defaults.
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.grid.shape:
            raise GeometryError(f"mask for {name!r} has shape {mask.shape}, grid {self.grid.shape}")
        layers = [layer.copy() for layer in self.layers]
        old = next((s for s in self.structures if s.name == name), None)
        structures = [s for s in self.structures if s.name != name]
        if old is not None:
            layers[old.layer][layers[old.layer] == old.label] = 0
        for n, layer in enumerate(layers):
            used = {s.label for s in structures if s.layer == n}
            label = max(used, default=0) + 1
            if label <= np.iinfo(layer.dtype).max and not np.any(layer[mask]):
                break
        else:
            layers.append(np.zeros(self.grid.shape, dtype=np.uint16))
            n, label = len(layers) - 1, 1
        layers[n][mask] = label
        if old is not None:
            keep = {k: getattr(old, k) for k in ("category", "color", "margin_mm", "forbidden")}
            keep.update(attrs)
            attrs = keep
        structures.append(Structure.from_name(name, label, n, **attrs))
        return LabelMap(layers, self.grid, structures, list(self.warnings))

    def without_structure(self, name: str) -> "LabelMap":
        """A new label map without ``name``."""
        s = self.get(name)
        layers = [layer.copy() for layer in self.layers]
        layers[s.layer][layers[s.layer] == s.label] = 0
        return LabelMap(layers, self.grid, [t for t in self.structures if t.name != name],
                        list(self.warnings))

    def with_attributes(self, name: str, **attrs: Any) -> "LabelMap":
        """A new label map with one structure's attributes (margin, forbidden, ...) changed."""
        s = self.get(name)
        new = replace(s, **attrs)
        return LabelMap(self.layers, self.grid,
                        [new if t.name == name else t for t in self.structures], list(self.warnings))

    def summary(self) -> list[dict[str, Any]]:
        """Per-structure voxel counts, volumes (ml) and categories."""
        rows = []
        for s in self.structures:
            count = self.voxel_count(s)
            rows.append({**s.to_dict(), "voxels": count,
                         "volume_ml": round(count * self.grid.voxel_volume_ml, 3)})
        return rows

    def by_category(self, *categories: Category) -> list[Structure]:
        """Structures of the given categories."""
        return [s for s in self.structures if s.category in categories]
