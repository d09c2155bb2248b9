"""Registration of the intra-op scan to the planning CT: accuracy against known motion."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from ir_planner.core.errors import InputError
from ir_planner.core.volume import ImageVolume
from ir_planner.intraop.registration import (
    RegistrationError,
    apply_transform,
    register_deformable,
    register_points,
    register_rigid,
    rigid_parameters,
)
from ir_planner.io.load import load_image
from ir_planner.sample.case import SampleCase
from tests.intraop.synthetic import rotation


@pytest.fixture(scope="module")
def images(sample_case: SampleCase) -> tuple[ImageVolume, ImageVolume]:
    return load_image(sample_case.planning_dicom_dir), load_image(sample_case.intraop_dicom_dir)


@pytest.fixture(scope="module")
def rigid(images, truth):  # type: ignore[no-untyped-def]
    plan, intra = images
    return register_rigid(intra, plan, target_plan_lps=truth["target"]["centre_plan_lps_mm"])


def test_rigid_error_at_target_within_1mm(rigid, truth) -> None:  # type: ignore[no-untyped-def]
    assert rigid.ok, rigid.warnings
    target_i = np.array(truth["target"]["centre_intraop_lps_mm"])
    err = np.linalg.norm(rigid.to_plan(target_i) - truth["target"]["centre_plan_lps_mm"])
    assert err <= 1.0
    # the whole transform, not just one point: the needle tip maps too, angles agree
    tip_err = np.linalg.norm(rigid.to_plan(truth["needle"]["tip_intraop_lps_mm"])
                             - truth["needle"]["tip_plan_lps_mm"])
    assert tip_err <= 1.0
    assert rigid.rotation_deg() == pytest.approx(truth["rotation_deg"], abs=0.5)
    assert rigid.quality.ncc > rigid.quality.ncc_before
    assert rigid.quality.ncc > 0.9


def test_inverse_maps_plan_into_scan(rigid, truth) -> None:  # type: ignore[no-untyped-def]
    back = rigid.to_intraop(truth["target"]["centre_plan_lps_mm"])
    assert np.linalg.norm(back - truth["target"]["centre_intraop_lps_mm"]) <= 1.0
    d = rigid.to_dict()
    assert d["method"] == "rigid-mi" and len(d["intraop_to_plan"]) == 4


def test_noise_volume_does_not_register(images, truth) -> None:  # type: ignore[no-untyped-def]
    plan, intra = images
    rng = np.random.default_rng(0)
    noise = intra.with_array(rng.normal(0, 300, intra.shape).astype(np.float32))
    try:
        r = register_rigid(noise, plan, target_plan_lps=truth["target"]["centre_plan_lps_mm"])
    except RegistrationError:
        return
    assert not r.ok and r.warnings


def test_air_only_scan_is_refused(images) -> None:  # type: ignore[no-untyped-def]
    plan, intra = images
    air = intra.with_array(np.full(intra.shape, -1000, dtype=np.int16))
    with pytest.raises(RegistrationError, match="too little patient"):
        register_rigid(air, plan)


def test_point_pairs_recover_a_known_rigid_motion() -> None:
    rng = np.random.default_rng(3)
    pts = rng.uniform(-80, 80, size=(6, 3))
    m = np.eye(4)
    m[:3, :3] = rotation(np.array([0.3, -0.2, 1.0]), 7.0)
    m[:3, 3] = [4.0, -9.0, 2.5]
    moved = apply_transform(m, pts)
    r = register_points(pts, moved)
    assert np.allclose(r.intraop_to_plan, m, atol=1e-9)
    assert r.quality.fre_mm == pytest.approx(0.0, abs=1e-9) and r.ok
    noisy = moved + rng.normal(0, 0.5, moved.shape)
    r2 = register_points(pts, noisy)
    angle, _ = rigid_parameters(r2.intraop_to_plan @ np.linalg.inv(m))
    assert angle < 1.0 and 0.1 < r2.quality.fre_mm < 1.0


def test_point_pairs_bad_input_is_explained() -> None:
    with pytest.raises(InputError, match="at least 3"):
        register_points([[0, 0, 0], [1, 0, 0]], [[0, 0, 0], [1, 0, 0]])
    with pytest.raises(InputError, match="collinear"):
        register_points([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 0, 0], [1, 0, 0], [2, 0, 0]])
    with pytest.raises(InputError, match="same size"):
        register_points([[0, 0, 0]] * 3, [[0, 0, 0]] * 4)
    r = register_points([[0, 0, 0], [50, 0, 0], [0, 50, 0], [0, 0, 50]],
                        [[0, 0, 0], [50, 0, 0], [0, 50, 0], [0, 0, 80]])
    assert not r.ok and "fiducial" in r.warnings[0]


@pytest.mark.slow
def test_bspline_refinement_keeps_the_target(images, rigid, truth) -> None:  # type: ignore[no-untyped-def]
    plan, intra = images
    d = register_deformable(intra, plan, rigid, target_plan_lps=truth["target"]["centre_plan_lps_mm"],
                            iterations=15)
    assert d.method == "bspline" and d.deformable is not None
    target_i = np.array(truth["target"]["centre_intraop_lps_mm"])
    assert np.linalg.norm(d.to_plan(target_i) - truth["target"]["centre_plan_lps_mm"]) <= 1.5
    # the inverse mapping of the deformable result is consistent with the forward one
    p = np.array(truth["target"]["centre_plan_lps_mm"])
    assert np.linalg.norm(d.to_plan(d.to_intraop(p)) - p) < 0.05


def _angle(a: Any, b: Any) -> float:
    return math.degrees(math.acos(min(1.0, abs(float(np.dot(a, b))))))
