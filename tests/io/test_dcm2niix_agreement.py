"""``ir-planner convert`` agrees with dcm2niix in world space over many geometries.

Every synthetic series samples one non-symmetric phantom, defined in DICOM
patient coordinates (LPS, mm), at the true world position of every pixel, so a
flipped axis, a wrong slice order or an ignored tilt moves the bright structures
and breaks the correlation. Each case is checked twice: against dcm2niix
(the PyPI binary, run on the same folder; its ``_Tilt_Eq``/``_Eq`` output when it
writes one) and against the phantom itself (analytic truth at our voxel centres).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.io.dicom import read_dicom_series
from ir_planner.io.dicom_write import write_dicom_series
from tests.io.dcm2niix_compare import Agreement, compare_with_dcm2niix

CENTRE_LPS = np.array([6.0, -14.0, 31.0])
BRIGHT_HU = 300.0


def phantom_hu(points_lps: np.ndarray) -> np.ndarray:
    """Non-symmetric phantom (HU) at world points (…, 3): body, gradient, two bones."""
    rel = points_lps - CENTRE_LPS

    def inside(d_mm: np.ndarray) -> np.ndarray:  # smooth edge, ≈ 1.5 mm wide
        return 1.0 / (1.0 + np.exp(np.clip(d_mm / 0.6, -50, 50)))

    body_axes = np.array([36.0, 27.0, 30.0])
    d_body = (np.linalg.norm(rel / body_axes, axis=-1) - 1.0) * body_axes.min()
    value = -1000.0 + (1040.0 + rel @ np.array([2.0, -1.5, 1.0])) * inside(d_body)
    for centre, radius, hu in (((15.0, -9.0, 10.0), 8.0, 900.0), ((-17.0, 8.0, -11.0), 5.0, 600.0)):
        d = np.linalg.norm(rel - np.array(centre), axis=-1) - radius
        value = value + hu * inside(d)
    return value


def _unit(v: tuple[float, ...] | np.ndarray) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


def _rot(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues)."""
    k = _unit(axis)
    a = np.radians(degrees)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


#: Image orientation (row cosine, column cosine) a scanner writes for an axial
#: acquisition in each patient position (DICOM PS3.3 C.7.6.1.1.2 / C.7.6.2.1.1:
#: the cosines are in the patient frame, so they already encode the position).
POSITION_IOP = {
    "HFS": ((1, 0, 0), (0, 1, 0)),
    "FFS": ((-1, 0, 0), (0, 1, 0)),
    "HFP": ((-1, 0, 0), (0, -1, 0)),
    "FFP": ((1, 0, 0), (0, -1, 0)),
    "HFDL": ((0, -1, 0), (1, 0, 0)),
    "HFDR": ((0, 1, 0), (-1, 0, 0)),
    "FFDL": ((0, 1, 0), (1, 0, 0)),
    "FFDR": ((0, -1, 0), (-1, 0, 0)),
}


@dataclass(frozen=True)
class Case:
    """One synthetic acquisition."""

    name: str
    row: tuple[float, float, float] = (1.0, 0.0, 0.0)
    col: tuple[float, float, float] = (0.0, 1.0, 0.0)
    position: str = "HFS"
    steps_mm: tuple[float, ...] = (3.0,) * 19
    tilt_deg: float = 0.0
    descending: bool = False
    modality: str = "CT"
    manufacturer: str = "SIEMENS"
    resampled: bool = False
    dcm2niix_ok: bool = True
    #: PixelSpacing: (between rows = along the column cosine, between columns), mm
    pixel_spacing_mm: tuple[float, float] = (2.5, 2.5)
    #: "explicit" (VR little endian), "implicit" or "rle" (RLE Lossless)
    transfer: str = "explicit"
    #: every third slice stored with its own RescaleSlope 2 / RescaleIntercept -1000
    rescale_per_slice: bool = False


