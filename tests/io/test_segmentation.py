"""Label-map files, names tables, mask folders, save/load round trip, resampling, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from ir_planner.core.catalog import Category
from ir_planner.core.errors import GeometryError, InputError, SegmentationReadError
from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.io.seg_common import resample_labels
from ir_planner.io.segmentation import load_labels, save_labels
from ir_planner.io.sitk_convert import from_sitk, to_sitk

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def masks_dir(shared_data: Path) -> Path:
    return shared_data / "totalseg-ct" / "masks"


@pytest.fixture(scope="module")
def folder_map(masks_dir: Path) -> LabelMap:
    return load_labels(masks_dir)


@pytest.fixture(scope="module")
def ct(shared_data: Path) -> ImageVolume:
    return from_sitk(sitk.ReadImage(str(shared_data / "totalseg-ct" / "example_ct.nii.gz")))


def _nib_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Mask as [k, j, i] and the LPS affine, read independently with nibabel."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    return np.transpose(data != 0, (2, 1, 0)), RAS_TO_LPS @ img.affine


# -- mask folder -----------------------------------------------------------------------------


def test_mask_folder_names_categories_and_empty_masks(masks_dir: Path, folder_map: LabelMap) -> None:
    files = sorted(masks_dir.glob("*.nii.gz"))
    nonempty = [f.name[:-7] for f in files if np.any(np.asarray(nib.load(str(f)).dataobj))]
    assert len(nonempty) == 62
    assert sorted(folder_map.names) == sorted(nonempty)
    dropped = next(w for w in folder_map.warnings if "empty mask" in w)
    assert f"{len(files) - 62} empty mask(s) dropped" in dropped and "rib_left_1" in dropped
    expected = {
        "liver": Category.SOLID_ORGAN, "aorta": Category.VESSEL, "rib_left_7": Category.BONE,
        "colon": Category.BOWEL, "lung_lower_lobe_left": Category.LUNG,
        "inferior_vena_cava": Category.VESSEL, "portal_vein_and_splenic_vein": Category.VESSEL,
        "vertebrae_L1": Category.BONE, "iliopsoas_left": Category.MUSCLE,
        "gallbladder": Category.BOWEL, "kidney_right": Category.SOLID_ORGAN,
    }
    for name, category in expected.items():
        s = folder_map.get(name)
        assert s.category is category, name
    assert folder_map.get("aorta").forbidden and folder_map.get("aorta").margin_mm == 3.0
    assert not folder_map.get("liver").forbidden
    assert all(s.category is not Category.OTHER for s in folder_map.structures)
    # overlaps (lung vs its lobes, lung vessels) need more than one layer, but few
    assert 2 <= len(folder_map.layers) <= 4


@pytest.mark.parametrize(
    "name", ["liver", "aorta", "rib_left_7", "colon", "lung_lower_lobe_left", "vertebrae_L1",
             "lung", "lung_vessels"],
)
def test_mask_folder_voxels_and_volumes_match_nibabel(
    masks_dir: Path, folder_map: LabelMap, name: str
) -> None:
    mask, affine_lps = _nib_mask(masks_dir / f"{name}.nii.gz")
    np.testing.assert_array_equal(folder_map.mask(name), mask)
    np.testing.assert_allclose(folder_map.grid.index_to_lps, affine_lps, atol=1e-4)
    voxel_ml = abs(np.linalg.det(affine_lps[:3, :3])) / 1000.0
    assert voxel_ml == pytest.approx(0.027)
    assert folder_map.volume_ml(name) == pytest.approx(mask.sum() * voxel_ml, rel=1e-9)


def test_mask_folder_anatomy_lands_on_the_right_side(folder_map: LabelMap) -> None:
    def centroid_lps(name: str) -> np.ndarray:
        k, j, i = np.nonzero(folder_map.mask(name))
        return folder_map.grid.index_to_world(np.stack([i, j, k], 1).mean(0))

    # LPS: +x = patient's left, +y = posterior, +z = head
    assert centroid_lps("liver")[0] < centroid_lps("spleen")[0]
    assert centroid_lps("kidney_right")[0] < centroid_lps("kidney_left")[0]
    assert centroid_lps("aorta")[1] < centroid_lps("vertebrae_L1")[1]  # aorta anterior to spine
    assert centroid_lps("liver")[2] > centroid_lps("urinary_bladder")[2]


def test_mask_folder_mixed_formats(tmp_path: Path, masks_dir: Path, folder_map: LabelMap) -> None:
    """gzip NIfTI (fast path), plain NIfTI uint8 and NRRD (SimpleITK path) in one folder."""
    shutil.copy(masks_dir / "liver.nii.gz", tmp_path / "liver.nii.gz")
    grid = folder_map.grid
    sitk.WriteImage(to_sitk(grid, folder_map.mask("spleen").astype(np.uint8)),
                    str(tmp_path / "spleen.nii"), False)
    sitk.WriteImage(to_sitk(grid, folder_map.mask("aorta").astype(np.uint8)),
                    str(tmp_path / "aorta.nrrd"), True)
    lm = load_labels(tmp_path)
    assert sorted(lm.names) == ["aorta", "liver", "spleen"]
    for name in lm.names:
        np.testing.assert_array_equal(lm.mask(name), folder_map.mask(name))


def test_mask_folder_bad_inputs(tmp_path: Path, masks_dir: Path) -> None:
    with pytest.raises(SegmentationReadError, match="no mask files"):
        load_labels(tmp_path)
    (tmp_path / "liver.nii.gz").write_bytes(b"not a nifti file at all")
    with pytest.raises(SegmentationReadError, match="liver.nii.gz"):
        load_labels(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(masks_dir / "aorta.nii.gz", other / "aorta.nii.gz")
    small = sitk.Image([10, 10, 10], sitk.sitkUInt8)
    small[5, 5, 5] = 1
    sitk.WriteImage(small, str(other / "zz_small.nii.gz"))
    with pytest.raises(SegmentationReadError, match="zz_small.nii.gz"):
        load_labels(other)


# -- label-map files and names tables --------------------------------------------------------


def _write(array: np.ndarray, path: Path, like: ImageVolume | None = None) -> Path:
    grid = like or ImageVolume(array, affine_from_geometry([-10, 20, 5], [1.5, 1.5, 2.5], np.eye(3)))
    sitk.WriteImage(to_sitk(grid, array), str(path))
    return path


@pytest.fixture()
def small_map(tmp_path: Path) -> tuple[Path, np.ndarray]:
    arr = np.zeros((6, 7, 8), np.uint8)
    arr[1:3, 1:4, 1:5] = 1
    arr[4, 5, 6] = 2
    arr[0, 0, 0] = 5
    return _write(arr, tmp_path / "seg.nii.gz"), arr


def test_label_file_without_names(small_map: tuple[Path, np.ndarray]) -> None:
    path, arr = small_map
    lm = load_labels(path)
    assert lm.names == ["label_1", "label_2", "label_5"]
    assert lm.voxel_count("label_1") == 24 and lm.voxel_count("label_5") == 1
    assert lm.grid.origin_lps.tolist() == pytest.approx([-10, 20, 5])
    assert lm.volume_ml("label_1") == pytest.approx(24 * 1.5 * 1.5 * 2.5 / 1000)


def test_json_sidecar_plain_mapping(small_map: tuple[Path, np.ndarray]) -> None:
    path, _ = small_map
    path.with_name("seg.labels.json").write_text(
        json.dumps({"1": "Liver", "2": {"name": "Tumor 1", "margin_mm": 10}, "5": "IVC"}))
    lm = load_labels(path)
    assert lm.names == ["Liver", "Tumor 1", "IVC"]
    assert lm.get("Tumor 1").category is Category.TARGET and lm.get("Tumor 1").margin_mm == 10
    assert lm.get("IVC").category is Category.VESSEL and lm.get("IVC").forbidden
    # names= overrides the sidecar; labels not in the table are named label_N with a warning
    lm2 = load_labels(path, names={1: "aorta"})
    assert lm2.names == ["aorta", "label_2", "label_5"]
    assert any("not in names argument" in w for w in lm2.warnings)


def test_names_for_missing_labels_are_skipped_with_a_warning(
        small_map: tuple[Path, np.ndarray]) -> None:
    # a full class table (e.g. TotalSegmentator's) on a partial scan: absent names are
    # skipped with a warning; labels without a name are named label_N and warned about
    path, _ = small_map
    lm = load_labels(path, names={1: "liver", 9: "spleen"})
    assert "spleen" not in lm.names and "liver" in lm.names
    assert {"label_2", "label_5"} <= set(lm.names)
    assert any("no voxels" in w and "skipped" in w for w in lm.warnings)
    assert any("not in" in w and "label_N" in w for w in lm.warnings)


def test_itksnap_label_description(small_map: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = small_map
    table = tmp_path / "labels.txt"
    table.write_text(
        "################################################\n"
        "# ITK-SnAP Label Description File\n"
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL\n"
        "################################################\n"
        '    0     0    0    0        0  0  0    "Clear Label"\n'
        '    1   255    0    0        1  1  1    "liver"\n'
        '    2     0  255    0        1  1  1    "hepatic vein"\n'
        '    3     0    0  255        1  1  1    "Label 3"\n'
        '    5   255  255    0        1  1  1    "rib left 7"\n'
    )
    lm = load_labels(path, names=table)
    assert lm.names == ["liver", "hepatic vein", "rib left 7"]  # unused label 3 skipped
    assert lm.get("liver").color == (1.0, 0.0, 0.0)
    assert lm.get("hepatic vein").category is Category.VESSEL
    assert lm.get("rib left 7").category is Category.BONE


def test_totalsegmentator_classes_json(
    tmp_path: Path, shared_data: Path, folder_map: LabelMap
) -> None:
    classes = shared_data / "totalseg-ct" / "classes.json"
    total = {v: int(k) for k, v in json.loads(classes.read_text())["total"].items()}
    arr = np.zeros(folder_map.grid.shape, np.uint8)
    chosen = ["liver", "spleen", "aorta", "rib_left_7", "colon", "kidney_left"]
    for name in chosen:
        arr[folder_map.mask(name)] = total[name]
    path = _write(arr, tmp_path / "total.nii.gz", like=folder_map.grid)
    lm = load_labels(path, names=classes)
    assert sorted(lm.names) == sorted(chosen)
    for name in chosen:
        assert lm.get(name).label == total[name]
        np.testing.assert_array_equal(lm.mask(name), folder_map.mask(name))
    assert any("task 'total'" in w for w in lm.warnings)
    # the same ids read as total_v1 name other classes; unknown task is a clear error
    v1 = load_labels(path, names=classes, task="total_v1")
    assert sorted(v1.names) == sorted(
        ["spleen", "kidney_left", "liver", "vertebrae_L3", "iliac_artery_right",
         "gluteus_minimus_left"])  # total ids 20, 52, 98 mean other classes in total_v1
    np.testing.assert_array_equal(v1.mask("iliac_artery_right"), folder_map.mask("aorta"))
    with pytest.raises(SegmentationReadError, match="total_mr"):
        load_labels(path, names=classes, task="nope")


def test_slicer_seg_nrrd_header(tmp_path: Path) -> None:
    arr = np.zeros((4, 5, 6), np.uint8)
    arr[1, 1:3, 1:3] = 3
    arr[2, 2, 2] = 7
    image = to_sitk(ImageVolume(arr, np.diag([2.0, 2.0, 3.0, 1.0])), arr)
    for key, value in {
        "Segment0_ID": "Segment_1", "Segment0_Name": "liver", "Segment0_LabelValue": "3",
        "Segment0_Layer": "0", "Segment0_Color": "0.5 0.25 0.125",
        "Segment1_ID": "Segment_2", "Segment1_Name": "Tumor", "Segment1_LabelValue": "7",
        "Segment1_Layer": "0", "Segment1_Color": "0 1 0",
    }.items():
        image.SetMetaData(key, value)
    path = tmp_path / "case.seg.nrrd"
    sitk.WriteImage(image, str(path), True)
    lm = load_labels(path)
    assert lm.names == ["liver", "Tumor"]
    assert lm.get("liver").color == (0.5, 0.25, 0.125) and lm.voxel_count("liver") == 4
    assert lm.get("Tumor").category is Category.TARGET and lm.voxel_count("Tumor") == 1


def test_slicer_multilayer_seg_nrrd(tmp_path: Path) -> None:
    a = np.zeros((4, 5, 6), np.uint8)
    a[1:3, 1:4, 1:4] = 1
    b = np.zeros_like(a)
    b[2:4, 2:5, 2:5] = 1  # overlaps a
    layers = [sitk.GetImageFromArray(x) for x in (a, b)]
    image = sitk.Compose(layers)
    image.SetSpacing([1.0, 1.0, 2.0])
    for key, value in {
        "Segment0_Name": "liver", "Segment0_LabelValue": "1", "Segment0_Layer": "0",
        "Segment1_Name": "tumour", "Segment1_LabelValue": "1", "Segment1_Layer": "1",
    }.items():
        image.SetMetaData(key, value)
    path = tmp_path / "two.seg.nrrd"
    sitk.WriteImage(image, str(path), False)
    # 3D Slicer writes the layer axis as "kinds: list domain domain domain"
    data = path.read_bytes()
    assert b"kinds: vector domain domain domain" in data
    path.write_bytes(data.replace(b"kinds: vector domain", b"kinds: list domain", 1))
    lm = load_labels(path)
    assert len(lm.layers) == 2
    np.testing.assert_array_equal(lm.mask("liver"), a == 1)
    np.testing.assert_array_equal(lm.mask("tumour"), b == 1)


# -- save / load ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_save_load_round_trip(tmp_path: Path, folder_map: LabelMap, suffix: str) -> None:
    lm = folder_map.with_attributes("liver", margin_mm=7.5, forbidden=True, color=(0.1, 0.2, 0.3))
    lm = lm.with_structure("lesion 1", lm.mask("liver") & (np.indices(lm.grid.shape)[0] == 60))
    empty = np.zeros(lm.grid.shape, bool)
    lm = lm.with_structure("nothing", empty)
    out = save_labels(lm, tmp_path / f"case{suffix}")
    sidecar = json.loads((tmp_path / "case.labels.json").read_text())
    assert sidecar["layers"][0] == f"case{suffix}"
    assert len(sidecar["layers"]) == len(lm.layers) >= 2
    assert (tmp_path / f"case.layer1{suffix}").is_file()
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]
    back = load_labels(out)
    assert [s.to_dict() for s in back.structures] == [s.to_dict() for s in lm.structures]
    assert len(back.layers) == len(lm.layers)
    for x, y in zip(back.layers, lm.layers):
        np.testing.assert_array_equal(x, y)
    atol = 0.0 if suffix == ".nrrd" else 1e-4  # NIfTI stores the affine in float32
    np.testing.assert_allclose(back.grid.index_to_lps, lm.grid.index_to_lps, atol=atol, rtol=0)
    assert back.get("liver").margin_mm == 7.5 and back.get("liver").forbidden
    assert back.voxel_count("nothing") == 0


def test_save_labels_bad_output(tmp_path: Path, folder_map: LabelMap) -> None:
    with pytest.raises(InputError, match="suffix"):
        save_labels(folder_map, tmp_path / "x.png")
    with pytest.raises(InputError, match="does not exist"):
        save_labels(folder_map, tmp_path / "missing" / "x.nrrd")


# -- resampling ------------------------------------------------------------------------------


def test_resampling_onto_another_grid_matches_simpleitk(folder_map: LabelMap, tmp_path: Path) -> None:
    angle = np.deg2rad(10.0)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                          [0, 0, 1.0]])
    centre = folder_map.grid.index_to_world(np.array(folder_map.grid.shape_ijk) / 2)
    spacing = np.array([2.5, 2.5, 3.1])
    size_ijk = np.array([160, 130, 110])
    origin = centre - direction @ (spacing * size_ijk / 2) + [0.37, 0.41, 0.23]  # avoid exact NN ties
    target = ImageVolume(np.zeros(tuple(size_ijk[::-1]), np.int16),
                         affine_from_geometry(origin, spacing, direction))
    path = save_labels(folder_map, tmp_path / "lm.nrrd")
    lm = load_labels(path, image=target)
    assert lm.grid is target
    warning = next(w for w in lm.warnings if "resampled" in w)
    assert "122×101×112" in warning and "160×130×110" in warning
    for name in ("liver", "aorta", "lung_vessels"):
        s = folder_map.get(name)
        ref = sitk.Resample(to_sitk(folder_map.grid, folder_map.layers[s.layer]), to_sitk(target),
                            sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        expected = sitk.GetArrayFromImage(ref) == s.label
        got = lm.mask(name)
        assert got.sum() > 10
        assert np.count_nonzero(got != expected) <= 0.001 * expected.sum()


def test_numpy_resampling_agrees_with_simpleitk(folder_map: LabelMap) -> None:
    """The numpy path (used for sheared grids) against the SimpleITK path."""
    from ir_planner.io.seg_common import _resample_numpy, _resample_sitk

    direction = np.array([[0.6, -0.8, 0], [0.8, 0.6, 0], [0, 0, 1]])
    spacing, size = np.array([2.2, 2.9, 3.3]), np.array([60, 50, 40])
    centre = folder_map.grid.index_to_world(np.array(folder_map.grid.shape_ijk) / 2)
    target = ImageVolume(np.zeros(tuple(size[::-1]), np.int16), affine_from_geometry(
        centre - direction @ (spacing * size / 2) + [0.37, 0.41, 0.23], spacing, direction))
    ours = _resample_numpy(folder_map, target)
    ref = _resample_sitk(folder_map, target)
    assert sum(int(np.count_nonzero(layer)) for layer in ref) > 1000
    for a, b in zip(ours, ref):
        assert np.count_nonzero(a != b) <= 1e-4 * a.size


def test_sheared_image_uses_numpy_resampling(folder_map: LabelMap) -> None:
    shear = folder_map.grid.index_to_lps.copy()
    shear[1, 2] = 0.77  # each slice step also moves 0.77 mm posterior (gantry-tilt-like)
    sheared = ImageVolume(np.zeros(folder_map.grid.shape, np.int16), shear)
    lm = resample_labels(folder_map, sheared)
    # brute force for a few labelled voxels: their centres map back to the same label
    k, j, i = np.nonzero(lm.layers[0])
    pick = np.linspace(0, len(k) - 1, 200).astype(int)
    world = sheared.index_to_world(np.stack([i[pick], j[pick], k[pick]], 1))
    src = np.floor(folder_map.grid.world_to_index(world) + 0.5).astype(int)
    np.testing.assert_array_equal(folder_map.layers[0][src[:, 2], src[:, 1], src[:, 0]],
                                  lm.layers[0][k[pick], j[pick], i[pick]])


def test_same_grid_is_not_resampled(folder_map: LabelMap, ct: ImageVolume, tmp_path: Path) -> None:
    path = save_labels(folder_map, tmp_path / "lm.nii.gz")
    lm = load_labels(path, image=ct)
    assert lm.grid is ct and not any("resampled" in w for w in lm.warnings)


def test_label_map_outside_the_image_is_a_geometry_error(folder_map: LabelMap) -> None:
    far = ImageVolume(np.zeros((5, 5, 5), np.int16),
                      affine_from_geometry([5000, 0, 0], [1, 1, 1], np.eye(3)))
    with pytest.raises(GeometryError, match="does not overlap"):
        resample_labels(folder_map, far)


# -- bad input ---------------------------------------------------------------------------------


def test_bad_label_maps(tmp_path: Path, shared_data: Path) -> None:
    with pytest.raises(SegmentationReadError, match="no such file"):
        load_labels(tmp_path / "missing.nii.gz")
    empty = _write(np.zeros((3, 4, 5), np.uint8), tmp_path / "empty.nii.gz")
    small = _write(np.ones((3, 4, 5), np.uint8), tmp_path / "small.nii.gz")
    with pytest.raises(SegmentationReadError, match=r"empty.nii.gz.*empty"):
        load_labels(empty)
    frac = _write(np.full((3, 4, 5), 0.25, np.float32), tmp_path / "prob.nrrd")
    with pytest.raises(SegmentationReadError, match=r"prob.nrrd.*non-integer"):
        load_labels(frac)
    far = ImageVolume(np.zeros((3, 3, 3), np.int16),
                      affine_from_geometry([900, 900, 900], [1, 1, 1], np.eye(3)))
    with pytest.raises(GeometryError, match="does not overlap"):
        load_labels(small, image=far)
    floats = _write(np.full((3, 4, 5), 2.0, np.float32), tmp_path / "float_int.nrrd")
    assert load_labels(floats).voxel_count("label_2") == 60
    neg = _write(np.full((3, 4, 5), -1, np.int16), tmp_path / "neg.nrrd")
    with pytest.raises(SegmentationReadError, match="negative"):
        load_labels(neg)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(SegmentationReadError, match="garbage.nii.gz"):
        load_labels(garbage)
    table = tmp_path / "names.labels.json"
    table.write_text("{not json")
    with pytest.raises(SegmentationReadError, match="not valid JSON"):
        load_labels(empty, names=table)
    with pytest.raises(SegmentationReadError, match="names table"):
        load_labels(table)
    ct_slice = shared_data / "dcmqi-seg" / "ct-3slice" / "01.dcm"
    with pytest.raises(SegmentationReadError, match=r"01.dcm.*neither a DICOM SEG nor an RTSTRUCT"):
        load_labels(ct_slice)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SegmentationReadError, match="notes.txt"):
        load_labels(text)


def test_malformed_names_tables(tmp_path: Path, small_map: tuple[Path, np.ndarray]) -> None:
    path, _ = small_map
    bad_snap = tmp_path / "snap.txt"
    bad_snap.write_text('    1   255    0    0        1  1  1    "liver"\nthis is not a label line\n')
    with pytest.raises(SegmentationReadError, match=r"snap.txt, line 2"):
        load_labels(path, names=bad_snap)
    bad_key = tmp_path / "bad_key.json"
    bad_key.write_text(json.dumps({"liver": "1"}))
    with pytest.raises(SegmentationReadError, match="not an integer label"):
        load_labels(path, names=bad_key)
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"a": {"1": "liver"}, "b": {"1": "spleen"}}))
    with pytest.raises(SegmentationReadError, match="several tasks"):
        load_labels(path, names=tasks)
    assert load_labels(path, names=tasks, task="b").names[0] == "spleen"
    with pytest.raises(SegmentationReadError, match="empty name"):
        load_labels(path, names={1: "  "})
    with pytest.raises(InputError, match="names= applies"):
        load_labels(path.parent, names={1: "liver"})


def _caret_xml(label_map: dict[int, str]) -> bytes:
    """A CIFTI/Caret label-table extension as TotalSegmentator ``--ml`` writes it."""
    body = "".join(f'<Label Key="{k}" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[{v}]]>'
                   "</Label>\n" for k, v in label_map.items())
    xml = ('<?xml version="1.0" encoding="UTF-8"?> <CaretExtension>  <VolumeInformation '
           'Index="0">   <LabelTable>\n' + body + "\n  </LabelTable>  <VolumeType><![CDATA["
           "Label]]></VolumeType>   </VolumeInformation></CaretExtension>\n              ")
    return xml.encode("utf-8")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_totalsegmentator_multilabel_header_names(masks_dir: Path, tmp_path: Path,
                                                  suffix: str) -> None:
    """A multi-label NIfTI with its names in the header extension (TotalSegmentator
    --ml) is read with those names; absent classes are skipped with a warning."""
    names = ["liver", "spleen", "aorta", "colon", "rib_right_9"]
    img = nib.load(str(masks_dir / "liver.nii.gz"))
    data = np.zeros(img.shape, dtype=np.uint8)
    for n, name in enumerate(names, start=1):
        data[np.asarray(nib.load(str(masks_dir / f"{name}.nii.gz")).dataobj) > 0] = n
    table = {n: name for n, name in enumerate(names, start=1)} | {99: "brain"}
    out = nib.Nifti1Image(data, img.affine)
    out.header.extensions.append(nib.nifti1.Nifti1Extension(0, _caret_xml(table)))
    path = tmp_path / f"seg{suffix}"
    nib.save(out, str(path))
    lm = load_labels(path)
    assert sorted(lm.names) == sorted(names)
    for n, name in enumerate(names, start=1):
        s = lm.get(name)
        assert s.label == n
        np.testing.assert_array_equal(lm.mask(name), lm.layers[0] == n)
    assert lm.get("aorta").forbidden and lm.get("colon").forbidden
    assert any("NIfTI header" in w for w in lm.warnings)
    assert any("no voxels" in w for w in lm.warnings)  # "brain" is absent
    # without the extension the same file gives unnamed labels
    plain = tmp_path / f"plain{suffix}"
    nib.save(nib.Nifti1Image(data, img.affine), str(plain))
    assert sorted(load_labels(plain).names) == [f"label_{n}" for n in range(1, 6)]
