"""Needle detection: the sample scan, a real CT with a synthetic needle, no/two needles, clips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.intraop.needle import detect_needles
from ir_planner.intraop.registration import apply_transform, register_rigid
from ir_planner.io.load import load_image
from ir_planner.sample.case import SampleCase
from tests.intraop.synthetic import add_needle, add_streaks, moved_slab, rotation


def _angle(a, b) -> float:  # type: ignore[no-untyped-def]
    return math.degrees(math.acos(min(1.0, abs(float(np.dot(a, b))))))


def test_sample_scan_tip_and_axis(sample_case: SampleCase, truth) -> None:  # type: ignore[no-untyped-def]
    intra = load_image(sample_case.intraop_dicom_dir)
    n = truth["needle"]
    for target in (truth["target"]["centre_intraop_lps_mm"], None):
        det = detect_needles(intra, expected_target_lps=target)
        assert len(det.needles) == 1, det.warnings
        found = det.needle
        assert np.linalg.norm(np.array(found.tip_lps) - n["tip_intraop_lps_mm"]) <= 1.5
        assert _angle(found.axis, n["axis_intraop"]) <= 1.0
        assert np.dot(found.axis, n["axis_intraop"]) > 0, "the axis points from hub to tip"
        assert found.tip_direction_certain and found.tip_inside_body


@pytest.fixture(scope="module")
def real_case(shared_data):  # type: ignore[no-untyped-def]
    """The real TotalSegmentator CT moved (3° + 8 mm), a 30-slice slab at 1.5×1.5×2.5 mm,
    noise 15 HU, streaks and a 17 G needle to the liver (tip 3 mm short of the target)."""
    ct = load_image(shared_data / "totalseg-ct" / "example_ct.nii.gz")
    liver = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "totalseg-ct" / "masks" /
                                                      "liver.nii.gz")))
    k, j, i = np.nonzero(liver)
    target = ct.index_to_world([i.mean(), j.mean(), k.mean()])
    p2i = np.eye(4)
    p2i[:3, :3] = rotation(np.array([0.2, 0.3, 1.0]), 3.0)
    p2i[:3, 3] = target - p2i[:3, :3] @ target + np.array([6.0, -3.0, 5.0])
    target_i = apply_transform(p2i, target)
    slab = moved_slab(ct, p2i, target_i, size_ijk=(240, 200, 30), spacing_mm=(1.5, 1.5, 2.5))
    out = np.array([-1.0, -0.35, 0.15])
    out /= np.linalg.norm(out)
    tip = target_i + 3.0 * out
    hub = tip + 110.0 * out
    add_needle(slab, hub, tip, 1.47)
    rng = np.random.default_rng(1)
    add_streaks(slab, tip + 20.0 * out, rng)
    slab.array[...] += rng.normal(0, 15, slab.shape).astype(np.float32)
    return ct, slab, target, target_i, tip, -out, p2i


def test_real_ct_registration_and_needle(real_case) -> None:  # type: ignore[no-untyped-def]
    ct, slab, target, target_i, tip, axis, p2i = real_case
    reg = register_rigid(slab, ct, target_plan_lps=target)
    assert reg.ok, reg.warnings
    assert np.linalg.norm(reg.to_plan(target_i) - target) <= 1.0
    det = detect_needles(slab, expected_target_lps=reg.to_intraop(target))
    assert len(det.needles) == 1, det.warnings
    n = det.needle
    assert np.linalg.norm(np.array(n.tip_lps) - tip) <= 1.5
    assert _angle(n.axis, axis) <= 1.0
    assert n.skin_lps is not None


def _blank(shape=(40, 120, 120), spacing=(1.0, 1.0, 2.0)) -> ImageVolume:  # type: ignore[no-untyped-def]
    arr = np.full(shape, -1000.0, dtype=np.float32)
    arr[:, 20:100, 20:100] = 40.0  # a block of soft tissue
    affine = affine_from_geometry((-60.0, -60.0, -40.0), spacing, np.eye(3))
    return ImageVolume(arr, affine, modality="CT")


def test_no_needle_says_so() -> None:
    det = detect_needles(_blank())
    assert det.needle is None and "no needle" in det.warnings[0]


def test_clips_are_not_needles() -> None:
    vol = _blank()
    vol.array[20, 50:53, 50:53] = 3071.0  # a surgical clip, 3 mm
    vol.array[10, 70:72, 30:36] = 3071.0
    det = detect_needles(vol)
    assert det.needle is None and det.other_metal_voxels > 0
    assert "clips or other metal" in det.warnings[0]


def test_two_needles_are_both_found_and_the_one_aimed_at_the_target_chosen() -> None:
    vol = _blank()
    target = np.array([0.0, 0.0, 0.0])
    a_tip, a_hub = np.array([-2.0, 1.0, 0.0]), np.array([-2.0, -70.0, 4.0])
    b_tip, b_hub = np.array([25.0, 10.0, -10.0]), np.array([75.0, 30.0, -14.0])
    add_needle(vol, a_hub, a_tip, 1.47)
    add_needle(vol, b_hub, b_tip, 1.47)
    vol.array[30, 40:43, 80:83] = 3071.0  # and a clip
    det = detect_needles(vol, expected_target_lps=target)
    assert len(det.needles) == 2
    assert any("2 needles" in w for w in det.warnings)
    assert np.linalg.norm(np.array(det.needle.tip_lps) - a_tip) <= 1.5
    other = det.needles[1]
    assert np.linalg.norm(np.array(other.tip_lps) - b_tip) <= 1.5
