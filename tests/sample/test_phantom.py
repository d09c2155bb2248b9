"""The synthetic phantom: determinism, anatomy in the right place, plausible HU."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ir_planner.core.catalog import Category
from ir_planner.core.errors import InputError
from ir_planner.sample.phantom import LABEL_NAMES, TISSUE_HU, make_phantom

SMALL = dict(size_ijk=(64, 64, 24), spacing_mm=(5.6, 5.6, 10.0))


@pytest.fixture(scope="module")
def phantom():  # type: ignore[no-untyped-def]
    return make_phantom(size_ijk=(160, 160, 60), spacing_mm=(2.24, 2.24, 4.0), seed=0)


def _centroid(labels, name):  # type: ignore[no-untyped-def]
    k, j, i = np.nonzero(labels.mask(name))
    return labels.grid.index_to_world([i.mean(), j.mean(), k.mean()])


def test_same_seed_same_arrays_other_seed_other_noise() -> None:
    a_img, a_lab, a_info = make_phantom(seed=3, **SMALL)
    b_img, b_lab, b_info = make_phantom(seed=3, **SMALL)
    c_img, _c_lab, _ = make_phantom(seed=4, **SMALL)
    assert np.array_equal(a_img.array, b_img.array)
    assert np.array_equal(a_lab.layers[0], b_lab.layers[0])
    assert a_info == b_info
    diff = a_img.array.astype(float) - c_img.array.astype(float)
    # different noise everywhere in the body, not a shift of a few voxels
    assert np.count_nonzero(diff) > 0.5 * diff.size
    body = a_lab.mask("liver")
    assert 8.0 < np.std(diff[body]) / np.sqrt(2) < 20.0  # sigma ≈ 12 HU (blurred slightly)


def test_grid_geometry_and_types(phantom) -> None:  # type: ignore[no-untyped-def]
    image, labels, info = phantom
    assert image.shape_ijk == (160, 160, 60)
    assert np.allclose(image.spacing_mm, [2.24, 2.24, 4.0])
    assert image.orientation_code() == "LPS"
    assert image.array.dtype == np.int16 and image.modality == "CT"
    # grid centred on LPS (0, 0, 0)
    centre = image.index_to_world([(160 - 1) / 2, (160 - 1) / 2, (60 - 1) / 2])
    assert np.allclose(centre, 0.0, atol=1e-9)
    assert labels.grid.shape == image.shape
    assert info["synthetic"] is True and info["seed"] == 0


def test_organs_on_the_correct_side(phantom) -> None:  # type: ignore[no-untyped-def]
    _image, labels, _ = phantom
    liver, spleen = _centroid(labels, "liver"), _centroid(labels, "spleen")
    assert liver[0] < -30.0, "liver must be on the patient's right (LPS x < 0)"
    assert spleen[0] > 30.0, "spleen must be on the patient's left (LPS x > 0)"
    aorta, ivc = _centroid(labels, "aorta"), _centroid(labels, "inferior_vena_cava")
    assert aorta[0] > 0 > ivc[0], "aorta left of midline, IVC right"
    vertebra = _centroid(labels, "vertebrae_L1")
    assert vertebra[1] > aorta[1] + 15.0, "spine is posterior (larger y) to the aorta"
    assert _centroid(labels, "kidney_left")[0] > 0 > _centroid(labels, "kidney_right")[0]
    assert _centroid(labels, "kidney_right")[1] > liver[1], "kidneys are posterior"
    assert _centroid(labels, "lung_left")[0] > 0 > _centroid(labels, "lung_right")[0]
    # vertebra levels run head to feet
    zs = [_centroid(labels, f"vertebrae_{lv}")[2] for lv in ("T11", "T12", "L1", "L2", "L3")]
    assert all(a > b for a, b in zip(zs, zs[1:]))


def test_lungs_only_in_cranial_posterior_slices(phantom) -> None:  # type: ignore[no-untyped-def]
    image, labels, _ = phantom
    lung = labels.mask("lung_left") | labels.mask("lung_right")
    k, j, i = np.nonzero(lung)
    pts = image.index_to_world(np.stack([i, j, k], axis=-1))
    liver_z = _centroid(labels, "liver")[2]
    assert pts[:, 2].min() > 40.0 and pts[:, 2].min() > liver_z
    # the lowest lung slices are posterior (costophrenic recesses), y > 0
    lowest = pts[pts[:, 2] <= pts[:, 2].min() + 8.0]
    assert lowest[:, 1].mean() > 20.0
    # lung is air-like, the pleura is soft tissue
    assert np.median(image.array[lung]) < -750
    assert -60 < np.median(image.array[labels.mask("pleura")]) < 100


def test_ribs_are_separate_curved_oblique_bones(phantom) -> None:  # type: ignore[no-untyped-def]
    image, labels, _ = phantom
    ribs = [s for s in labels.names if s.startswith("rib_")]
    assert len(ribs) >= 12
    union = labels.union_mask(ribs)
    comps, n = ndimage.label(union, structure=np.ones((3, 3, 3)))
    assert n == len(ribs), "every rib is one connected component, separate from the others"
    for name in ribs:
        assert np.unique(comps[labels.mask(name)]).size == 1
    rib = labels.mask("rib_right_9")
    k, j, i = np.nonzero(rib)
    pts = image.index_to_world(np.stack([i, j, k], axis=-1))
    assert np.ptp(pts[:, 2]) > 40.0, "a rib descends across many slices (oblique)"
    assert rib.sum(axis=(1, 2)).max() < 0.02 * rib.shape[1] * rib.shape[2], "not a slab"
    assert np.ptp(pts[:, 0]) > 60.0 and np.ptp(pts[:, 1]) > 60.0, "curved around the body"
    assert all(labels.get(r).category is Category.BONE for r in ribs)


def test_hounsfield_units_per_structure(phantom) -> None:  # type: ignore[no-untyped-def]
    image, labels, _ = phantom
    a = image.array

    def med(name: str) -> float:
        return float(np.median(a[labels.mask(name)]))

    assert 80 <= med("liver") <= 120
    assert 20 <= med("tumour_1") <= 50 and med("tumour_1") < med("liver") - 40
    assert 150 <= med("aorta") <= 220 and 130 <= med("inferior_vena_cava") <= 200
    assert 140 <= med("portal_vein") <= 200
    assert -130 <= med("subcutaneous_fat") <= -70
    assert 30 <= med("abdominal_wall_muscle") <= 70
    assert med("vertebrae_L1") >= 350 and a[labels.mask("vertebrae_L1")].max() >= 900
    assert a[labels.mask("rib_right_9")].mean() >= 300
    assert (a[labels.mask("colon")] < -900).sum() > 50, "bowel gas"
    assert ((a[labels.mask("small_bowel")] > -20) & (a[labels.mask("small_bowel")] < 40)).any()
    assert np.median(a[labels.layers[0] == 0][:1000]) <= -990, "air outside"
    assert a.min() >= -1024 and a.max() <= 3071
    # CT table below (posterior to) the patient
    table = image.world_to_index([[0.0, 116.0, 0.0]])[0].round().astype(int)
    assert labels.layers[0][table[2], table[1], table[0]] == 0
    assert TISSUE_HU["table_shell"] > 0 > TISSUE_HU["table_foam"]


def test_tumours_inside_liver_with_expected_size(phantom) -> None:  # type: ignore[no-untyped-def]
    image, labels, info = phantom
    for tum in info["tumours"]:
        name = tum["name"]
        sphere_ml = 4 / 3 * np.pi * tum["radius_mm"] ** 3 / 1000
        assert 15.0 <= 2 * tum["radius_mm"] <= 30.0
        assert labels.volume_ml(name) == pytest.approx(sphere_ml, rel=0.15)
        assert np.allclose(_centroid(labels, name), tum["centre_lps_mm"], atol=2.5)
        shell = ndimage.binary_dilation(labels.mask(name), iterations=2) & ~labels.mask(name)
        assert np.mean(labels.layers[0][shell] == labels.get("liver").label) > 0.9
        assert labels.get(name).category is Category.TARGET


def test_names_get_catalog_categories(phantom) -> None:  # type: ignore[no-untyped-def]
    _image, labels, _ = phantom
    expected = {"liver": Category.SOLID_ORGAN, "tumour_2": Category.TARGET,
                "hepatic_vein": Category.VESSEL, "portal_vein": Category.VESSEL,
                "aorta": Category.VESSEL, "inferior_vena_cava": Category.VESSEL,
                "kidney_left": Category.SOLID_ORGAN, "spleen": Category.SOLID_ORGAN,
                "rib_left_10": Category.BONE, "vertebrae_L2": Category.BONE,
                "lung_right": Category.LUNG, "small_bowel": Category.BOWEL,
                "colon": Category.BOWEL, "skin": Category.BODY, "spinal_cord": Category.NERVE}
    for name, cat in expected.items():
        assert labels.get(name).category is cat, name
    assert set(labels.names) <= set(LABEL_NAMES.values())
    assert all(labels.voxel_count(s) > 0 for s in labels)


def test_bad_arguments_raise_input_error() -> None:
    with pytest.raises(InputError, match="size_ijk"):
        make_phantom(size_ijk=(0, 10, 10))
    with pytest.raises(InputError, match="tumours"):
        make_phantom(tumours=3, **SMALL)
    _img, labels, info = make_phantom(tumours=0, **SMALL)
    assert info["tumours"] == [] and not labels.by_category(Category.TARGET)
