"""Write an :class:`ImageVolume` as a classic DICOM CT or MR image series.

One single-frame file per slice, int16 stored values with RescaleSlope /
RescaleIntercept, geometry (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing) taken from the volume's index→LPS affine. Used for sample data,
tests and exports; the files read back identically in this package's reader and
in SimpleITK/GDCM.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from ir_planner.core.errors import GeometryError, InputError
from ir_planner.core.fileio import default_mode
from ir_planner.core.progress import ProgressCallback, report
from ir_planner.core.volume import ImageVolume, geometry_from_affine

__all__ = ["write_dicom_series", "CT_IMAGE_STORAGE", "MR_IMAGE_STORAGE"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_SOP_CLASSES = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}
_PATIENT_POSITIONS = {"HFS", "HFP", "FFS", "FFP", "HFDR", "HFDL", "FFDR", "FFDL"}
_INT16_MIN, _INT16_MAX = -32768, 32767


def _ds_number(value: float) -> str:
    """Format a number for a DS element (≤ 16 characters)."""
    for digits in (10, 8, 6, 4):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.3g}"


def _rescale(array: NDArray[np.generic]) -> tuple[NDArray[np.int16], float, float]:
    """Stored int16 values and (slope, intercept) so that value = stored·slope + intercept."""
    data = np.asarray(array)
    if data.dtype == np.bool_:
        data = data.astype(np.int16)
    if not np.all(np.isfinite(data)):
        raise InputError("volume contains NaN or infinite values; DICOM cannot store them")
    lo = float(data.min()) if data.size else 0.0
    hi = float(data.max()) if data.size else 0.0
    integral = np.issubdtype(data.dtype, np.integer) or bool(np.all(data == np.round(data)))
    if integral and lo >= _INT16_MIN and hi <= _INT16_MAX:
        return data.astype(np.int16), 1.0, 0.0
    # Linear mapping onto the int16 range; slope and intercept written with ≤ 16 chars.
    intercept = float(_ds_number((lo + hi) / 2.0))
    half_range = max(hi - intercept, intercept - lo, 1e-12)
    slope = float(_ds_number(half_range / 32000.0))
    if slope <= 0:
        slope = 1e-9
    stored = np.clip(np.round((data - intercept) / slope), _INT16_MIN, _INT16_MAX)
    return stored.astype(np.int16), slope, intercept


def _slice_uid(series_uid: str, index: int) -> str:
    """A SOP Instance UID derived deterministically from the series UID."""
    return generate_uid(entropy_srcs=[series_uid, "slice", str(index)])


def write_dicom_series(
    volume: ImageVolume,
    out_dir: str | Path,
    *,
    patient_name: str = "ANONYMOUS^SAMPLE",
    patient_id: str = "IRP0001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "",
    series_number: int = 1,
    modality: str = "CT",
    patient_position: str = "HFS",
    study_date: str | _dt.date | None = None,
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Write ``volume`` as a single-frame DICOM CT or MR Image Storage series.

    Parameters
    ----------
    volume : ImageVolume
        Volume to write; its affine must be orthogonal (no shear). Slice ``k`` of
        the array becomes instance ``k + 1`` with ImagePositionPatient at
        ``index_to_world((0, 0, k))``.
    out_dir : str or Path
        Output folder. Created if missing (the whole folder appears at once;
        missing parent folders are created);
        if it exists, files are written under temporary names and renamed.
        Existing files with the same names are an error (no silent overwrite).
    patient_name, patient_id : str
        Patient identification written into every file.
    study_uid, series_uid, frame_of_reference_uid : str, optional
        UIDs; generated when None. With all three given the output is fully
        deterministic (SOP Instance UIDs are derived from the series UID).
    series_description : str
        SeriesDescription (0008,103E).
    series_number : int
        SeriesNumber; also part of the file names ``IM_{series:04d}_{slice:05d}.dcm``.
    modality : {"CT", "MR"}
        Selects CT Image Storage or MR Image Storage.
    patient_position : str
        PatientPosition (HFS, FFS, HFP, ...). Descriptive only: geometry is in the
        orientation cosines.
    study_date : str (YYYYMMDD) or datetime.date, optional
        StudyDate; today when None.
    progress : ProgressCallback, optional
        Called with the fraction of slices written.

    Returns
    -------
    list of Path
        The written files in slice order.

    Raises
    ------
    GeometryError
        If the volume's affine is sheared (e.g. an unresampled gantry tilt).
    InputError
        Bad modality or patient position, NaN values, or files already present.
    """
    modality = modality.upper()
    if modality not in _SOP_CLASSES:
        raise InputError(f"modality must be 'CT' or 'MR'; got {modality!r}")
    if patient_position.upper() not in _PATIENT_POSITIONS:
        raise InputError(
            f"patient_position must be one of {sorted(_PATIENT_POSITIONS)}; got {patient_position!r}"
        )
    if not volume.is_orthogonal():
        raise GeometryError(
            "cannot write a sheared (non-orthogonal) volume as a DICOM series; resample it "
            "onto an orthogonal grid first"
        )
    if series_number < 0:
        raise InputError(f"series_number must be ≥ 0; got {series_number}")
    if study_date is None:
        date_text = _dt.date.today().strftime("%Y%m%d")
    elif isinstance(study_date, _dt.date):
        date_text = study_date.strftime("%Y%m%d")
    else:
        date_text = str(study_date)
        if len(date_text) != 8 or not date_text.isdigit():
            raise InputError(f"study_date must be YYYYMMDD; got {study_date!r}")

    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()

    _origin, spacing_mm, direction = geometry_from_affine(volume.index_to_lps)
    row_cos = direction[:, 0]
    col_cos = direction[:, 1]
    normal = np.cross(row_cos, col_cos)
    stored, slope, intercept = _rescale(volume.array)
    nk, nj, ni = volume.shape
    positions = volume.index_to_world(
        np.stack([np.zeros(nk), np.zeros(nk), np.arange(nk, dtype=float)], axis=1)
    )

    out = Path(out_dir)
    names = [f"IM_{series_number:04d}_{k + 1:05d}.dcm" for k in range(nk)]
    if out.exists():
        if not out.is_dir():
            raise InputError(f"output {out} exists and is not a folder")
        clash = [n for n in names if (out / n).exists()]
        if clash:
            raise InputError(
                f"output folder {out} already holds {clash[0]} (and {len(clash) - 1} more); "
                "choose an empty folder or another series_number"
            )
        work_dir = Path(tempfile.mkdtemp(prefix=".irp-dicom-", dir=out))
        final_dir = out
        new_folder = False
    else:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"output {out}: cannot create folder {out.parent} ({exc})") from exc
        work_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        final_dir = out
        new_folder = True

    base = Dataset()
    base.SpecificCharacterSet = "ISO_IR 192"
    base.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    base.SOPClassUID = _SOP_CLASSES[modality]
    base.StudyDate = date_text
    base.SeriesDate = date_text
    base.ContentDate = date_text
    base.StudyTime = "120000"
    base.SeriesTime = "120000"
    base.ContentTime = "120000"
    base.AccessionNumber = ""
    base.Modality = modality
    base.Manufacturer = "IR Planner"
    base.ReferringPhysicianName = ""
    base.StudyDescription = "IR Planner"
    base.SeriesDescription = series_description
    base.PatientName = patient_name
    base.PatientID = patient_id
    base.PatientBirthDate = ""
    base.PatientSex = ""
    base.SliceThickness = _ds_number(float(spacing_mm[2]))
    base.SpacingBetweenSlices = _ds_number(float(spacing_mm[2]))
    base.PatientPosition = patient_position.upper()
    base.StudyInstanceUID = study_uid
    base.SeriesInstanceUID = series_uid
    base.StudyID = "1"
    base.SeriesNumber = int(series_number)
    base.FrameOfReferenceUID = frame_of_reference_uid
    base.PositionReferenceIndicator = ""
    base.ImageOrientationPatient = [_ds_number(float(v)) for v in (*row_cos, *col_cos)]
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows = nj
    base.Columns = ni
    base.PixelSpacing = [_ds_number(float(spacing_mm[1])), _ds_number(float(spacing_mm[0]))]
    base.BitsAllocated = 16
    base.BitsStored = 16
    base.HighBit = 15
    base.PixelRepresentation = 1
    base.RescaleIntercept = _ds_number(intercept)
    base.RescaleSlope = _ds_number(slope)
    if modality == "CT":
        base.RescaleType = "HU"
        base.KVP = "120"
        base.WindowCenter = "40"
        base.WindowWidth = "400"

    written: list[Path] = []
    moved: list[Path] = []
    try:
        for k in range(nk):
            ds = Dataset()
            ds.update(base)
            sop_uid = _slice_uid(series_uid, k)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = base.SOPClassUID
            meta.MediaStorageSOPInstanceUID = UID(sop_uid)
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.file_meta = meta
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds_number(float(v)) for v in positions[k]]
            ds.SliceLocation = _ds_number(float(np.dot(positions[k], normal)))
            ds.PixelData = np.ascontiguousarray(stored[k]).astype("<i2").tobytes()
            target = work_dir / names[k]
            ds.save_as(target, enforce_file_format=True)
            written.append(target)
            report(progress, (k + 1) / max(nk, 1), f"writing DICOM slice {k + 1}/{nk}")
        if new_folder:
            os.chmod(work_dir, default_mode(directory=True))  # mkdtemp makes 0700
            os.replace(work_dir, final_dir)
        else:
            for name in names:
                os.replace(work_dir / name, final_dir / name)
                moved.append(final_dir / name)
            work_dir.rmdir()
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        for path in moved:  # no half series left in a pre-existing folder
            path.unlink(missing_ok=True)
        raise
    return [final_dir / name for name in names]
