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

from pathlib import Path

import numpy as np

from ir_planner.core.errors import (
    InputError,
    SegmentationReadError,
)
from ir_planner.core.fileio import atomic_write_json
from ir_planner.core.labels import LabelMap
from ir_planner.core.progress import ProgressCallback, report, subrange
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import (
    IMAGE_SUFFIXES,
    is_image_file,
    write_sitk_atomic,
)
from ir_planner.io.label_files import Names, read_label_file, suffix_of
from ir_planner.io.load import check_input_path
from ir_planner.io.mask_folder import read_mask_folder
from ir_planner.io.plugin_readers import plugin_reader, read_labels_with
from ir_planner.io.seg_common import (
    grids_match,
    resample_labels,
)
from ir_planner.io.seg_tables import (
    SIDECAR_FORMAT,
    sidecar_path,
)
from ir_planner.io.sitk_convert import to_sitk

__all__ = ["load_labels", "save_labels", "read_mask_folder", "read_label_file"]


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
    plugin = plugin_reader(p, "segmentation")  # another plugin's reader claims this type
    if plugin is not None:
        result = read_labels_with(plugin, p)
    elif p.is_dir():
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
    suffix = suffix_of(p)
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