def _position_cases() -> list[Case]:
    vendors = ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA", "Canon Medical Systems"]
    return [
        Case(f"position-{pos}", row=iop[0], col=iop[1], position=pos,
             manufacturer=vendors[n % len(vendors)])
        for n, (pos, iop) in enumerate(POSITION_IOP.items())
    ]


_OBLIQUE = _rot((1, 0.3, 0.2), 23.0) @ _rot((0, 0, 1), -14.0)
CASES: list[Case] = [
    *_position_cases(),
    Case("oblique", row=tuple(_OBLIQUE[:, 0]), col=tuple(_OBLIQUE[:, 1]), manufacturer="Philips"),
    Case("oblique-prone-MR", row=tuple(-_OBLIQUE[:, 0]), col=tuple(-_OBLIQUE[:, 1]),
         position="HFP", modality="MR"),
    Case("sagittal-MR", row=(0, 1, 0), col=(0, 0, -1), modality="MR"),
    Case("coronal-MR", row=(1, 0, 0), col=(0, 0, -1), modality="MR", manufacturer="GE MEDICAL SYSTEMS"),
    Case("descending-FFS", row=(-1, 0, 0), col=(0, 1, 0), position="FFS", descending=True),
    Case("tilt+12-GE", tilt_deg=12.0, manufacturer="GE MEDICAL SYSTEMS", resampled=True),
    Case("tilt+25-SIEMENS", tilt_deg=25.0, resampled=True),
    # dcm2niix v1.0.20260724 corrects a tilt only for head-first, non-prone, ascending
    # series tilted like GE's (+ tilt, column cosine z < 0); for the others it writes a
    # _Tilt file that does not match the scanned object (r 0.35-0.73 against the
    # phantom, see bench/results/dcm2niix.md). These are checked against the phantom only.
    Case("tilt-20-HFS", tilt_deg=-20.0, resampled=True, dcm2niix_ok=False),
    Case("tilt+15-FFS", row=(-1, 0, 0), col=(0, 1, 0), position="FFS", tilt_deg=15.0,
         manufacturer="TOSHIBA", resampled=True, dcm2niix_ok=False),
    Case("tilt+10-HFS-descending", tilt_deg=10.0, descending=True, resampled=True,
         dcm2niix_ok=False),
    Case("tilt+18-HFP", row=(-1, 0, 0), col=(0, -1, 0), position="HFP", tilt_deg=18.0,
         manufacturer="GE MEDICAL SYSTEMS", resampled=True, dcm2niix_ok=False),
    Case("tilt+14-HFDL", row=(0, -1, 0), col=(1, 0, 0), position="HFDL", tilt_deg=14.0,
         manufacturer="Philips", resampled=True, dcm2niix_ok=False),
    Case("uneven-spacing", steps_mm=(3, 3, 3, 4.5, 3, 2, 3, 6, 3, 3, 3, 2.5, 3, 3, 4, 3, 3, 3, 3),
         resampled=True),
    Case("missing-slice-HFP", row=(-1, 0, 0), col=(0, -1, 0), position="HFP",
         steps_mm=(3,) * 8 + (6,) + (3,) * 9, resampled=True),
    Case("tilt+15-uneven", tilt_deg=15.0, steps_mm=(3, 3, 4, 3, 3, 3, 5, 3, 3, 3, 3, 4, 3, 3),
         manufacturer="GE MEDICAL SYSTEMS", resampled=True),
    # PixelSpacing order (rows first): a swap would stretch the phantom.
    Case("anisotropic-pixels-HFDR-MR", row=(0, 1, 0), col=(-1, 0, 0), position="HFDR",
         modality="MR", pixel_spacing_mm=(1.6, 3.1)),
    Case("anisotropic-pixels-tilt+16", tilt_deg=16.0, pixel_spacing_mm=(3.2, 1.9),
         manufacturer="GE MEDICAL SYSTEMS", resampled=True),
    Case("rescale-per-slice-FFP", row=(1, 0, 0), col=(0, -1, 0), position="FFP",
         rescale_per_slice=True),
    Case("implicit-VR-oblique", row=tuple(_OBLIQUE[:, 0]), col=tuple(_OBLIQUE[:, 1]),
         transfer="implicit"),
    Case("RLE-compressed-FFDL", row=(0, 1, 0), col=(1, 0, 0), position="FFDL", transfer="rle"),
]

