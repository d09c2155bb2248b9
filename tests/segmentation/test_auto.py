"""Automatic CT structures against TotalSegmentator's masks of the real CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ir_planner.core.catalog import Category
from ir_planner.core.volume import ImageVolume
from ir_planner.segmentation._sitk import grid_of
from ir_planner.segmentation.auto import segment_auto, segment_ct

BONE_PREFIXES = ("vertebrae", "rib_", "hip_", "sacrum", "femur")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


@pytest.fixture(scope="module")
def ct(shared_data: Path) -> tuple[ImageVolume, Path]:
    folder = shared_data / "totalseg-ct"
    return grid_of(sitk.ReadImage(str(folder / "example_ct.nii.gz")), modality="CT"), folder


@pytest.fixture(scope="module")
def result(ct):
    return segment_ct(ct[0])


def _ref(folder: Path, prefixes: tuple[str, ...]) -> np.ndarray:
    out = None
    for f in sorted((folder / "masks").glob("*.nii.gz")):
        if f.name.startswith(prefixes):
            m = sitk.GetArrayFromImage(sitk.ReadImage(str(f))) > 0
            out = m if out is None else out | m
    assert out is not None
    return out


def test_bone_dice_vs_totalsegmentator(ct, result) -> None:
    labels, _ = result
    assert _dice(labels.mask("bone"), _ref(ct[1], BONE_PREFIXES)) >= 0.85


def test_lung_dice_vs_lobes(ct, result) -> None:
    labels, _ = result
    assert _dice(labels.mask("lung"), _ref(ct[1], ("lung_lower", "lung_middle", "lung_upper"))
                 ) >= 0.85


def test_bowel_gas_inside_bowel_and_categories(ct, result) -> None:
    labels, rep = result
    gas = labels.mask("bowel_gas")
    bowel = _ref(ct[1], ("colon", "small_bowel", "stomach", "duodenum"))
    assert np.count_nonzero(gas & bowel) / np.count_nonzero(gas) > 0.9
    cats = {s.name: s.category for s in labels}
    assert cats["body"] is Category.BODY and cats["bone"] is Category.BONE
    assert cats["lung"] is Category.LUNG and cats["bowel_gas"] is Category.BOWEL
    # this CT is not contrast-enhanced (aorta ≈ 40 HU): said, and no vessels made up
    assert rep.contrast_enhanced is False
    assert "vessels_contrast" not in labels.names
    assert any("not contrast-enhanced" in w for w in rep.warnings)


def test_body_contains_structures_and_excludes_outside(ct, result) -> None:
    labels, _ = result
    body = labels.mask("body")
    inner = labels.union_mask([n for n in labels.names if n != "body"])
    assert not np.any(inner & ~body)
    hu = ct[0].array
    assert np.mean(hu[body] > -300) > 0.9  # body is mostly tissue (+ filled lung/gas)
    organs = _ref(ct[1], ("liver", "spleen", "kidney", "colon", "hip", "vertebrae",
                          "autochthon", "gluteus", "urinary_bladder"))
    assert np.count_nonzero(organs & body) / np.count_nonzero(organs) > 0.99
    # the table (dense, behind the patient) stays outside: what is dense outside the
    # body lies posterior (+y in LPS) of the body's centre
    dense_out = (hu > -500) & ~body
    assert np.count_nonzero(dense_out) > 0
    y_body = ct[0].index_to_world(np.argwhere(body)[:, ::-1].mean(axis=0))[1]
    y_out = ct[0].index_to_world(np.argwhere(dense_out)[:, ::-1].mean(axis=0))[1]
    assert y_out > y_body + 60.0  # mm, posterior


def test_contrast_vessels_detected_in_synthetic_enhanced_scan(ct) -> None:
    image = ct[0]

    def ref(*names: str) -> np.ndarray:
        out = np.zeros(image.shape, dtype=bool)
        for name in names:
            out |= sitk.GetArrayFromImage(
                sitk.ReadImage(str(ct[1] / "masks" / f"{name}.nii.gz"))) > 0
        return out

    # "contrast" in the real vessel masks: arteries 300 HU, veins 200 HU, noise 12 HU
    arteries = ref("aorta", "iliac_artery_left", "iliac_artery_right")
    veins = ref("inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_vena_left",
                "iliac_vena_right")
    rng = np.random.default_rng(0)
    arr = image.array.astype(np.float32).copy()
    arr[arteries] = 300.0 + rng.normal(0, 12, arteries.sum())
    arr[veins] = 200.0 + rng.normal(0, 12, veins.sum())
    labels, rep = segment_ct(image.with_array(arr))
    assert rep.contrast_enhanced is True and rep.contrast_ml > 10
    vessels = labels.mask("vessels_contrast")
    truth = arteries | veins
    assert np.count_nonzero(vessels & truth) / np.count_nonzero(truth) > 0.7  # recall
    assert np.count_nonzero(vessels & truth) / np.count_nonzero(vessels) > 0.8  # precision
    # the aorta lies on the spine: it must not be swallowed by the bone
    aorta = ref("aorta")
    assert np.count_nonzero(labels.mask("bone") & aorta) / np.count_nonzero(aorta) < 0.05
    assert _dice(labels.mask("bone"), _ref(ct[1], BONE_PREFIXES)) >= 0.8
    assert labels.get("vessels_contrast").category is Category.VESSEL


def test_mr_body_only_with_message(ct) -> None:
    image = ct[0]
    mr_like = np.clip(image.array.astype(np.float32) + 1000.0, 0, None)
    labels, rep = segment_auto(image.with_array(mr_like, modality="MR"))
    assert labels.names == ["body"]
    assert any("not available from MR" in w for w in rep.warnings)
    ct_body = segment_ct(image)[0].mask("body")
    assert _dice(labels.mask("body"), ct_body) > 0.9


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def test_airway_separated_from_lungs_on_synthetic_chest() -> None:
    """A synthetic chest: body, two lungs (-850 HU), trachea and main bronchi (-1000 HU)."""
    shape = (90, 110, 150)  # k, j, i at 2 mm
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-149.0, -109.0, 0.0)
    grid = ImageVolume(np.zeros(shape, np.int16), affine, modality="CT")
    kk, jj, ii = np.indices(shape)
    p = grid.index_to_world(np.stack([ii, jj, kk], -1).astype(float))
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    rng = np.random.default_rng(0)
    hu = np.full(shape, -1000.0)
    body = (x / 130) ** 2 + (y / 90) ** 2 <= 1
    hu[body] = 40.0
    lungs = np.zeros(shape, bool)
    for side in (-1, 1):
        lungs |= ((x - side * 60) / 45) ** 2 + ((y - 5) / 60) ** 2 + ((z - 80) / 70) ** 2 <= 1
    hu[lungs] = -850.0
    carina = np.array([0.0, -10.0, 130.0])
    airway = _segment_distance(p, np.array([0.0, -10.0, 200.0]), carina) <= 8.0
    for side in (-1, 1):
        airway |= _segment_distance(p, carina, np.array([side * 55.0, -5.0, 100.0])) <= 5.0
    hu[airway & body] = -1000.0
    hu[(y > 95) & (y < 105) & (np.abs(x) < 140)] = 200.0  # table
    hu += rng.normal(0, 15, shape)
    labels, rep = segment_ct(grid.with_array(hu.astype(np.float32)))
    assert "airway" in labels.names, rep.warnings
    got = labels.mask("airway")
    truth = airway & body & ~lungs
    assert np.count_nonzero(got & truth) / np.count_nonzero(truth) > 0.8
    assert np.count_nonzero(got & lungs & ~airway) < 0.02 * np.count_nonzero(lungs)
    assert not np.any(labels.mask("lung") & got)
    assert _dice(labels.mask("lung"), lungs & ~airway) > 0.9
    assert labels.get("airway").category is Category.AIRWAY
    assert "bowel_gas" not in labels.names or labels.volume_ml("bowel_gas") < 5
