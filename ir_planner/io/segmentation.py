"""Read and write segmentations as :class:`~ir_planner.core.labels.LabelMap`.

:func:`load_labels` accepts

* a label-map file (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.mhd``) with a names
  table (JSON sidecar ``<stem>.labels.json``, ``names=``, 3D Slicer ``.seg.nrrd``
  header, ITK-SNAP label description file, TotalSegmentator ``classes.json``);
* a folder holding one mask file per structure (TotalSegmentator layout);
* a DICOM SEG file (binary or fractional; overlapping segments kept);
* a DICOM RTSTRUCT file (needs ``image``: contours are rasterised onto its grid).

:func:`save_labels` writes a label map so that ``load_labels`` reads it back
exactly. See ``docs/segmentation_files.md`` for the rules.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from ir_planner.core.errors import (
    GeometryError,
    ImageReadError,
    InputError,
    SegmentationReadError,
)
from ir_planner.core.fileio import atomic_write_json
from ir_planner.core.labels import LabelMap, Structure
from ir_planner.core.progress import ProgressCallback, report, subrange
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import (
    IMAGE_SUFFIXES,
    is_image_file,
    read_sitk_checked,
    write_sitk_atomic,
)
from ir_planner.io.integrity import check_allocation
from ir_planner.io.load import check_input_path
from ir_planner.io.seg_common import (
    LayerPacker,
    bounding_box,
    grids_match,
    resample_labels,
    unique_name,
)
from ir_planner.io.seg_tables import (
    SIDECAR_FORMAT,
    NameEntry,
    NamesTable,
    nifti_extension_table,
    read_names_table,
    sidecar_path,
)
from ir_planner.io.sitk_convert import from_sitk, to_sitk

__all__ = ["load_labels", "save_labels", "read_mask_folder", "read_label_file"]

Names = str | Path | dict[int, str] | None


def load_labels(
    path: str | Path,
    *,
    image: ImageVolume | None = None,
    names: Names = None,
    task: str | None = None,
    progress: ProgressCallback | None = None,
) -> LabelMap:
    """Load a segmentation of any supported kind as a :class:`LabelMap`.

    Parameters
    ----------
    path : str or Path
        Label-map file, folder of mask files, DICOM SEG or DICOM RTSTRUCT file.
    image : ImageVolume, optional
        The image the segmentation belongs to. When given, the result lies on its
        grid (label maps on another grid are resampled by nearest neighbour, with
        a warning stating both grids). Required for RTSTRUCT.
    names : str, Path or dict, optional
        Names table for a label-map file (overrides the ``<stem>.labels.json``
        sidecar): JSON (plain ``{"1": "liver"}``, TotalSegmentator ``classes.json``),
        ITK-SNAP label description text, or a dict label → name.
    task : str, optional
        Task of a multi-task names table (TotalSegmentator: ``"total"`` (default),
        ``"total_mr"``, ``"total_v1"``).
    progress : ProgressCallback, optional
        Called with (fraction, message).

    Returns
    -------
    LabelMap
        Structures with catalog defaults (category, colour, margin in mm); its
        ``warnings`` list what the reader had to do.

    Raises
    ------
    SegmentationReadError
        Missing, unreadable or invalid input (the message names the file).
    GeometryError
        The segmentation does not overlap ``image`` or belongs to another frame
        of reference.
    """
    p = Path(path)
    report(progress, 0.0, f"reading {p.name}")
    check_input_path(p, SegmentationReadError)
    if p.is_dir():
        if names is not None:
            raise InputError(f"{p}: names= applies to label-map files, not to mask folders")
        result = read_mask_folder(p, progress=subrange(progress, 0.0, 0.9))
    elif is_image_file(p):
        result = read_label_file(p, names=names, task=task)
        report(progress, 0.8, f"read {len(result.structures)} structures")
    elif p.suffix.lower() == ".json":
        raise SegmentationReadError(
            f"{p}: this is a names table; give the label-map file (and the table with names=)"
        )
    else:
        if names is not None:
            raise InputError(
                f"{p}: names= applies to label-map files; DICOM SEG and RTSTRUCT carry their "
                "own names"
            )
        result = _read_dicom_segmentation(p, image=image, progress=subrange(progress, 0.0, 0.9))
    if image is not None and not _is_on(result, image):
        report(progress, 0.9, "resampling onto the image grid")
        result = resample_labels(result, image)
    elif image is not None:
        result = LabelMap(result.layers, image, result.structures, result.warnings)
    if not result.structures:
        raise SegmentationReadError(f"{p}: the segmentation contains no labelled voxels")
    report(progress, 1.0, f"{len(result.structures)} structures")
    return result


def _is_on(labelmap: LabelMap, image: ImageVolume) -> bool:
    return labelmap.grid is image or grids_match(labelmap.grid, image)


def _read_dicom_segmentation(
    p: Path, *, image: ImageVolume | None, progress: ProgressCallback | None
) -> LabelMap:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(p, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise SegmentationReadError(
            f"{p}: not a readable segmentation (expected a label-map file "
            f"({', '.join(IMAGE_SUFFIXES)}), a mask folder, a DICOM SEG or an RTSTRUCT): {exc}"
        ) from exc
    modality = str(header.get("Modality", ""))
    sop_class = str(header.get("SOPClassUID", ""))
    if modality == "SEG" or sop_class == "1.2.840.10008.5.1.4.1.1.66.4":
        from ir_planner.io.dicom_seg import read_dicom_seg

        return read_dicom_seg(p, image=image, progress=progress)
    if modality == "RTSTRUCT" or sop_class == "1.2.840.10008.5.1.4.1.1.481.3":
        from ir_planner.io.rtstruct import read_rtstruct

        if image is None:
            raise SegmentationReadError(
                f"{p}: an RTSTRUCT holds contours in world coordinates; give the image it "
                "was drawn on (image=..., or --image) so they can be rasterised onto its grid"
            )
        return read_rtstruct(p, image=image, progress=progress)
    raise SegmentationReadError(
        f"{p}: DICOM {modality or 'file'} (SOP class {sop_class or 'unknown'}) is neither a "
        "DICOM SEG nor an RTSTRUCT"
    )


# -- label-map files ---------------------------------------------------------------------


def _suffix_of(p: Path) -> str:
    name = p.name.lower()
    return next(s for s in IMAGE_SUFFIXES if name.endswith(s))


def _read_sitk(p: Path) -> sitk.Image:
    """Integrity-check (truncation, geometry fields, size) and read a label-map file."""
    try:
        image, _checked = read_sitk_checked(p)
    except ImageReadError as exc:
        raise SegmentationReadError(str(exc).replace("cannot read image", "cannot read label map")) from exc
    return image


def _integer_layer(array: NDArray[Any], p: Path, what: str = "label map") -> NDArray[Any]:
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
    suffix = _suffix_of(p)
    image = _read_sitk(p)
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
    layers = [_integer_layer(first.array, p)]
    for n, extra in enumerate(layers_sitk[1:], 1):
        layers.append(_integer_layer(from_sitk(extra).array, p, f"layer {n}"))
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
            vol = from_sitk(_read_sitk(layer_path))
        except GeometryError as exc:
            raise SegmentationReadError(f"{layer_path}: {exc}") from exc
        if not grids_match(vol, grid):
            raise SegmentationReadError(f"{layer_path}: layer {n} is not on the grid of {p.name}")
        out.append(_integer_layer(vol.array, layer_path, f"layer {n}"))
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


# -- folders of masks --------------------------------------------------------------------

_NIFTI_DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64,
                 256: np.int8, 512: np.uint16, 768: np.uint32, 1024: np.int64, 1280: np.uint64}


_CHUNK_BYTES = 1 << 18


def _chunks(raw: bytes, gz: bool) -> Iterator[bytes]:
    """The file's (decompressed) bytes in pieces of at most 256 KiB.

    Inflating piece by piece into small buffers is several times cheaper than one
    big ``zlib.decompress``: no large allocation to fault in and copy per file.
    """
    if not gz:
        for start in range(0, len(raw), _CHUNK_BYTES):
            yield raw[start: start + _CHUNK_BYTES]
        return
    inflater = zlib.decompressobj(47)
    tail = raw
    while True:
        out = inflater.decompress(tail, _CHUNK_BYTES)
        tail = inflater.unconsumed_tail
        if out:
            yield out
        if inflater.eof:
            if inflater.unused_data.strip(b"\0"):
                raise _Damaged("trailing bytes after the gzip data (or several members)")
            return
        if not out and not tail:
            raise _Damaged(
                "gzip data is truncated (the file ends before the end of the compressed "
                "stream); the file is damaged or incompletely copied"
            )


class _Damaged(Exception):
    """A mask file is truncated or corrupt (message without the file name)."""


def _fast_nifti_mask(p: Path) -> tuple[bytes, NDArray[np.bool_]] | None:
    """Decode a NIfTI-1 mask (``!= 0``) without SimpleITK; None when not applicable.

    About 3× less CPU than SimpleITK for TotalSegmentator's float64 gzip masks.
    Returns the geometry part of the header (dim, pixdim, qform/sform fields) for
    an exact same-grid check against the reference file, and the mask ``[k, j, i]``:
    NIfTI data is stored x fastest, i.e. C order ``[z, y, x]``, the ITK index order
    that SimpleITK uses, so no flip is involved (the reference file is cross-checked
    against SimpleITK). Truncated or unusual files return None (SimpleITK then
    reads them and reports errors). A truncated or corrupt file raises
    :class:`SegmentationReadError` naming it (never a partly decoded mask).
    """
    try:
        return _fast_nifti_mask_strict(p)
    except _Damaged as exc:
        raise SegmentationReadError(f"{p}: {exc}") from exc
    except zlib.error as exc:
        raise SegmentationReadError(f"{p}: gzip data is corrupt ({exc})") from exc


def _fast_nifti_mask_strict(p: Path) -> tuple[bytes, NDArray[np.bool_]] | None:
    raw = p.read_bytes()
    pieces = _chunks(raw, p.name.lower().endswith(".gz"))
    head = b""
    try:
        while len(head) < 352:
            head += next(pieces)
        endian = "<" if struct.unpack("<i", head[:4])[0] == 348 else ">"
        if struct.unpack(endian + "i", head[:4])[0] != 348:
            return None
        dim = struct.unpack(endian + "8h", head[40:56])
        datatype = struct.unpack(endian + "h", head[70:72])[0]
        vox_offset = int(struct.unpack(endian + "f", head[108:112])[0])
        slope, inter = struct.unpack(endian + "2f", head[112:120])
        if (dim[0] not in (3, 4) or (dim[0] == 4 and dim[4] != 1)
                or datatype not in _NIFTI_DTYPES or vox_offset < 352
                or (inter != 0 and slope != 0)):
            return None
        while len(head) < vox_offset:
            head += next(pieces)
    except StopIteration:
        raise _Damaged("file ends inside the NIfTI header; truncated") from None
    nx, ny, nz = dim[1], dim[2], dim[3]
    if min(nx, ny, nz) <= 0:
        return None  # SimpleITK path: the integrity check names the field
    dtype = np.dtype(_NIFTI_DTYPES[datatype]).newbyteorder(endian)
    count = nx * ny * nz
    check_allocation(p, count, "mask")
    mask = np.empty(count, dtype=bool)
    pos = 0
    pending = head[vox_offset:]
    for piece in itertools.chain([b""], pieces):
        buf = pending + piece if pending else piece
        usable = len(buf) - len(buf) % dtype.itemsize
        n = min(usable // dtype.itemsize, count - pos)
        if n > 0:
            values = np.frombuffer(buf, dtype=dtype, count=n)
            np.not_equal(values, 0, out=mask[pos: pos + n])
            pos += n
        pending = buf[usable:]
        if pos >= count:
            break
    if pos < count:
        raise _Damaged(
            f"truncated: the header declares {count * dtype.itemsize} bytes of voxel data but "
            f"only {pos * dtype.itemsize} are present"
        )
    for _rest in pieces:  # verify the rest of the stream (gzip CRC-32 and length)
        pass
    geometry = head[40:56] + head[76:108] + head[252:328]
    return geometry, mask.reshape(nz, ny, nx)


def _list_mask_files(folder: Path) -> list[Path]:
    files = sorted(
        f for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and is_image_file(f)
    )
    return files


def read_mask_folder(
    folder: str | Path, *, progress: ProgressCallback | None = None
) -> LabelMap:
    """Read a folder of one binary mask per structure (TotalSegmentator layout).

    Structure names are the file names without suffix. Voxels ``!= 0`` belong to
    the structure. **Empty masks are dropped** (listed in the label map's
    ``warnings``): a structure without voxels cannot constrain a plan. Masks are
    decoded in parallel and packed into as few layers as overlaps allow.

    Raises
    ------
    SegmentationReadError
        No mask files, unreadable files, or masks on different grids (names the file).
    """
    folder = Path(folder)
    files = _list_mask_files(folder)
    if not files:
        raise SegmentationReadError(
            f"{folder}: folder holds no mask files ({', '.join(IMAGE_SUFFIXES)})"
        )
    report(progress, 0.0, f"reading {len(files)} masks")
    reference_img = from_sitk(_read_sitk(files[0]), metadata={"source": str(folder)})
    reference_mask = reference_img.array != 0
    is_nifti = files[0].name.lower().endswith((".nii", ".nii.gz"))
    first_fast = _fast_nifti_mask(files[0]) if is_nifti else None
    ref_geometry = first_fast[0] if first_fast is not None else None
    if first_fast is not None and not np.array_equal(first_fast[1], reference_mask):
        raise SegmentationReadError(f"{files[0]}: inconsistent mask decoding; please report")

    def decode(f: Path) -> tuple[Path, tuple[slice, ...] | None, NDArray[np.bool_] | None]:
        """Decode one mask and crop it to its bounding box (runs in a worker thread).

        Only the crop is kept, so memory stays small for many masks on a big grid.
        Files whose header geometry differs from the first file's (or that the fast
        decoder does not handle) go through SimpleITK and a tolerance check.
        """
        if f == files[0]:
            mask = reference_mask
        else:
            fast = None
            if f.name.lower().endswith((".nii", ".nii.gz")):
                try:
                    fast = _fast_nifti_mask(f)
                except OSError as exc:
                    raise SegmentationReadError(f"{f}: cannot read mask ({exc})") from exc
            if fast is not None and ref_geometry is not None and fast[0] == ref_geometry:
                mask = fast[1]
            else:
                vol = from_sitk(_read_sitk(f))
                if not grids_match(vol, reference_img):
                    raise SegmentationReadError(
                        f"{f}: mask is not on the grid of {files[0].name} (all masks in a "
                        "folder must share one grid)"
                    )
                mask = vol.array != 0
        box = bounding_box(mask)
        return f, box, (mask[box].copy() if box is not None else None)

    packer = LayerPacker(reference_img.shape)
    empty: list[str] = []
    warnings: list[str] = []
    taken: set[str] = set()
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # results come back in file order; progress is reported from this thread only
        for n, (f, box, crop) in enumerate(pool.map(decode, files), 1):
            report(progress, 0.95 * n / len(files), f"mask {n}/{len(files)}")
            name = f.name[: len(f.name) - len(_suffix_of(f))]
            if box is None or crop is None:
                empty.append(name)
                continue
            packer.add(unique_name(name, taken), box, crop)
    if empty:
        warnings.append(f"{len(empty)} empty mask(s) dropped: {', '.join(empty)}")
    if not packer.structures:
        raise SegmentationReadError(f"{folder}: all {len(files)} masks are empty")
    grid = reference_img.with_array(packer.layers[0])
    report(progress, 1.0, f"{len(packer.structures)} structures")
    return packer.label_map(grid, warnings)


# -- writing -----------------------------------------------------------------------------


def save_labels(labelmap: LabelMap, path: str | Path) -> Path:
    """Write a label map as NIfTI/NRRD/MHA plus a ``<stem>.labels.json`` sidecar.

    Layer 0 goes to ``path``; further layers to ``<stem>.layer<N><suffix>``. The
    sidecar holds every structure's name, label, layer, category, colour,
    ``margin_mm`` and forbidden flag, so :func:`load_labels` round-trips exactly.
    Every file is written under a temporary name and renamed.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        Unsupported suffix or missing output folder.
    """
    p = Path(path)
    if not is_image_file(p):
        raise InputError(
            f"output {p}: unsupported suffix; use one of .nii.gz, .nii, .nrrd, .mha"
        )
    if not p.parent.is_dir():
        raise InputError(f"output {p}: folder {p.parent} does not exist")
    suffix = _suffix_of(p)
    stem = p.name[: len(p.name) - len(suffix)]
    layer_paths = [p] + [
        p.with_name(f"{stem}.layer{n}{suffix}") for n in range(1, len(labelmap.layers))
    ]
    structures = []
    for s in labelmap.structures:
        entry = s.to_dict()
        if labelmap.voxel_count(s) == 0:
            entry["empty"] = True
        structures.append(entry)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "coordinate_system": "LPS",
        "layers": [lp.name for lp in layer_paths],
        "structures": structures,
    }
    for layer, lp in zip(labelmap.layers, layer_paths):
        top = int(layer.max()) if layer.size else 0
        dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
        write_sitk_atomic(to_sitk(labelmap.grid, layer.astype(dtype, copy=False)), lp)
    side = sidecar_path(p, suffix)
    atomic_write_json(side, sidecar)
    return p
