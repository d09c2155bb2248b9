"""DICOM SEG: the dcmqi SEGs agree voxel for voxel with their NRRD label maps."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ir_planner.core.catalog import Category
from ir_planner.core.errors import GeometryError, SegmentationReadError
from ir_planner.core.volume import ImageVolume
from ir_planner.io.dicom_seg import cielab_to_rgb, read_dicom_seg
from ir_planner.io.segmentation import load_labels
from ir_planner.io.sitk_convert import from_sitk


@pytest.fixture(scope="module")
def seg_dir(shared_data: Path) -> Path:
    return shared_data / "dcmqi-seg"


@pytest.fixture(scope="module")
def ct(seg_dir: Path) -> ImageVolume:
    """The 3-slice CT read with SimpleITK (independent of our DICOM reader)."""
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(seg_dir / "ct-3slice"))
    reader.SetFileNames(files)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    return from_sitk(reader.Execute(), modality="CT", series_uid=str(first.SeriesInstanceUID),
                     metadata={"frame_of_reference_uid": str(first.FrameOfReferenceUID)})


def _nrrd(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_liver_seg_matches_nrrd_on_the_ct_grid(seg_dir: Path, ct: ImageVolume) -> None:
    lm = load_labels(seg_dir / "liver.dcm", image=ct)
    assert lm.grid is ct and lm.names == ["Liver"]
    liver = lm.get("Liver")
    assert liver.category is Category.SOLID_ORGAN
    # RecommendedDisplayCIELabValue [41661, 41167, 40792] is Slicer's liver colour (221, 130, 101)
    assert np.allclose(np.array(liver.color) * 255, [221, 130, 101], atol=1.0)
    ref = _nrrd(seg_dir / "liver_seg.nrrd") == 1
    assert ref.sum() == 107098
    np.testing.assert_array_equal(lm.mask("Liver"), ref)
    assert not any("frame of reference" in w for w in lm.warnings)


def test_liver_seg_without_image_builds_its_own_grid(seg_dir: Path, ct: ImageVolume) -> None:
    lm = load_labels(seg_dir / "liver.dcm")
    np.testing.assert_allclose(lm.grid.index_to_lps, ct.index_to_lps, atol=1e-4)
    np.testing.assert_array_equal(lm.mask("Liver"), _nrrd(seg_dir / "liver_seg.nrrd") == 1)


def test_partial_overlaps_keep_every_segment(seg_dir: Path, ct: ImageVolume) -> None:
    lm = load_labels(seg_dir / "partial_overlaps.dcm", image=ct)
    ds = pydicom.dcmread(seg_dir / "partial_overlaps.dcm", stop_before_pixels=True)
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    assert lm.names == [labels[n] for n in sorted(labels)]
    # partial_overlaps-N.nrrd hold non-overlapping groups, voxel value = segment number
    masks: dict[int, np.ndarray] = {}
    for n in (1, 2, 3):
        arr = _nrrd(seg_dir / f"partial_overlaps-{n}.nrrd")
        for value in np.unique(arr)[1:]:
            masks[int(value)] = arr == value
    assert sorted(masks) == sorted(labels)
    for number, name in labels.items():
        np.testing.assert_array_equal(lm.mask(name), masks[number], err_msg=name)
    overlap = masks[1] & masks[2]
    assert overlap.sum() > 0
    assert np.all(lm.mask(labels[1])[overlap]) and np.all(lm.mask(labels[2])[overlap])
    assert len(lm.layers) >= 2
    # category hints from SegmentedPropertyType when the label is not a structure name
    assert lm.get("ORANGE").category is Category.VESSEL  # type Artery
    assert lm.get("DARK_BLUE").category is Category.VESSEL  # type Vein
    assert lm.get("GREEN").category is Category.OTHER  # type Tissue


def test_frame_of_reference_mismatch_is_a_clear_error(seg_dir: Path, ct: ImageVolume) -> None:
    other = ct.with_array(ct.array, metadata={"frame_of_reference_uid": "1.2.3.4"})
    with pytest.raises(GeometryError, match="frame of reference"):
        load_labels(seg_dir / "liver.dcm", image=other)


def test_image_without_frame_of_reference_warns(seg_dir: Path, ct: ImageVolume) -> None:
    bare = ct.with_array(ct.array, metadata={})
    lm = load_labels(seg_dir / "liver.dcm", image=bare)
    assert any("no frame of reference" in w for w in lm.warnings)


def test_seg_onto_a_coarser_image_is_resampled(seg_dir: Path, ct: ImageVolume) -> None:
    coarse_affine = ct.index_to_lps.copy()
    coarse_affine[:3, :2] *= 2  # 1.62 mm pixels
    coarse = ImageVolume(np.zeros((3, 256, 256), np.int16), coarse_affine,
                         metadata=dict(ct.metadata))
    lm = load_labels(seg_dir / "liver.dcm", image=coarse)
    assert lm.grid is coarse
    assert any("resampled" in w for w in lm.warnings)
    fine = _nrrd(seg_dir / "liver_seg.nrrd") == 1
    np.testing.assert_array_equal(lm.mask("Liver"), fine[:, ::2, ::2])


def test_cielab_conversion() -> None:
    assert cielab_to_rgb([0, 32896, 32896]) == pytest.approx((0, 0, 0), abs=1e-3)
    assert cielab_to_rgb([65535, 32896, 32896]) == pytest.approx((1, 1, 1), abs=2e-3)
    red = cielab_to_rgb([int(53.24 / 100 * 65535), int((80.09 + 128) / 255 * 65535),
                         int((67.20 + 128) / 255 * 65535)])
    assert red == pytest.approx((1, 0, 0), abs=0.01)


def test_non_seg_dicom_is_rejected(shared_data: Path, tmp_path: Path) -> None:
    ct_file = shared_data / "dcmqi-seg" / "ct-3slice" / "01.dcm"
    with pytest.raises(SegmentationReadError, match=r"01.dcm.*not a DICOM SEG"):
        read_dicom_seg(ct_file)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes((shared_data / "dcmqi-seg" / "liver.dcm").read_bytes()[:5000])
    with pytest.raises(SegmentationReadError, match="broken.dcm"):
        load_labels(broken)


@pytest.fixture(scope="module")
def fractional_seg(tmp_path_factory: pytest.TempPathFactory, seg_dir: Path,
                   ct: ImageVolume) -> tuple[Path, np.ndarray, np.ndarray]:
    """A fractional SEG with two overlapping segments, written by highdicom."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = sorted((pydicom.dcmread(f) for f in (seg_dir / "ct-3slice").glob("*.dcm")),
                     key=lambda d: float(d.ImagePositionPatient[2]))
    for d in sources:  # these GE files carry an empty SpecificCharacterSet
        if not d.get("SpecificCharacterSet"):
            d.SpecificCharacterSet = "ISO_IR 100"
    order = [int(round(ct.world_to_index([float(v) for v in d.ImagePositionPatient])[2]))
             for d in sources]
    fraction = np.zeros(ct.shape + (2,), np.float32)
    fraction[0, 200:260, 220:300, 0] = 0.8  # kept (≥ 0.5)
    fraction[0, 200:260, 300:320, 0] = 0.3  # dropped (< 0.5)
    fraction[0, 240:280, 250:280, 1] = 1.0  # overlaps segment 1
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n + 1, segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=prop,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, (label, prop) in enumerate([("Region A", codes.SCT.Neoplasm),
                                           ("Region B", codes.SCT.Artery)])
    ]
    with warnings.catch_warnings():  # the source files' one-component patient name
        warnings.simplefilter("ignore", UserWarning)
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=fraction[order],
            segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=99,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test",
            manufacturer_model_name="test", software_versions="1", device_serial_number="1",
            max_fractional_value=255,
        )
    out = tmp_path_factory.mktemp("seg") / "fractional.dcm"
    seg.save_as(out)
    return out, fraction[..., 0] >= 0.5, fraction[..., 1] >= 0.5


