"""RTSTRUCT rasterisation, checked against known masks written by a third-party writer (rt-utils)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from skimage.measure import points_in_poly

from ir_planner.core.catalog import Category
from ir_planner.core.errors import GeometryError, SegmentationReadError
from ir_planner.core.volume import ImageVolume
from ir_planner.io.rtstruct import rasterise_polygons
from ir_planner.io.segmentation import load_labels
from ir_planner.io.sitk_convert import from_sitk

rt_utils = pytest.importorskip("rt_utils", reason="rt-utils is a test dependency")

# rt-utils 1.2.7 still uses pydicom 2 attributes when saving
pytestmark = pytest.mark.filterwarnings("ignore:'FileDataset.is_:DeprecationWarning")


@pytest.fixture(scope="module")
def ct_dir(shared_data: Path) -> Path:
    return shared_data / "dcmqi-seg" / "ct-3slice"


@pytest.fixture(scope="module")
def ct(ct_dir: Path) -> ImageVolume:
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(ct_dir))
    reader.SetFileNames(files)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    return from_sitk(reader.Execute(), modality="CT",
                     metadata={"frame_of_reference_uid": str(first.FrameOfReferenceUID)})


@pytest.fixture(scope="module")
def known(shared_data: Path, ct: ImageVolume) -> dict[str, np.ndarray]:
    """Known masks [k, j, i] on the CT grid: the real liver label map, a box, a ring."""
    liver = sitk.GetArrayFromImage(
        sitk.ReadImage(str(shared_data / "dcmqi-seg" / "liver_seg.nrrd"))) == 1
    box = np.zeros(ct.shape, bool)
    box[1, 100:200, 150:300] = True
    ring = np.zeros(ct.shape, bool)
    ring[:, 300:400, 300:400] = True
    ring[:, 330:370, 320:360] = False  # a hole → a second, inner contour
    return {"Liver": liver, "box": box, "ring lesion": ring}


@pytest.fixture(scope="module")
def rtstruct(tmp_path_factory: pytest.TempPathFactory, ct_dir: Path, ct: ImageVolume,
             known: dict[str, np.ndarray]) -> Path:
    """An RTSTRUCT written by rt-utils from the known masks."""
    rt = rt_utils.RTStructBuilder.create_new(dicom_series_path=str(ct_dir))
    # rt-utils wants (rows, columns, slices) in its own slice order: map by position
    order = [int(round(ct.world_to_index([float(v) for v in s.ImagePositionPatient])[2]))
             for s in rt.series_data]
    for name, mask in known.items():
        rt.add_roi(mask=np.transpose(mask[order], (1, 2, 0)), name=name)
    out = tmp_path_factory.mktemp("rt") / "rtstruct.dcm"
    rt.save(str(out))
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_rtstruct_matches_the_known_masks(rtstruct: Path, ct: ImageVolume,
                                          known: dict[str, np.ndarray]) -> None:
    lm = load_labels(rtstruct, image=ct)
    assert lm.grid is ct and lm.names == list(known)
    assert lm.warnings == []
    assert _dice(lm.mask("Liver"), known["Liver"]) >= 0.95
    # contours through boundary voxel centres give back the mask exactly
    np.testing.assert_array_equal(lm.mask("Liver"), known["Liver"])
    np.testing.assert_array_equal(lm.mask("box"), known["box"])  # axis-aligned polygon: exact
    np.testing.assert_array_equal(lm.mask("ring lesion"), known["ring lesion"])  # even-odd hole
    assert lm.get("Liver").category is Category.SOLID_ORGAN
    assert lm.get("ring lesion").category is Category.TARGET
    assert lm.volume_ml("box") == pytest.approx(100 * 150 * ct.voxel_volume_ml)


def _edited(src: Path, dst: Path, shift_lps: tuple[float, float, float], roi: int = 1) -> Path:
    ds = pydicom.dcmread(src)
    for contour in ds.ROIContourSequence[roi].ContourSequence:
        pts = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3) + shift_lps
        contour.ContourData = [f"{v:.6f}" for v in pts.ravel()]
    ds.save_as(dst)
    return dst


def test_contours_between_slices_go_to_the_nearest_slice(
    rtstruct: Path, ct: ImageVolume, known: dict[str, np.ndarray], tmp_path: Path
) -> None:
    # the slice step is 1 mm; 0.4 mm off the plane → nearest slice, with a warning
    edited = _edited(rtstruct, tmp_path / "between.dcm", (0.0, 0.0, 0.4))
    lm = load_labels(edited, image=ct)
    assert any("between image slices" in w for w in lm.warnings)
    np.testing.assert_array_equal(lm.mask("box"), known["box"])


def test_contours_off_the_grid_warn(
    rtstruct: Path, ct: ImageVolume, known: dict[str, np.ndarray], tmp_path: Path
) -> None:
    shift = 250 * ct.spacing_mm[0]  # box columns 150-299 → 400-549: partly outside 512
    edited = _edited(rtstruct, tmp_path / "off.dcm", (shift, 0.0, 0.0))
    lm = load_labels(edited, image=ct)
    assert any("outside the image grid" in w for w in lm.warnings)
    expected = np.zeros(ct.shape, bool)
    expected[1, 100:200, 400:512] = True
    np.testing.assert_array_equal(lm.mask("box"), expected)
    far = _edited(rtstruct, tmp_path / "far.dcm", (0.0, 0.0, 50.0))
    lm_far = load_labels(far, image=ct)
    assert "box" not in lm_far.names
    assert any("dropped: box" in w for w in lm_far.warnings)


def test_rtstruct_needs_an_image_and_the_same_frame_of_reference(
    rtstruct: Path, ct: ImageVolume
) -> None:
    with pytest.raises(SegmentationReadError, match=r"rtstruct.dcm.*give the image"):
        load_labels(rtstruct)
    other = ct.with_array(ct.array, metadata={"frame_of_reference_uid": "1.2.3.4"})
    with pytest.raises(GeometryError, match="frame of reference"):
        load_labels(rtstruct, image=other)


def test_rasterise_axis_aligned_polygon_on_voxel_edges_is_exact() -> None:
    # vertices on voxel boundaries (half-integers): exactly the voxels inside
    square = np.array([[2.5, 3.5], [7.5, 3.5], [7.5, 9.5], [2.5, 9.5]])
    got = rasterise_polygons([square], (12, 10))
    expected = np.zeros((12, 10), bool)
    expected[4:10, 3:8] = True
    np.testing.assert_array_equal(got, expected)
    # a hole (even-odd) and reversed orientation change nothing but the hole
    hole = np.array([[4.5, 5.5], [4.5, 7.5], [5.5, 7.5], [5.5, 5.5]])
    expected[6:8, 5] = False
    np.testing.assert_array_equal(rasterise_polygons([square[::-1], hole], (12, 10)), expected)


def test_rasterise_matches_brute_force_point_in_polygon() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(3, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(5, 20, n)
        poly = np.stack([25 + radii * np.cos(angles), 22 + radii * np.sin(angles)], 1) + 0.123
        got = rasterise_polygons([poly], (45, 50))
        jj, ii = np.mgrid[0:45, 0:50]
        centres = np.stack([ii.ravel(), jj.ravel()], 1).astype(float)
        expected = points_in_poly(centres, poly).reshape(45, 50)
        np.testing.assert_array_equal(got, expected)


def test_rasterise_single_points_and_lines() -> None:
    got = rasterise_polygons([np.array([[3.0, 2.0]]), np.array([[0.0, 0.0], [0.0, 3.0]])], (5, 5))
    expected = np.zeros((5, 5), bool)
    expected[2, 3] = True
    expected[0:4, 0] = True
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("bad", ["NaN", "inf", "1e12"])
def test_contour_data_that_is_not_a_position_is_refused(
    rtstruct: Path, ct: ImageVolume, tmp_path: Path, bad: str
) -> None:
    """NaN/Inf/1e12 mm ContourData: one clear error naming the file (was a traceback)."""
    ds = pydicom.dcmread(rtstruct)
    contour = ds.ROIContourSequence[1].ContourSequence[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about NaN in a DS value
        contour.ContourData = [bad, *[str(v) for v in contour.ContourData][1:]]
        ds.save_as(tmp_path / "rt.dcm")
    with pytest.raises(SegmentationReadError, match=r"rt\.dcm.*ContourData"):
        load_labels(tmp_path / "rt.dcm", image=ct)
