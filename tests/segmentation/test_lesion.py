"""Lesion from one click: synthetic ellipsoids inserted into the real CT's liver."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from ir_planner.core.errors import InputError
from ir_planner.core.volume import ImageVolume
from ir_planner.segmentation._sitk import grid_of
from ir_planner.segmentation.lesion import principal_diameters_mm, segment_lesion
from ir_planner.segmentation.synthetic import insert_ellipsoid_lesion


@pytest.fixture(scope="module")
def ct_liver(shared_data):
    folder = shared_data / "totalseg-ct"
    ct = grid_of(sitk.ReadImage(str(folder / "example_ct.nii.gz")), modality="CT")
    liver = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "masks" / "liver.nii.gz"))) > 0
    depth = ndi.distance_transform_edt(np.pad(liver, 1), sampling=ct.spacing_mm[::-1])
    return ct, liver, depth[1:-1, 1:-1, 1:-1]


def _centre(ct: ImageVolume, depth: np.ndarray, need_mm: float, n: int) -> np.ndarray:
    cand = np.argwhere(depth > need_mm)
    kji = cand[(n * 7919) % len(cand)]
    return ct.index_to_world(kji[::-1].astype(float))


@pytest.mark.parametrize("size_mm,contrast", [(30, -60), (30, 60), (20, -50), (40, 70)])
def test_lesion_dice_volume_diameters(ct_liver, size_mm, contrast) -> None:
    ct, _, depth = ct_liver
    semi = np.array([1.0, 0.8, 0.7]) * size_mm / 2
    centre = _centre(ct, depth, size_mm / 2 + 6, size_mm + contrast)
    image, truth = insert_ellipsoid_lesion(ct, centre, semi, contrast, edge_mm=1.0,
                                           noise_sd=8.0, rng=1)
    res = segment_lesion(image, centre)
    dice = 2 * np.count_nonzero(res.mask & truth) / (res.mask.sum() + truth.sum())
    assert dice >= 0.85
    true_ml = 4 / 3 * np.pi * np.prod(semi) / 1000
    assert res.volume_ml == pytest.approx(true_ml, rel=0.3)
    np.testing.assert_allclose(res.diameters_mm, 2 * semi, rtol=0.2)
    assert res.polarity == ("hypo" if contrast < 0 else "hyper")


def test_principal_diameters_of_voxelised_ellipsoid() -> None:
    grid = ImageVolume(np.zeros((60, 60, 60)), np.diag([0.5, 0.5, 0.5, 1.0]))
    kk, jj, ii = np.mgrid[:60, :60, :60] * 0.5 - 15
    mask = (ii / 12) ** 2 + (jj / 8) ** 2 + (kk / 5) ** 2 <= 1
    d, axes, c = principal_diameters_mm(mask, grid)
    np.testing.assert_allclose(d, [24, 16, 10], rtol=0.03)
    assert abs(axes[0][0]) > 0.99 and abs(axes[2][2]) > 0.99


def test_seed_not_in_lesion_fails_clearly(ct_liver) -> None:
    ct, _, depth = ct_liver
    centre = _centre(ct, depth, 25, 3)
    with pytest.raises(InputError, match="no lesion|leaks"):
        segment_lesion(ct.with_array(np.full(ct.shape, 50.0, np.float32)), centre)
    # in air outside the patient
    with pytest.raises(InputError, match="air"):
        segment_lesion(ct, ct.index_to_world([1.0, 1.0, 50.0]))
    with pytest.raises(InputError, match="outside the image"):
        segment_lesion(ct, [1e4, 0, 0])


def test_segment_for_planning_adds_target_lesion(ct_liver) -> None:
    from ir_planner.core.catalog import Category
    from ir_planner.segmentation.auto import segment_for_planning

    ct, _, depth = ct_liver
    centre = _centre(ct, depth, 21, 11)
    image, truth = insert_ellipsoid_lesion(ct, centre, [12, 10, 9], -60, noise_sd=8, rng=2)
    labels, rep = segment_for_planning(image, lesion_seed_lps=centre)
    assert {"body", "bone", "lesion"} <= set(labels.names)
    assert labels.get("lesion").category is Category.TARGET
    got = labels.mask("lesion")
    assert 2 * np.count_nonzero(got & truth) / (got.sum() + truth.sum()) >= 0.85
    assert rep["lesion"]["volume_ml"] > 0
