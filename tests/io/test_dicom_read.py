"""read_dicom_series / list_series on synthetic and real series."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from ir_planner.core.errors import ImageReadError
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.io.dicom import choose_series, list_series, read_dicom_series
from ir_planner.io.dicom_write import write_dicom_series
from tests.io.test_dicom_write import DIRECTIONS, make_volume, rotation, sitk_read


def _set(path: Path, **elements: object) -> None:
    ds = pydicom.dcmread(path)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_shuffled_names_and_instance_numbers_give_the_same_volume(tmp_path: Path) -> None:
    vol = make_volume(DIRECTIONS["oblique"], shape_kji=(8, 12, 10))
    files = write_dicom_series(vol, tmp_path / "ordered")
    ref = read_dicom_series(tmp_path / "ordered")
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    perm = np.random.default_rng(3).permutation(len(files))
    for new_index, old in enumerate(perm):
        target = shuffled / f"x{new_index:03d}.dcm"
        shutil.copy(files[old], target)
        _set(target, InstanceNumber=int(len(files) - new_index))  # misleading numbers
    got = read_dicom_series(shuffled)
    np.testing.assert_array_equal(got.array, ref.array)
    np.testing.assert_allclose(got.index_to_lps, ref.index_to_lps, atol=1e-6)
    assert not any("tilt" in w or "missing" in w for w in got.warnings)


def test_missing_slice_detected_interpolated_and_reported(tmp_path: Path) -> None:
    # Value = 10·k: linear along the slice axis, so interpolation across the gap is exact.
    arr = np.repeat((10 * np.arange(8, dtype=np.int16))[:, None, None], 6, axis=1)
    arr = np.repeat(arr, 5, axis=2)
    vol = ImageVolume(arr, affine_from_geometry([0, 0, 0], [1.0, 1.0, 2.0], np.eye(3)))
    files = write_dicom_series(vol, tmp_path / "s")
    files[4].unlink()
    info = list_series(tmp_path / "s")[0]
    assert info.n_frames == 7 and info.size_ijk == (5, 6, 8)
    assert any("missing slices" in w and "1 slice" in w for w in info.warnings)
    got = read_dicom_series(tmp_path / "s")
    assert got.shape == vol.shape
    np.testing.assert_allclose(got.index_to_lps, vol.index_to_lps, atol=1e-6)
    np.testing.assert_allclose(got.array, vol.array, atol=1e-4)
    assert any("missing slices" in w and "IM_0001_00005" not in w for w in got.warnings)


def test_uneven_spacing_resampled_at_true_positions(tmp_path: Path) -> None:
    # Slices at z = 0, 1, 2.5, 4, 7 mm; value = 10·z HU: exact under linear interpolation.
    z = np.array([0.0, 1.0, 2.5, 4.0, 7.0])
    folder = tmp_path / "u"
    vol = make_volume(shape_kji=(5, 4, 4), spacing_mm=(1.0, 1.0, 1.0), origin_lps=(0, 0, 0))
    files = write_dicom_series(vol, folder)
    for f, zk in zip(files, z):
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [0, 0, float(zk)]
        ds.PixelData = np.full((4, 4), round(10 * zk), np.int16).tobytes()
        ds.save_as(f)
    got = read_dicom_series(folder)
    assert got.shape_ijk == (4, 4, 8)
    np.testing.assert_allclose(got.spacing_mm, [1, 1, 1], atol=1e-9)
    np.testing.assert_allclose(got.array[:, 0, 0], 10 * np.arange(8), atol=1e-4)
    assert any("uneven slice spacing: steps 1.000–3.000 mm" in w for w in got.warnings)


def _tilted_series(folder: Path, tilt_deg: float, flip_slices: bool = False) -> tuple[float, ...]:
    """A GE-style tilted series: IOP tilted about x, IPP stepping along +z (table).

    Pixel value = a·x + b·y + c·z + d of the pixel's true world position, so the
    correctly resampled volume must equal the same linear function at its voxel
    centres (trilinear interpolation of a linear field is exact).
    """
    coef = (0.5, -0.8, 1.3, 100.0)
    t = np.radians(tilt_deg)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(t), -np.sin(t)])
    rows, cols, n = 40, 36, 12
    base = make_volume(shape_kji=(n, rows, cols), spacing_mm=(2.0, 2.0, 3.0))
    files = write_dicom_series(base, folder)
    order = range(n)[::-1] if flip_slices else range(n)
    for f, k in zip(files, order):
        ipp = np.array([-30.0, -40.0, 5.0 + 3.0 * k])
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        world = ipp + c[..., None] * 2.0 * row + r[..., None] * 2.0 * col
        value = world @ np.array(coef[:3]) + coef[3]
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [float(v) for v in ipp]
        ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
        ds.GantryDetectorTilt = tilt_deg
        ds.RescaleSlope = "0.01"
        ds.PixelData = np.round(value / 0.01).astype(np.int16).tobytes()
        ds.save_as(f)
    return coef


@pytest.mark.parametrize("flip", [False, True])
def test_gantry_tilt_resampled_in_world_space(tmp_path: Path, flip: bool) -> None:
    coef = _tilted_series(tmp_path / "t", 15.0, flip_slices=flip)
    got = read_dicom_series(tmp_path / "t")
    assert got.is_orthogonal()
    assert any("gantry tilt" in w and "15.00°" in w for w in got.warnings)
    assert got.metadata["gantry_tilt_deg"] == pytest.approx(15.0, abs=0.01)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in got.shape_ijk], indexing="ij"), -1)
    ijk = grid.reshape(-1, 3).astype(float)
    values = got.array.transpose(2, 1, 0).reshape(-1)
    expected = got.index_to_world(ijk) @ np.array(coef[:3]) + coef[3]
    inside = values > got.array.min() + 1e-3  # voxels filled from acquired data
    assert inside.mean() > 0.6
    np.testing.assert_allclose(values[inside], expected[inside], atol=0.02)


def test_localizer_and_other_series_ignored_largest_ct_chosen(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    study = "1.2.826.0.1.3680043.8.498.10"
    big = make_volume(shape_kji=(10, 8, 8))
    small = make_volume(shape_kji=(4, 8, 8), seed=1)
    mr = make_volume(shape_kji=(20, 8, 8), seed=2)
    write_dicom_series(big, folder / "a", study_uid=study, series_number=2,
                       series_uid="1.2.826.0.1.3680043.8.498.12")
    write_dicom_series(small, folder / "b", study_uid=study, series_number=3)
    write_dicom_series(mr, folder / "c", study_uid=study, series_number=4, modality="MR")
    # A scout: one coronal slice inside the big series' folder, flagged LOCALIZER, own series
    scout = make_volume(DIRECTIONS["sagittal"], shape_kji=(1, 8, 8), seed=4)
    sfiles = write_dicom_series(scout, folder / "a", study_uid=study, series_number=1)
    _set(sfiles[0], ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    # A stray coronal slice in the big series itself (same series UID): ignored with a warning.
    stray = write_dicom_series(scout, folder / "d", series_number=9)
    _set(stray[0], SeriesInstanceUID="1.2.826.0.1.3680043.8.498.12", StudyInstanceUID=study)
    infos = list_series(folder)
    assert len(infos) == 4
    by_number = {s.series_number: s for s in infos}
    assert by_number[1].is_localizer
    assert by_number[2].n_frames == 11 and by_number[2].size_ijk == (8, 8, 10)
    assert any("different orientation" in w for w in by_number[2].warnings)
    assert choose_series(infos) is by_number[2]
    got = read_dicom_series(folder)
    assert got.series_uid == "1.2.826.0.1.3680043.8.498.12" and got.modality == "CT"
    np.testing.assert_array_equal(got.array, big.array)
    mr_back = read_dicom_series(folder, series_uid=by_number[4].series_uid)
    assert mr_back.modality == "MR" and mr_back.shape == mr.shape
    with pytest.raises(ImageReadError, match="available series:.*1.2.826.0.1.3680043.8.498.12"):
        read_dicom_series(folder, series_uid="1.2.3.4")


def test_per_slice_rescale_and_padding(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(3, 4, 4))
    files = write_dicom_series(vol, tmp_path / "r")
    _set(files[1], RescaleSlope="2", RescaleIntercept="-1024")
    raw = pydicom.dcmread(files[2]).pixel_array.copy()
    raw[0, 0] = -2000
    ds = pydicom.dcmread(files[2])
    ds.add_new(0x00280120, "SS", -2000)  # PixelPaddingValue
    ds.PixelData = raw.tobytes()
    ds.save_as(files[2])
    got = read_dicom_series(tmp_path / "r")
    assert got.array.dtype == np.float32
    np.testing.assert_allclose(got.array[0], vol.array[0])
    np.testing.assert_allclose(got.array[1], 2.0 * vol.array[1] - 1024)
    assert got.array[2, 0, 0] == -2000
    assert any("PixelPaddingValue" in w for w in got.warnings)


def test_dcmqi_three_slice_ge_ct_matches_simpleitk(shared_data: Path) -> None:
    folder = shared_data / "dcmqi-seg" / "ct-3slice"
    got = read_dicom_series(folder)
    img = sitk_read(folder)
    ref = sitk.GetArrayFromImage(img)
    assert got.shape == ref.shape == (3, 512, 512)
    np.testing.assert_array_equal(got.array, ref)
    for ijk in [(0, 0, 0), (511, 0, 2), (0, 511, 1), (511, 511, 2)]:
        np.testing.assert_allclose(
            got.index_to_world(np.array(ijk, float)), img.TransformIndexToPhysicalPoint(ijk),
            atol=1e-3,
        )
    assert got.metadata["patient_position"] == "FFS"
    assert got.metadata["manufacturer"].upper().startswith("GE")


def test_enhanced_multiframe_ct() -> None:
    path = get_testdata_file("eCT_Supplemental.dcm")
    info = list_series(path)[0]
    assert info.sop_class == "Enhanced CT Image Storage" and info.n_frames == 2
    got = read_dicom_series(path)
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(np.float64)
    assert got.shape == (2, 512, 512)
    # Per-frame positions from PlanePositionSequence, sorted along the normal.
    positions = [
        [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
        for f in ds.PerFrameFunctionalGroupsSequence
    ]
    normal = np.cross([-1.0, 0, 0], [0, 1.0, 0])
    order = np.argsort([np.dot(p, normal) for p in positions])
    for k, f in enumerate(order):
        np.testing.assert_allclose(got.index_to_world([0.0, 0.0, k]), positions[f], atol=1e-4)
        np.testing.assert_array_equal(got.array[k], raw[f] - 1024.0)  # shared rescale
    np.testing.assert_allclose(got.spacing_mm, [0.388672, 0.388672, 10.0], atol=1e-6)


def test_enhanced_mr_without_geometry_is_rejected() -> None:
    path = get_testdata_file("emri_small.dcm")  # 10 frames, no functional groups
    with pytest.raises(ImageReadError, match="emri_small.dcm.*geometry|geometry.*emri_small"):
        read_dicom_series(path)


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("693_J2KR.dcm", "693_UNCR.dcm"),
    ],
)
def test_compressed_transfer_syntaxes_decode_like_uncompressed(
    compressed: str, reference: str
) -> None:
    ref_ds = pydicom.dcmread(get_testdata_file(reference))
    if "PerFrameFunctionalGroupsSequence" not in ref_ds and int(ref_ds.get("NumberOfFrames", 1)) > 1:
        # No geometry: both must be refused the same way.
        for name in (compressed, reference):
            with pytest.raises(ImageReadError, match="geometry"):
                read_dicom_series(get_testdata_file(name))
        return
    got = read_dicom_series(get_testdata_file(compressed))
    ref = read_dicom_series(get_testdata_file(reference))
    np.testing.assert_array_equal(got.array, ref.array)
    np.testing.assert_allclose(got.index_to_lps, ref.index_to_lps)
    assert got.modality == ref_ds.Modality


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEG-LL.dcm", "JPEG2000.dcm"])
def test_jpeg_family_decodes_when_given_ct_geometry(tmp_path: Path, name: str) -> None:
    """Real JPEG (extended/lossless) and JPEG 2000 bitstreams, re-labelled as a CT slice.

    pydicom's grey-scale JPEG test objects are NM images (not planning volumes);
    we copy them, give them a CT SOP class and slice geometry, and check the
    decoded values against pydicom's own decoding.
    """
    ds = pydicom.dcmread(get_testdata_file(name))
    expected = ds.pixel_array.astype(np.float64)
    if expected.ndim == 3:
        expected = expected[0]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    if "NumberOfFrames" in ds:
        del ds.NumberOfFrames
    ds.save_as(tmp_path / "x.dcm")
    got = read_dicom_series(tmp_path / "x.dcm")
    slope = float(ds.get("RescaleSlope", 1.0))
    intercept = float(ds.get("RescaleIntercept", 0.0))
    np.testing.assert_allclose(got.array[0], expected * slope + intercept)
    assert ds.file_meta.TransferSyntaxUID.is_compressed


def test_mr_multi_slice_classic(tmp_path: Path) -> None:
    vol = make_volume(rotation("y", 90) @ rotation("x", 10), shape_kji=(5, 6, 7))
    write_dicom_series(vol, tmp_path / "mr", modality="MR", series_description="T1 sag")
    info = list_series(tmp_path / "mr")[0]
    assert info.modality == "MR" and info.description == "T1 sag"
    got = read_dicom_series(tmp_path / "mr")
    img = sitk_read(tmp_path / "mr")
    np.testing.assert_array_equal(got.array, sitk.GetArrayFromImage(img))
    np.testing.assert_allclose(
        got.index_to_world([6.0, 5.0, 4.0]), img.TransformIndexToPhysicalPoint((6, 5, 4)), atol=1e-3
    )


@pytest.mark.parametrize("signed", [False, True])
def test_12_bit_stored_values_match_pydicom(tmp_path: Path, signed: bool) -> None:
    """BitsStored 12 in 16 allocated (common on CT): upper bits masked / sign-extended."""
    vol = make_volume(shape_kji=(3, 6, 6))
    files = write_dicom_series(vol, tmp_path / "s")
    rng = np.random.default_rng(5)
    expected = []
    for f in files:
        ds = pydicom.dcmread(f)
        if signed:
            values = rng.integers(-2048, 2048, (6, 6)).astype(np.int16)
            stored = values  # two's complement: upper 4 bits = sign extension
        else:
            values = rng.integers(0, 4096, (6, 6)).astype(np.uint16)
            stored = values | np.uint16(0xA000)  # junk above the high bit
            ds.PixelRepresentation = 0
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PixelData = stored.tobytes()
        ds.save_as(f)
        expected.append(values.astype(np.float64) if not signed else values)
    got = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(got.array, np.stack(expected))
    for f, exp in zip(files, expected):
        np.testing.assert_array_equal(pydicom.dcmread(f).pixel_array, exp)


def test_dicomdir_is_skipped_and_progress_reaches_one(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(4, 6, 6))
    write_dicom_series(vol, tmp_path / "s")
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "s" / "DICOMDIR")
    calls: list[tuple[float, str]] = []
    got = read_dicom_series(tmp_path / "s", progress=lambda f, m: calls.append((f, m)))
    np.testing.assert_array_equal(got.array, vol.array)
    assert any("DICOMDIR" in w and "SeriesInstanceUID" in w for w in got.warnings)
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"reading DICOM headers", "reading pixel data"} <= {m for _, m in calls}
    assert len(list_series(tmp_path / "s")) == 1


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_legacy_converted_enhanced_matches_classic_series(tmp_path: Path, modality: str) -> None:
    """highdicom converts our classic series to one multi-frame file: same volume.

    One slice gets its own RescaleSlope/Intercept, so highdicom stores the Pixel
    Value Transformation per frame while orientation and pixel measures are shared.
    """
    import highdicom as hd

    vol = make_volume(DIRECTIONS["oblique"], shape_kji=(5, 8, 9))
    files = write_dicom_series(vol, tmp_path / "classic", modality=modality)
    _set(files[2], RescaleSlope="2", RescaleIntercept="-100")
    classic = read_dicom_series(tmp_path / "classic")
    datasets = [pydicom.dcmread(f) for f in files[::-1]]  # frames stored head→feet
    converter = {
        "CT": hd.legacy.LegacyConvertedEnhancedCTImage,
        "MR": hd.legacy.LegacyConvertedEnhancedMRImage,
    }[modality]
    enhanced = converter(
        legacy_datasets=datasets, series_instance_uid=hd.UID(), series_number=9,
        sop_instance_uid=hd.UID(), instance_number=1,
    )
    enhanced.save_as(tmp_path / "enhanced.dcm")
    ds = pydicom.dcmread(tmp_path / "enhanced.dcm")
    assert "PixelValueTransformationSequence" in ds.PerFrameFunctionalGroupsSequence[0]
    assert "PlaneOrientationSequence" in ds.SharedFunctionalGroupsSequence[0]
    got = read_dicom_series(tmp_path / "enhanced.dcm")
    assert got.modality == modality
    np.testing.assert_array_equal(got.array, classic.array)
    np.testing.assert_allclose(got.index_to_lps, classic.index_to_lps, atol=1e-4)
    np.testing.assert_allclose(got.array[2], 2.0 * vol.array[2] - 100)


def test_padding_value_above_darkest_voxel_becomes_the_minimum(tmp_path: Path) -> None:
    arr = np.zeros((3, 4, 4), np.int16)
    arr[0, 1, 1] = -900  # darkest real voxel, in a slice without padding
    arr[2, :2, :] = -500  # padded region of slice 2
    vol = ImageVolume(arr, affine_from_geometry([0, 0, 0], [1, 1, 1], np.eye(3)))
    files = write_dicom_series(vol, tmp_path / "p")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.add_new(0x00280120, "SS", -500)
        ds.save_as(f)
    got = read_dicom_series(tmp_path / "p")
    assert np.all(got.array[2, :2, :] == -900) and got.array.min() == -900
    assert np.all(got.array[2, 2:, :] == 0) and got.array[0, 1, 1] == -900
    assert any("lies above the darkest real voxel" in w for w in got.warnings)


def test_single_file_reads_its_whole_series_from_the_folder(tmp_path: Path) -> None:
    """Like dcm2niix: one slice given, its series (same folder, same UID) read."""
    folder = tmp_path / "mixed"
    vol = make_volume(DIRECTIONS["oblique"], shape_kji=(6, 8, 9))
    files = write_dicom_series(vol, folder, series_number=1)
    write_dicom_series(make_volume(shape_kji=(9, 8, 9), seed=2), folder, series_number=2)
    whole = read_dicom_series(folder, series_uid=pydicom.dcmread(files[0]).SeriesInstanceUID)
    (folder / "sub").mkdir()  # sub-folders are not searched
    shutil.copy(files[0], folder / "sub" / "other.dcm")
    _set(folder / "sub" / "other.dcm", SOPInstanceUID="1.2.826.0.1.3680043.8.498.5")
    shutil.copy(files[1], folder / "copy_of_slice_2.dcm")  # same SOPInstanceUID: a copy
    got = read_dicom_series(files[3])
    np.testing.assert_array_equal(got.array, whole.array)
    np.testing.assert_allclose(got.index_to_lps, whole.index_to_lps, atol=1e-6)
    assert any("read the whole series" in w and "6 files" in w for w in got.warnings)
    assert any("1 copy(ies)" in w for w in got.warnings)
    assert got.metadata["series_folder"] == str(folder)
    infos = list_series(files[3])
    assert len(infos) == 1 and infos[0].n_frames == 6
    alone = read_dicom_series(files[3], single_file=True)
    assert alone.shape == (1, 8, 9)
    np.testing.assert_array_equal(alone.array[0], vol.array[3])
    assert list_series(files[3], single_file=True)[0].n_frames == 1


def test_single_file_whose_folder_mates_do_not_form_a_volume_is_read_alone(
    tmp_path: Path,
) -> None:
    vol = make_volume(shape_kji=(3, 6, 6))
    files = write_dicom_series(vol, tmp_path / "s")
    for f in files[1:]:  # other images at the same position (e.g. other echoes)
        _set(f, ImagePositionPatient=pydicom.dcmread(files[0]).ImagePositionPatient)
    got = read_dicom_series(files[0])
    assert got.shape == (1, 6, 6)
    np.testing.assert_array_equal(got.array[0], vol.array[0])
    assert any("do not form one volume" in w and "duplicated" in w for w in got.warnings)


def test_single_multiframe_file_is_read_alone(tmp_path: Path) -> None:
    import highdicom as hd

    vol = make_volume(shape_kji=(4, 6, 7))
    files = write_dicom_series(vol, tmp_path / "classic")
    uid = hd.UID()
    (tmp_path / "enh").mkdir()
    for n, part in enumerate((files[:2], files[2:])):
        hd.legacy.LegacyConvertedEnhancedCTImage(
            legacy_datasets=[pydicom.dcmread(f) for f in part], series_instance_uid=uid,
            series_number=3, sop_instance_uid=hd.UID(), instance_number=n + 1,
        ).save_as(tmp_path / "enh" / f"part{n}.dcm")
    got = read_dicom_series(tmp_path / "enh" / "part1.dcm")
    assert got.shape == (2, 6, 7)
    np.testing.assert_array_equal(got.array, vol.array[2:])
    assert not any("whole series" in w for w in got.warnings)
    assert read_dicom_series(tmp_path / "enh").shape == (4, 6, 7)  # the folder: all frames


def test_siemens_mosaic_is_refused_not_read_as_one_slice(tmp_path: Path) -> None:
    """A MOSAIC frame tiles many slices; reading it as one slice misplaces every tile."""
    files = write_dicom_series(make_volume(shape_kji=(2, 8, 8)), tmp_path / "syn",
                               modality="MR")
    for f in files:
        _set(f, ImageType=["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"])
    with pytest.raises(ImageReadError, match="MOSAIC.*dcm2niix"):
        read_dicom_series(tmp_path / "syn")
    assert "MOSAIC" in list_series(tmp_path / "syn")[0].problem
    import nibabel

    real = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"
    (tmp_path / "real").mkdir()
    for name in ("0.dcm", "1.dcm"):  # real Siemens DWI mosaics shipped with nibabel
        shutil.copy(real / name, tmp_path / "real" / name)
    with pytest.raises(ImageReadError, match="MOSAIC"):
        read_dicom_series(tmp_path / "real")