ROWS, COLS = 48, 64


def write_case(case: Case, folder: Path) -> list[Path]:
    """Write ``case`` as a classic single-frame series; pixels sampled from the phantom."""
    row = _unit(case.row)
    col = _unit(case.col)
    normal = np.cross(row, col)
    table = np.array([0.0, 0.0, np.sign(normal[2]) or 1.0])  # IPP steps along the table
    if case.tilt_deg:
        # The gantry tilts about the room's horizontal axis, the image row axis; the sign
        # follows GE's real series (+18.5° ↔ column cosine z = -0.317 when head first).
        col = _rot(row, -case.tilt_deg) @ col
        normal = np.cross(row, col)
    step_dir = table if case.tilt_deg else normal
    along = np.concatenate([[0.0], np.cumsum(case.steps_mm)])
    along -= along.mean()
    sy, sx = case.pixel_spacing_mm
    centre_ipp = (CENTRE_LPS + np.array([1.3, -0.7, 0.9])
                  - ((COLS - 1) * sx * row + (ROWS - 1) * sy * col) / 2)
    ipps = [centre_ipp + a * step_dir for a in along]
    if case.descending:
        ipps = ipps[::-1]
    r, c = np.meshgrid(np.arange(ROWS), np.arange(COLS), indexing="ij")
    offsets = c[..., None] * sx * row + r[..., None] * sy * col
    stack = np.stack([np.round(phantom_hu(ipp + offsets)) for ipp in ipps]).astype(np.int16)
    if case.modality == "MR":
        stack = (stack + 1024).astype(np.int16)
    affine = affine_from_geometry(ipps[0], [sx, sy, 3.0],
                                  np.stack([row, col, normal], axis=1))
    files = write_dicom_series(
        ImageVolume(stack, affine, modality=case.modality), folder, modality=case.modality,
        patient_position=case.position, series_description=case.name,
    )
    for k, (f, ipp) in enumerate(zip(files, ipps)):
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.SliceLocation = f"{float(ipp @ normal):.6f}"
        ds.Manufacturer = case.manufacturer
        if case.tilt_deg:
            ds.GantryDetectorTilt = f"{case.tilt_deg:g}"
        if case.rescale_per_slice and k % 3 == 1:
            values = stack[k].astype(np.int32)
            ds.PixelData = ((values + 1000) // 2).astype(np.int16).tobytes()  # even HU only
            ds.RescaleSlope, ds.RescaleIntercept = "2", "-1000"
        if case.transfer == "rle":
            ds.compress(RLELossless)
            ds.save_as(f)
        elif case.transfer == "implicit":
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.save_as(f, implicit_vr=True, little_endian=True)
        else:
            ds.save_as(f)
    return files


def check_against_phantom(path: Path, *, offset: float = 0.0) -> tuple[float, float]:
    """Correlation and bright-centroid distance (mm) of our volume vs the analytic phantom."""
    vol = read_dicom_series(path)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in vol.shape_ijk], indexing="ij"), -1)
    points = vol.index_to_world(grid.reshape(-1, 3).astype(float))
    ours = vol.array.transpose(2, 1, 0).reshape(-1).astype(float) - offset
    truth = phantom_hu(points)
    acquired = ours > vol.array.min() - offset + 1.0  # resampled voxels outside the slices
    r = float(np.corrcoef(ours[acquired], truth[acquired])[0, 1])
    w_ours = np.clip(ours - BRIGHT_HU, 0, None) * acquired
    w_truth = np.clip(truth - BRIGHT_HU, 0, None) * acquired
    c_ours = (points * w_ours[:, None]).sum(0) / w_ours.sum()
    c_truth = (points * w_truth[:, None]).sum(0) / w_truth.sum()
    return r, float(np.linalg.norm(c_ours - c_truth))


