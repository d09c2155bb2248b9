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
from ir_planner.segmentation.synthetic import ellipsoid_coverage, insert_ellipsoid_lesion


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


# A fixed set of lesions (size mm, contrast HU, noise SD HU), random orientation and
# sub-voxel position drawn from a fixed generator: hypo- and hyperdense, 10–40 mm on the
# real 3 mm grid.
FIXED_SET = [(10, -70, 5), (10, 70, 5), (15, -40, 5), (15, 60, 10), (20, -40, 15),
             (20, 40, 15), (25, -70, 10), (30, 50, 10), (30, -60, 15), (40, -40, 5),
             (40, 70, 15), (20, 70, 5)]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / max(1, int(a.sum() + b.sum()))


def _run_fixed(ct: ImageVolume, depth: np.ndarray, cases, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for size, contrast, noise in cases:
        cand = np.argwhere(depth > size / 2 + 6)
        kji = cand[rng.integers(len(cand))]
        centre = ct.index_to_world(kji[::-1] + rng.uniform(-0.5, 0.5, 3))
        rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        semi = np.array([1.0, 0.8, 0.7]) * size / 2
        image, truth = insert_ellipsoid_lesion(ct, centre, semi, contrast, edge_mm=1.0,
                                               noise_sd=noise, rotation_lps=rot, rng=rng)
        res = segment_lesion(image, centre)
        out.append((size, contrast, _dice(res.mask, truth),
                    res.mask.sum() / truth.sum() - 1.0, res))
    return out


def test_fixed_lesion_set_median_dice_and_volume(ct_liver) -> None:
    ct, _, depth = ct_liver
    got = _run_fixed(ct, depth, FIXED_SET, 4)
    dices = [g[2] for g in got]
    assert np.median(dices) >= 0.85, dices
    for size, contrast, d, vol_err, res in got:
        # per-lesion bounds: volume (vs the truth voxels) and overlap, looser for lesions
        # only ~3 voxels across
        assert abs(vol_err) <= (0.2 if size >= 20 else 0.6), (size, contrast, vol_err)
        assert d >= (0.85 if size >= 20 else 0.5), (size, contrast, d)
        assert res.polarity == ("hypo" if contrast < 0 else "hyper")


def test_small_lesions_on_1mm_grid(ct_liver) -> None:
    """5 and 10 mm lesions where they are resolvable: the liver region resampled to 1 mm."""
    ct, liver, depth3 = ct_liver
    centre_kji = np.array(np.unravel_index(int(np.argmax(depth3)), depth3.shape))
    # a 60 mm cube of the liver at 1 mm (linear), placed on the CT's axes
    img = sitk.GetImageFromArray(ct.array.astype(np.float32))
    origin, spacing = ct.index_to_world(np.zeros(3)), ct.spacing_mm
    img.SetOrigin(origin.tolist())
    img.SetSpacing(spacing.tolist())
    img.SetDirection(ct.direction.reshape(-1).tolist())
    ref = sitk.Image([60, 60, 60], sitk.sitkFloat32)
    ref.SetSpacing([1.0, 1.0, 1.0])
    ref.SetDirection(ct.direction.reshape(-1).tolist())
    start = ct.index_to_world(centre_kji[::-1].astype(float)) - ct.direction @ [30, 30, 30]
    ref.SetOrigin(start.tolist())
    fine_img = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, -1000.0)
    fine = grid_of(fine_img, modality="CT")
    fine_liver = sitk.GetArrayFromImage(sitk.Resample(
        _like(img, liver), ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    depth = ndi.distance_transform_edt(np.pad(fine_liver, 1))[1:-1, 1:-1, 1:-1]
    got = _run_fixed(fine, depth, [(5, -70, 5), (5, 70, 5), (10, -40, 10), (10, 40, 10)], 8)
    for size, contrast, d, vol_err, _ in got:
        assert d >= (0.55 if size == 5 else 0.7), (size, contrast, d)
        assert abs(vol_err) <= (1.0 if size == 5 else 0.5), (size, contrast, vol_err)


def _like(img: sitk.Image, mask: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(img)
    return out


def test_synthetic_truth_is_half_covered_cells_and_intensity_is_cell_average() -> None:
    grid = ImageVolume(np.zeros((12, 12, 12), np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    centre = grid.index_to_world([5.3, 5.6, 5.1])
    semi = [7.0, 5.0, 4.0]
    cover = ellipsoid_coverage(grid, centre, semi, n_sub=8)
    # coverage integrates to the ellipsoid volume (within the sub-sampling error)
    vol_mm3 = 4 / 3 * np.pi * np.prod(semi)
    assert cover.sum() * 27.0 == pytest.approx(vol_mm3, rel=0.03)
    # sharp edge, no noise: each voxel holds contrast × its covered fraction; the truth
    # is the set of cells at least half inside
    img, truth = insert_ellipsoid_lesion(grid, centre, semi, 100.0, edge_mm=0.0, n_sub=8)
    np.testing.assert_allclose(img.array, 100.0 * cover, atol=1e-3)
    np.testing.assert_array_equal(truth, cover >= 0.5)
    # a 3 mm lesion at 3 mm voxels has no cell half inside: empty truth
    _, tiny = insert_ellipsoid_lesion(grid, grid.index_to_world([5.0, 5.0, 5.0]),
                                      [1.5, 1.2, 1.05], 50.0)
    assert not tiny.any()


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


def test_seed_in_plain_real_liver_says_no_lesion(ct_liver) -> None:
    """Clicks in real liver parenchyma with no lesion: a clear 'no lesion' every time."""
    ct, _, depth = ct_liver
    cand = np.argwhere(depth > 15)
    rng = np.random.default_rng(0)
    for kji in cand[rng.integers(len(cand), size=8)]:
        with pytest.raises(InputError, match="no lesion"):
            segment_lesion(ct, ct.index_to_world(kji[::-1].astype(float)))


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
