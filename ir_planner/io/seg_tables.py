"""Structure-name tables that accompany label maps.

Supported forms (see ``docs/segmentation_files.md``):

* the project's own JSON sidecar ``<stem>.labels.json`` written by
  :func:`ir_planner.io.segmentation.save_labels` (``"format": "ir-planner-labels"``);
* a plain JSON mapping ``{"1": "liver", "2": "aorta"}`` (values may also be
  objects with ``name`` and optional ``color``, ``category``, ``margin_mm``,
  ``forbidden``, ``layer``);
* a JSON list of such objects with a ``label`` key;
* a TotalSegmentator ``classes.json`` (``{"total": {"1": "spleen", ...}, "total_mr": ...}``):
  one task is chosen (``task``, default ``"total"``);
* an ITK-SNAP label description text file
  (``IDX R G B A VIS MSH "LABEL"`` lines, ``#`` comments);
* a ``dict[int, str]`` given directly.

*Strict* tables (the project's sidecar, a plain mapping or list, a dict) must name
only labels that exist in the map; TotalSegmentator and ITK-SNAP tables describe
a whole label set, so labels absent from the map are skipped with a note.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ir_planner.core.catalog import Category
from ir_planner.core.errors import SegmentationReadError
from ir_planner.core.fileio import register_input
from ir_planner.core.jsonfile import JsonFileError, loads_strict
from ir_planner.core.labels import MAX_MARGIN_MM

__all__ = ["NameEntry", "NamesTable", "read_names_table", "SIDECAR_FORMAT", "sidecar_path"]

#: ``format`` value of the JSON sidecar written by ``save_labels``.
SIDECAR_FORMAT = "ir-planner-labels"
#: Largest names table read (a TotalSegmentator table is a few kB).
MAX_TABLE_BYTES = 16 * 1024 * 1024


@dataclass
class NameEntry:
    """One row of a names table: a label value (in a layer) and what it is."""

    label: int
    name: str
    layer: int = 0
    category: Category | None = None
    color: tuple[float, float, float] | None = None
    margin_mm: float | None = None
    forbidden: bool | None = None
    allow_empty: bool = False


@dataclass
class NamesTable:
    """A parsed names table.

    Attributes
    ----------
    entries : list of NameEntry
        One entry per named label.
    source : str
        Where the table came from (file name or ``"names argument"``), for messages.
    strict : bool
        Whether naming a label that is absent from the map is an error (the project's
        own sidecar); otherwise such names are skipped with a warning (a full class
        table, e.g. TotalSegmentator's, used on a partial scan).
    layer_files : list of str or None
        For the project's own sidecar: file names of the layers (layer 0 first).
    """

    entries: list[NameEntry]
    source: str
    strict: bool = False
    layer_files: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def sidecar_path(path: Path, suffix: str) -> Path:
    """``<stem>.labels.json`` beside a label map file with image suffix ``suffix``."""
    return path.with_name(path.name[: len(path.name) - len(suffix)] + ".labels.json")


def read_names_table(
    source: str | Path | dict[int, str], *, task: str | None = None
) -> NamesTable:
    """Parse a names table from a file or a mapping.

    Parameters
    ----------
    source : str, Path or dict
        A JSON or ITK-SNAP text file, or a mapping label → name.
    task : str, optional
        For multi-task tables (TotalSegmentator ``classes.json``): which task's
        table to use. Default ``"total"`` when the file has it.

    Raises
    ------
    SegmentationReadError
        Unreadable or malformed tables, with the file name and what is wrong.
    """
    if isinstance(source, dict):
        return NamesTable(_entries_from_mapping(source, "names argument"), "names argument")
    path = Path(source)
    if not path.exists():
        raise SegmentationReadError(f"{path}: names table not found")
    if not path.is_file():
        raise SegmentationReadError(f"{path}: names table is not a regular file")
    register_input(path)
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise SegmentationReadError(
            f"{path}: names table is {path.stat().st_size / 2**20:.1f} MiB; the limit is "
            f"{MAX_TABLE_BYTES // 2**20} MiB"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SegmentationReadError(f"{path}: cannot read names table ({exc})") from exc
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            data = loads_strict(text, source=f"{path}: names table")
        except JsonFileError as exc:
            raise SegmentationReadError(str(exc)) from exc
        return _table_from_json(data, str(path), task)
    return _table_from_itksnap(text, str(path))


def _table_from_json(data: Any, source: str, task: str | None) -> NamesTable:
    if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT:
        structures = data.get("structures")
        if not isinstance(structures, list):
            raise SegmentationReadError(f"{source}: sidecar has no 'structures' list")
        entries = [_entry_from_object(s, None, source) for s in structures]
        layers = data.get("layers")
        if layers is not None and not (
            isinstance(layers, list) and all(isinstance(x, str) for x in layers)
        ):
            raise SegmentationReadError(f"{source}: 'layers' must be a list of file names")
        return NamesTable(entries, source, strict=True, layer_files=layers)
    if isinstance(data, list):
        return NamesTable([_entry_from_object(s, None, source) for s in data], source)
    if isinstance(data, dict) and isinstance(data.get("structures"), list):
        # ``segment --names-out``: {"coordinate_system": "LPS", "structures": [...]}
        return NamesTable([_entry_from_object(s, None, source) for s in data["structures"]],
                          source)
    if not isinstance(data, dict) or not data:
        raise SegmentationReadError(
            f"{source}: names table must be a JSON object mapping label → name; got "
            f"{type(data).__name__}"
        )
    if all(isinstance(v, dict) for v in data.values()) and not all(
        _is_int(k) for k in data
    ):
        # multi-task table, e.g. TotalSegmentator classes.json
        chosen = task or ("total" if "total" in data else None)
        if chosen is None or chosen not in data:
            raise SegmentationReadError(
                f"{source}: table has several tasks ({', '.join(sorted(data))}); "
                f"choose one with task=... (got {task!r})"
            )
        table = NamesTable(_entries_from_mapping(data[chosen], source), source, strict=False)
        table.notes.append(f"names from {Path(source).name}, task {chosen!r}")
        return table
    if task is not None:
        raise SegmentationReadError(f"{source}: task={task!r} given but the table has no tasks")
    return NamesTable(_entries_from_mapping(data, source), source)


def _is_int(text: Any) -> bool:
    try:
        int(str(text))
    except ValueError:
        return False
    return True


def _entries_from_mapping(mapping: dict[Any, Any], source: str) -> list[NameEntry]:
    entries = []
    for key, value in mapping.items():
        if not _is_int(key):
            raise SegmentationReadError(
                f"{source}: key {key!r} is not an integer label value"
            )
        label = int(str(key))
        if label == 0:
            continue  # background
        if isinstance(value, str):
            entries.append(_check_entry(NameEntry(label, value.strip()), source))
        elif isinstance(value, dict):
            entries.append(_entry_from_object(value, label, source))
        else:
            raise SegmentationReadError(
                f"{source}: label {label} must map to a name or an object; got {value!r}"
            )
    return entries


def _entry_from_object(obj: Any, label: int | None, source: str) -> NameEntry:
    if not isinstance(obj, dict):
        raise SegmentationReadError(f"{source}: structure entry must be an object; got {obj!r}")
    try:
        value = obj.get("label", label)
        if value is None:
            raise KeyError("label")
        name = str(obj.get("name", "")).strip()
        entry = NameEntry(
            label=int(value),
            name=name,
            layer=int(obj.get("layer", 0)),
            category=Category(obj["category"]) if obj.get("category") else None,
            color=_color(obj.get("color", obj.get("colour"))),
            margin_mm=(_margin(obj["margin_mm"], name, source)
                       if obj.get("margin_mm") is not None else None),
            forbidden=(_flag(obj["forbidden"], "forbidden", name, source)
                       if obj.get("forbidden") is not None else None),
            allow_empty=bool(obj.get("empty", False)),
        )
    except SegmentationReadError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        shown = repr(obj)
        shown = shown if len(shown) <= 120 else shown[:117] + "..."
        raise SegmentationReadError(f"{source}: bad structure entry {shown} ({exc})") from exc
    return _check_entry(entry, source)


def _margin(value: Any, name: str, source: str) -> float:
    """A safety margin from a table: a finite number of mm in [0, MAX_MARGIN_MM]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SegmentationReadError(
            f"{source}: margin_mm of {name!r} must be a number of mm; got {value!r}"
        )
    margin = float(value)
    if not math.isfinite(margin) or not 0.0 <= margin <= MAX_MARGIN_MM:
        raise SegmentationReadError(
            f"{source}: margin_mm of {name!r} is {value!r}; it must be a finite number from 0 "
            f"to {MAX_MARGIN_MM:g} mm"
        )
    return margin


def _flag(value: Any, key: str, name: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise SegmentationReadError(
            f"{source}: {key} of {name!r} must be true or false; got {value!r}"
        )
    return value


def _check_entry(entry: NameEntry, source: str) -> NameEntry:
    if not entry.name:
        raise SegmentationReadError(f"{source}: label {entry.label} has an empty name")
    if entry.label <= 0:
        raise SegmentationReadError(
            f"{source}: structure {entry.name!r} has label {entry.label}; labels must be > 0"
        )
    if entry.layer < 0:
        raise SegmentationReadError(f"{source}: structure {entry.name!r} has layer {entry.layer}")
    return entry


def _color(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    rgb = [float(v) for v in value]
    if len(rgb) != 3:
        raise ValueError(f"colour needs 3 components; got {value!r}")
    if max(rgb) > 1.0:  # 0-255 given
        rgb = [v / 255.0 for v in rgb]
    if min(rgb) < 0 or max(rgb) > 1:
        raise ValueError(f"colour components must be in [0, 1] or [0, 255]; got {value!r}")
    return (rgb[0], rgb[1], rgb[2])


_ITKSNAP_LINE = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(.+)$")


def _table_from_itksnap(text: str, source: str) -> NamesTable:
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ITKSNAP_LINE.match(line)
        if not match:
            raise SegmentationReadError(
                f"{source}, line {lineno}: not an ITK-SNAP label description line "
                f"(expected IDX R G B A VIS MSH \"LABEL\"): {line.strip()!r}"
            )
        label = int(match.group(1))
        if label == 0:
            continue
        try:
            name = " ".join(shlex.split(match.group(8)))
        except ValueError:
            name = match.group(8).strip().strip('"')
        rgb = tuple(int(match.group(n)) / 255.0 for n in (2, 3, 4))
        entries.append(_check_entry(NameEntry(label, name, color=rgb), source))  # type: ignore[arg-type]
    if not entries:
        raise SegmentationReadError(f"{source}: names table names no label")
    return NamesTable(entries, source, strict=False)


def nifti_extension_table(path: str | Path) -> NamesTable | None:
    """Label names stored in a NIfTI file's header extension, or None.

    TotalSegmentator's multi-label output (``--ml``) stores its label table as a
    CIFTI/Caret XML extension (``<Label Key="5" ...><![CDATA[liver]]></Label>``); only the
    header (up to ``vox_offset``) is read. Unreadable or foreign extensions give None.
    """
    import gzip
    import re
    import struct
    import xml.etree.ElementTree as ET

    p = Path(path)
    name = p.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return None
    try:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(p, "rb") as fh:  # type: ignore[operator]
            head = fh.read(352)
            if len(head) < 352:
                return None
            for endian in ("<", ">"):
                if struct.unpack(endian + "i", head[:4])[0] == 348:
                    break
            else:
                return None
            vox_offset = int(struct.unpack(endian + "f", head[108:112])[0])
            if head[348] == 0 or vox_offset <= 352 or vox_offset > 64 * 1024 * 1024:
                return None
            rest = fh.read(vox_offset - 352)
    except (OSError, EOFError, struct.error):
        return None
    pos = 0
    while pos + 8 <= len(rest):
        esize, _ecode = struct.unpack(endian + "ii", rest[pos:pos + 8])
        if esize < 8 or pos + esize > len(rest):
            return None
        content = rest[pos + 8:pos + esize].rstrip(b"\0 \n\r\t")
        pos += esize
        if b"<Label" not in content:
            continue
        text = content.decode("utf-8", errors="replace")
        text = text[text.find("<"):]
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            # tolerate trailing junk: keep the Label elements only
            found = re.findall(r'<Label\s+Key="(\d+)"[^>]*>\s*(?:<!\[CDATA\[)?(.*?)(?:\]\]>)?\s*</Label>',
                               text, flags=re.S)
            mapping = {k: v.strip() for k, v in found if v.strip()}
        else:
            mapping = {el.get("Key"): (el.text or "").strip() for el in root.iter("Label")
                       if el.get("Key") is not None and (el.text or "").strip()}
        if not mapping:
            return None
        source = f"{p.name} (NIfTI header label table)"
        table = NamesTable(_entries_from_mapping(mapping, source), source)
        table.notes.append(f"names from the label table in {p.name}'s NIfTI header extension")
        return table
    return None