def assert_agrees(agreement: Agreement, *, resampled: bool) -> None:
    """The acceptance rule of issue 2, applied to one comparison."""
    assert agreement.n_points > 5000, agreement
    assert agreement.correlation >= (0.95 if resampled else 0.99), agreement
    assert agreement.n_bright_ours > 20 and agreement.n_bright_ref > 20, agreement
    assert agreement.centroid_distance_mm <= 1.0, agreement
    if not resampled:  # same acquired grid on both sides (axis flips aside)
        assert agreement.corner_distance_mm < 0.01, agreement
        assert agreement.axis_angle_deg < 0.01, agreement


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_synthetic_geometry_agrees_with_dcm2niix_and_phantom(case: Case, tmp_path: Path) -> None:
    write_case(case, tmp_path / "dcm")
    if case.dcm2niix_ok:
        agreement = compare_with_dcm2niix(tmp_path / "dcm", threshold=BRIGHT_HU + (
            1024 if case.modality == "MR" else 0), work_dir=tmp_path / "work")
        assert_agrees(agreement, resampled=case.resampled)
        if case.tilt_deg:
            assert "_Tilt" in Path(agreement.ref_file).name
            assert any("gantry tilt" in w for w in agreement.ours_warnings)
    r, centroid_mm = check_against_phantom(tmp_path / "dcm",
                                           offset=1024.0 if case.modality == "MR" else 0.0)
    assert r >= (0.98 if case.resampled else 0.995), r
    assert centroid_mm <= 1.0, centroid_mm


def _legacy_enhanced(classic: list[Path], out: Path, modality: str) -> Path:
    import highdicom as hd

    converter = {
        "CT": hd.legacy.LegacyConvertedEnhancedCTImage,
        "MR": hd.legacy.LegacyConvertedEnhancedMRImage,
    }[modality]
    enhanced = converter(
        legacy_datasets=[pydicom.dcmread(f) for f in classic], series_instance_uid=hd.UID(),
        series_number=7, sop_instance_uid=hd.UID(), instance_number=1,
    )
    out.mkdir()
    target = out / "enhanced.dcm"
    enhanced.save_as(target)
    return target


@pytest.mark.parametrize(
    ("modality", "case"),
    [("CT", CASES[2]), ("MR", CASES[9])],  # prone CT, oblique prone MR
    ids=["legacy-enhanced-CT-HFP", "legacy-enhanced-MR-oblique-HFP"],
)
def test_legacy_converted_enhanced_agrees_with_dcm2niix(
    modality: str, case: Case, tmp_path: Path
) -> None:
    files = write_case(case, tmp_path / "classic")
    target = _legacy_enhanced(files, tmp_path / "enh", modality)
    agreement = compare_with_dcm2niix(target, threshold=BRIGHT_HU + (
        1024 if modality == "MR" else 0), work_dir=tmp_path / "work")
    assert_agrees(agreement, resampled=False)
    classic = read_dicom_series(tmp_path / "classic")
    enhanced = read_dicom_series(target)
    np.testing.assert_array_equal(enhanced.array, classic.array)
    np.testing.assert_allclose(enhanced.index_to_lps, classic.index_to_lps, atol=1e-4)