def test_fractional_seg_with_overlaps(fractional_seg: tuple[Path, np.ndarray, np.ndarray],
                                      ct: ImageVolume) -> None:
    path, a, b = fractional_seg
    lm = load_labels(path, image=ct)
    assert lm.names == ["Region A", "Region B"]
    np.testing.assert_array_equal(lm.mask("Region A"), a)
    np.testing.assert_array_equal(lm.mask("Region B"), b)
    assert np.count_nonzero(a & b) > 0 and len(lm.layers) == 2
    assert any("fraction ≥ 0.5" in w for w in lm.warnings)
    # names unknown to the catalog: category from the property type code
    assert lm.get("Region A").category is Category.TARGET  # Neoplasm
    assert lm.get("Region B").category is Category.VESSEL  # Artery
    alone = load_labels(path)  # only slice 0 has frames: a one-slice grid of its own
    assert alone.grid.shape == (1, 512, 512)
    np.testing.assert_array_equal(alone.mask("Region A")[0], a[0])


def _shifted_seg(src: Path, dst: Path, dz_mm: float) -> Path:
    ds = pydicom.dcmread(src)
    for item in ds.PerFrameFunctionalGroupsSequence:
        pos = item.PlanePositionSequence[0]
        x, y, z = (float(v) for v in pos.ImagePositionPatient)
        pos.ImagePositionPatient = [f"{x:.6f}", f"{y:.6f}", f"{z + dz_mm:.6f}"]
    ds.save_as(dst)
    return dst


def test_seg_frames_between_slices_go_to_the_nearest(seg_dir: Path, ct: ImageVolume,
                                                     tmp_path: Path) -> None:
    shifted = _shifted_seg(seg_dir / "liver.dcm", tmp_path / "between.dcm", 0.4)  # slices 1 mm
    lm = load_labels(shifted, image=ct)
    assert any("between image slices" in w for w in lm.warnings)
    np.testing.assert_array_equal(lm.mask("Liver"), _nrrd(seg_dir / "liver_seg.nrrd") == 1)


def test_seg_outside_the_image(seg_dir: Path, ct: ImageVolume, tmp_path: Path) -> None:
    one_up = _shifted_seg(seg_dir / "liver.dcm", tmp_path / "up.dcm", 1.0)
    lm = load_labels(one_up, image=ct)  # top frame falls off the 3-slice grid
    assert any("outside the image grid" in w for w in lm.warnings)
    ref = _nrrd(seg_dir / "liver_seg.nrrd") == 1
    np.testing.assert_array_equal(lm.mask("Liver")[1:], ref[:2])
    assert not lm.mask("Liver")[0].any()
    far = _shifted_seg(seg_dir / "liver.dcm", tmp_path / "far.dcm", 50.0)
    with pytest.raises(GeometryError, match="far.dcm.*none of the SEG"):
        load_labels(far, image=ct)
