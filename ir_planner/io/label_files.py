"""Label-map files (NIfTI/NRRD/MHA, 3D Slicer ``.seg.nrrd``) with their names tables.

:func:`read_label_file` reads the voxels (after the integrity checks of
:mod:`ir_planner.io.integrity`) and names the labels from, in order: the ``names``
argument, the ``<stem>.labels.json`` sidecar, a Slicer ``.seg.nrrd`` header, a
label table in the NIfTI header extension (TotalSegmentator ``--ml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from ir_planner.core.errors import GeometryError, ImageReadError, SegmentationReadError
from ir_planner.core.labels import LabelMap, Structure
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import IMAGE_SUFFIXES, is_image_file, read_sitk_checked
from ir_planner.io.seg_common import grids_match, unique_name
from ir_planner.io.seg_tables import (
    NameEntry,
    NamesTable,
    nifti_extension_table,
    read_names_table,
    sidecar_path,
)
from ir_planner.io.sitk_convert import from_sitk

__all__ = ["Names", "read_label_file", "read_sitk_labels", "suffix_of", "integer_layer"]

Names = str | Path | dict[int, str] | None



def suffix_of(p: Path) -> str:
    name = p.name.lower()
    return next(s for s in IMAGE_SUFFIXES if name.endswith(s))


def read_sitk_labels(p: Path) -> sitk.Image:
    """Integrity-check (truncation, geometry fields, size) and read a label-map file."""
    try:
        image, _checked = read_sitk_checked(p)
    except ImageReadError as exc:
        raise SegmentationReadError(str(exc).replace("cannot read image", "cannot read label map")) from exc
    return image


def integer_layer(array: NDArray[Any], p: Path, what: str = "label map") -> NDArray[Any]:
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating):
            raise SegmentationReadError(f"{p}: {what} has non-numeric voxels ({array.dtype})")
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(array) | (np.mod(array, 1) != 0)
        if np.any(bad):
            example = float(array[bad].flat[0])
            raise SegmentationReadError(
                f"{p}: {what} has non-integer values (e.g. {example!r}); a label map must "
                "hold integer labels. Is this an image or a probability map?"
            )
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise SegmentationReadError(f"{p}: {what} has negative labels ({int(array.min())})")
    top = int(array.max()) if array.size else 0
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
    return array.astype(dtype, copy=False)


def read_label_file(
    path: str | Path, *, names: Names = None, task: str | None = None
) -> LabelMap:
    """Read a label-map file (NIfTI/NRRD/MHA; Slicer ``.seg.nrrd``) with its names.

    Names come from ``names`` if given, else the ``<stem>.labels.json`` sidecar, else
    a Slicer ``.seg.nrrd`` header, else a label table in the NIfTI header extension
    (TotalSegmentator ``--ml``), else ``label_N``. Extra layers listed in the
    project's own sidecar are read from their files.

    Raises
    ------
    SegmentationReadError
        Unreadable file, non-integer or negative labels, names for missing labels.
    """
    p = Path(path)
    suffix = suffix_of(p)
    image = read_sitk_labels(p)
    slicer_entries: list[NameEntry] = []
    keys = set(image.GetMetaDataKeys())
    if "Segment0_ID" in keys or "Segment0_Name" in keys:
        slicer_entries = _slicer_entries(image, keys, p)
    layers_sitk: list[sitk.Image]
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetNumberOfComponentsPerPixel() > 1:
        layers_sitk = [
            sitk.VectorIndexSelectionCast(image, n) for n in range(image.GetNumberOfComponentsPerPixel())
        ]
    elif image.GetDimension() == 3:
        layers_sitk = [image]
    else:
        raise SegmentationReadError(
            f"{p}: expected a 3-D label map (or a Slicer multi-layer .seg.nrrd); got "
            f"{image.GetDimension()}-D with size {image.GetSize()}"
        )
    try:
        first = from_sitk(layers_sitk[0], metadata={"source": str(p)})
    except GeometryError as exc:
        raise SegmentationReadError(f"{p}: {exc}") from exc
    layers = [integer_layer(first.array, p)]
    for n, extra in enumerate(layers_sitk[1:], 1):
        layers.append(integer_layer(from_sitk(extra).array, p, f"layer {n}"))
    grid = first.with_array(layers[0])

    table: NamesTable | None = None
    if names is not None:
        table = read_names_table(names, task=task)
    elif sidecar_path(p, suffix).is_file():
        table = read_names_table(sidecar_path(p, suffix), task=task)
    elif slicer_entries:
        table = NamesTable(slicer_entries, f"{p} (Slicer segment header)")
    else:
        table = nifti_extension_table(p)  # e.g. TotalSegmentator --ml
    if table is not None and table.layer_files:
        layers = _read_extra_layers(p, table, layers, grid)
    return _label_map_from_table(layers, grid, table, p)


def _read_extra_layers(
    p: Path, table: NamesTable, layers: list[NDArray[Any]], grid: ImageVolume
) -> list[NDArray[Any]]:
    out = list(layers[:1])
    for n, name in enumerate(table.layer_files[1:] if table.layer_files else [], 1):
        if Path(name).name != name or name in (".", "..") or not is_image_file(name):
            raise SegmentationReadError(
                f"{table.source}: layer {n} file {name!r} must be a plain image file name beside "
                f"{p.name} (no folders, no '..')"
            )
        layer_path = p.with_name(name)
        if not layer_path.is_file():
            raise SegmentationReadError(
                f"{p}: layer {n} file {layer_path.name} listed in {table.source} is missing"
            )
        try:
            vol = from_sitk(read_sitk_labels(layer_path))
        except GeometryError as exc:
            raise SegmentationReadError(f"{layer_path}: {exc}") from exc
        if not grids_match(vol, grid):
            raise SegmentationReadError(f"{layer_path}: layer {n} is not on the grid of {p.name}")
        out.append(integer_layer(vol.array, layer_path, f"layer {n}"))
    return out


def _slicer_entries(image: sitk.Image, keys: set[str], p: Path) -> list[NameEntry]:
    """Segment names/labels/layers/colours from a 3D Slicer ``.seg.nrrd`` header."""
    entries: list[NameEntry] = []
    multi_component = image.GetNumberOfComponentsPerPixel() > 1
    n = 0
    while f"Segment{n}_ID" in keys or f"Segment{n}_Name" in keys:
        def get(field: str, default: str = "", _n: int = n) -> str:
            key = f"Segment{_n}_{field}"
            return image.GetMetaData(key).strip() if key in keys else default

        name = get("Name") or get("ID") or f"segment_{n}"
        try:
            label = int(get("LabelValue", "1"))
            layer = int(get("Layer", str(n) if multi_component else "0"))
            color_text = get("Color")
            color = tuple(float(v) for v in color_text.split()) if color_text else None
        except ValueError as exc:
            raise SegmentationReadError(f"{p}: malformed Slicer header for segment {n}: {exc}") from exc
        rgb = color if color is not None and len(color) == 3 else None
        entries.append(NameEntry(label, name, layer=layer, color=rgb))  # type: ignore[arg-type]
        n += 1
    return entries


def _label_map_from_table(
    layers: list[NDArray[Any]], grid: ImageVolume, table: NamesTable | None, p: Path
) -> LabelMap:
    warnings: list[str] = []
    present = [set(int(v) for v in np.unique(layer) if v != 0) for layer in layers]
    structures: list[Structure] = []
    taken: set[str] = set()
    named: set[tuple[int, int]] = set()
    skipped: list[str] = []
    if table is not None:
        warnings.extend(table.notes)
        for e in table.entries:
            if e.layer >= len(layers):
                raise SegmentationReadError(
                    f"{p}: {table.source} puts {e.name!r} in layer {e.layer}, but the label map "
                    f"has {len(layers)} layer(s)"
                )
            if (e.layer, e.label) in named:
                raise SegmentationReadError(
                    f"{p}: {table.source} names label {e.label} (layer {e.layer}) twice"
                )
            if e.label not in present[e.layer] and not e.allow_empty:
                if table.strict:
                    raise SegmentationReadError(
                        f"{p}: {table.source} names label {e.label} ({e.name!r}) but the label "
                        f"map has no voxel with that label; labels present: "
                        f"{sorted(present[e.layer]) or 'none'}"
                    )
                skipped.append(e.name)
                continue
            named.add((e.layer, e.label))
            name = unique_name(e.name, taken)
            if name != e.name:
                warnings.append(f"duplicate structure name {e.name!r} renamed to {name!r}")
            structures.append(
                Structure.from_name(
                    name, e.label, e.layer, category=e.category, color=e.color,
                    margin_mm=e.margin_mm, forbidden=e.forbidden,
                )
            )
    unnamed = [(n, v) for n, values in enumerate(present) for v in sorted(values)
               if (n, v) not in named]
    if table is not None and unnamed:
        warnings.append(
            f"{len(unnamed)} label value(s) not in {table.source}, named label_N: "
            + ", ".join(str(v) for _, v in unnamed[:20])
        )
    for n, v in unnamed:
        structures.append(Structure.from_name(unique_name(
            f"label_{v}" if n == 0 else f"layer{n}_label_{v}", taken), v, n))
    if skipped:
        warnings.append(
            f"{len(skipped)} name(s) of {Path(table.source).name if table else ''} have no "
            "voxels in this label map and were skipped"
        )
    if not structures:
        raise SegmentationReadError(f"{p}: the label map is empty (no voxel has a label > 0)")
    return LabelMap(layers, grid, structures, warnings)