def _modify_enhanced(path: Path, edit: Callable[[pydicom.Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)


def test_enhanced_per_frame_rescale_and_orientation_agree_with_dcm2niix(tmp_path: Path) -> None:
    """Per-frame Pixel Value Transformation (slopes differ) and per-frame Plane Orientation."""
    case = CASES[8]  # oblique
    files = write_case(case, tmp_path / "classic")
    # Frames with their own rescale: stored = (HU + 1000) / 2 with slope 2, intercept -1000.
    for f in files[::3]:
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.int32)
        ds.PixelData = ((hu + 1000) // 2).astype(np.int16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = "2", "-1000"
        ds.save_as(f)
    target = _legacy_enhanced(files, tmp_path / "enh", "CT")

    def per_frame_orientation(ds: pydicom.Dataset) -> None:
        shared = ds.SharedFunctionalGroupsSequence[0]
        orientation = shared.PlaneOrientationSequence
        del shared.PlaneOrientationSequence
        for item in ds.PerFrameFunctionalGroupsSequence:
            item.PlaneOrientationSequence = pydicom.Sequence([pydicom.Dataset()])
            item.PlaneOrientationSequence[0].ImageOrientationPatient = (
                orientation[0].ImageOrientationPatient)

    _modify_enhanced(target, per_frame_orientation)
    ds = pydicom.dcmread(target)
    slopes = {float(f.PixelValueTransformationSequence[0].RescaleSlope)
              for f in ds.PerFrameFunctionalGroupsSequence}
    assert slopes == {1.0, 2.0}
    assert "PlaneOrientationSequence" in ds.PerFrameFunctionalGroupsSequence[0]
    agreement = compare_with_dcm2niix(target, threshold=BRIGHT_HU, work_dir=tmp_path / "work")
    assert_agrees(agreement, resampled=False)
    np.testing.assert_allclose(read_dicom_series(target).array,
                               read_dicom_series(tmp_path / "classic").array, atol=1.0)


def _shuffle_frames(ds: pydicom.Dataset) -> None:
    perm = np.random.default_rng(1).permutation(int(ds.NumberOfFrames))
    frames = ds.pixel_array
    items = list(ds.PerFrameFunctionalGroupsSequence)
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence([items[i] for i in perm])
    ds.PixelData = np.ascontiguousarray(frames[perm]).tobytes()


def _per_frame_measures(ds: pydicom.Dataset) -> None:
    shared = ds.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0]
    del shared.PixelMeasuresSequence
    for item in ds.PerFrameFunctionalGroupsSequence:
        item.PixelMeasuresSequence = pydicom.Sequence([pydicom.Dataset()])
        item.PixelMeasuresSequence[0].PixelSpacing = measures.PixelSpacing
        item.PixelMeasuresSequence[0].SliceThickness = measures.SliceThickness


_CASE = {c.name: c for c in CASES}
ENHANCED_VARIANTS = {
    # name: (case, edit of the multi-frame dataset, dcm2niix output, resampled)
    "frames-shuffled-oblique": (_CASE["oblique"], _shuffle_frames, "auto", False),
    "per-frame-pixel-measures-HFDR": (_CASE["position-HFDR"], _per_frame_measures, "auto", False),
    "descending-FFS": (_CASE["descending-FFS"], None, "auto", False),
    # Tilted enhanced CT: dcm2niix's plain file keeps the shear in its affine (exact, r = 1
    # against the phantom) while its _Tilt file is 1-3.5 mm off; compare with the plain one.
    "tilt+25": (_CASE["tilt+25-SIEMENS"], None, "plain", True),
    # Unevenly spaced enhanced CT: dcm2niix writes no _Eq file and assumes an even step
    # (r 0.90 against the phantom): phantom only.
    "uneven-spacing": (_CASE["uneven-spacing"], None, None, True),
}


@pytest.mark.parametrize("name", list(ENHANCED_VARIANTS))
def test_enhanced_variants_agree_with_dcm2niix_and_phantom(name: str, tmp_path: Path) -> None:
    case, edit, variant, resampled = ENHANCED_VARIANTS[name]
    files = write_case(case, tmp_path / "classic")
    target = _legacy_enhanced(files, tmp_path / "enh", "CT")
    if edit is not None:
        _modify_enhanced(target, edit)
    if variant is not None:
        agreement = compare_with_dcm2niix(target, threshold=BRIGHT_HU, variant=variant,
                                          work_dir=tmp_path / "work")
        assert_agrees(agreement, resampled=resampled)
    r, centroid_mm = check_against_phantom(target)
    assert r >= (0.98 if resampled else 0.995) and centroid_mm <= 1.0, (r, centroid_mm)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "eCT_Supplemental.dcm"])
def test_real_pydicom_files_agree_with_dcm2niix(name: str, tmp_path: Path) -> None:
    """Real single files (GE CT, MR, enhanced CT), each copied alone into a folder."""
    src = Path(get_testdata_file(name))
    (tmp_path / "in").mkdir()
    target = tmp_path / "in" / name
    target.write_bytes(src.read_bytes())
    agreement = compare_with_dcm2niix(target, work_dir=tmp_path / "work")
    assert agreement.correlation >= 0.999, agreement
    assert agreement.centroid_distance_mm <= 0.5, agreement
    assert agreement.corner_distance_mm < 0.01, agreement
    assert agreement.axis_angle_deg < 0.01, agreement


def _dicomdir_series(*parts: str) -> Path:
    return Path(get_testdata_file("DICOMDIR")).parent.joinpath(*parts)


@pytest.mark.parametrize(("parts", "resampled"), [
    (("98892001", "CT5N"), False),   # 5 real CT slices (FFS)
    (("98892003", "MR1"), False),    # real MR, one slice per series
])
def test_real_pydicom_series_agree_with_dcm2niix(parts: tuple[str, ...], resampled: bool,
                                                 tmp_path: Path) -> None:
    agreement = compare_with_dcm2niix(_dicomdir_series(*parts), work_dir=tmp_path / "work")
    assert agreement.correlation >= 0.999, agreement
    assert agreement.corner_distance_mm < 0.01 and agreement.axis_angle_deg < 0.01, agreement
    assert agreement.centroid_distance_mm <= 0.5, agreement


def test_shared_ge_tilt_series_agrees_with_dcm2niix(shared_data: Path, tmp_path: Path) -> None:
    agreement = compare_with_dcm2niix(shared_data / "dcm-qa-ct-ge-tilt", threshold=300.0,
                                      work_dir=tmp_path / "work", max_points=150_000)
    assert "_Tilt_Eq" in Path(agreement.ref_file).name
    assert agreement.correlation >= 0.95 and agreement.centroid_distance_mm <= 1.0, agreement


def test_single_file_converts_its_series_like_dcm2niix(tmp_path: Path) -> None:
    """Given one slice, both convert the slice's series (dcm2niix: the whole folder)."""
    files = write_case(CASES[4], tmp_path / "dcm")  # HFDL
    agreement = compare_with_dcm2niix(files[7], threshold=BRIGHT_HU, work_dir=tmp_path / "work")
    assert_agrees(agreement, resampled=False)
    assert agreement.ours_size == (64, 48, 20)
    assert any("read the whole series" in w for w in agreement.ours_warnings)


def test_real_philips_enhanced_mr_geometry_agrees_with_dcm2niix(tmp_path: Path) -> None:
    """Real Philips Enhanced MR (MPRAGE, 176 frames) shipped with nibabel.

    nibabel's copy has blank pixel data (all zero), so only the geometry can be
    compared: every corner voxel centre and every axis direction.
    """
    import gzip

    import nibabel

    src = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"
    (tmp_path / "in").mkdir()
    target = tmp_path / "in" / "mprage.dcm"
    target.write_bytes(gzip.decompress(src.read_bytes()))
    agreement = compare_with_dcm2niix(target, via_convert=False, work_dir=tmp_path / "work")
    assert sorted(agreement.ours_size) == sorted(agreement.ref_size) == [176, 256, 256]
    assert agreement.corner_distance_mm < 0.01, agreement
    assert agreement.axis_angle_deg < 0.01, agreement
