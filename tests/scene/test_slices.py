"""Slice planes: what is shown where, on any storage layout; windows; fusion."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ir_planner.core.errors import GeometryError, InputError
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.scene.slices import (
    FusionMode,
    bullseye_plane,
    fuse,
    needle_plane,
    orientation_letters,
    reslice,
    standard_plane,
)
from ir_planner.scene.style import (
    WINDOW_PRESETS,
    WindowLevel,
    WindowPreset,
    apply_window,
    auto_window,
    default_window,
    window_preset,
)

SHAPE = (40, 50, 60)
DIRECTIONS = {
    "identity": np.eye(3),
    "flipped": np.diag([-1.0, -1.0, 1.0]),
    "oblique": Rotation.from_euler("zyx", [25, 10, -15], degrees=True).as_matrix(),
}


def _volume_with_blob(direction: np.ndarray) -> tuple[ImageVolume, np.ndarray]:
    """A volume with a bright ball at a known LPS point (placed via world coordinates)."""
    vol = ImageVolume(np.zeros(SHAPE, np.float32),
                      affine_from_geometry([-30.0, -40.0, -20.0], [1.0, 1.0, 1.5], direction),
                      modality="CT")
    centre = vol.extent_lps().mean(axis=0) + np.array([7.0, -5.0, 4.0])
    k, j, i = np.indices(SHAPE)
    pts = vol.index_to_world(np.stack([i, j, k], axis=-1).reshape(-1, 3))
    ball = np.linalg.norm(pts - centre, axis=1) <= 3.0
    vol.array[ball.reshape(SHAPE)] = 1000.0
    return vol, centre


@pytest.mark.parametrize("name", list(DIRECTIONS))
@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal"])
def test_ball_shows_where_it_is(name: str, orientation: str) -> None:
    vol, centre = _volume_with_blob(DIRECTIONS[name])
    plane = standard_plane(vol, orientation, centre, spacing_mm=0.5)
    img = reslice(vol, plane)
    r, c, dist = plane.lps_to_pixel(centre)
    assert abs(dist) < 1e-9
    assert img[int(round(r)), int(round(c))] > 500
    # the bright pixels are centred on the ball (its section is a disc of radius ~3 mm)
    rr, cc = np.nonzero(img > 500)
    assert abs(rr.mean() - r) < 2 and abs(cc.mean() - c) < 2
    assert 20 < len(rr) < 200
    # one plane further than the ball's radius: nothing bright
    assert reslice(vol, plane.scrolled(5.0)).max() < 500


def test_radiological_convention() -> None:
    vol, _ = _volume_with_blob(np.eye(3))
    letters = {o: orientation_letters(standard_plane(vol, o))
               for o in ("axial", "coronal", "sagittal")}
    assert letters["axial"] == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert letters["coronal"] == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert letters["sagittal"] == {"left": "A", "right": "P", "top": "S", "bottom": "I"}
    axial = standard_plane(vol, "axial", spacing_mm=1.0)
    left = axial.pixel_to_lps(0, axial.shape[1] - 1)
    right = axial.pixel_to_lps(0, 0)
    assert left[0] > right[0]  # screen right = patient left (+x)
    top, bottom = axial.pixel_to_lps(0, 0), axial.pixel_to_lps(axial.shape[0] - 1, 0)
    assert top[1] < bottom[1]  # screen top = anterior (−y)


def test_plane_covers_the_volume_and_round_trips() -> None:
    vol, _ = _volume_with_blob(DIRECTIONS["oblique"])
    plane = standard_plane(vol, "coronal", spacing_mm=0.7)
    rows, cols = np.mgrid[0:plane.shape[0]:7, 0:plane.shape[1]:5]
    back = plane.lps_to_pixel(plane.pixel_to_lps(rows, cols))
    np.testing.assert_allclose(back[..., 0], rows, atol=1e-9)
    np.testing.assert_allclose(back[..., 1], cols, atol=1e-9)
    np.testing.assert_allclose(back[..., 2], 0.0, atol=1e-9)
    # every corner of the volume projects inside the plane's rectangle
    px = plane.lps_to_pixel(vol.extent_lps())
    assert np.all(px[:, 0] > -1) and np.all(px[:, 0] < plane.shape[0])
    assert np.all(px[:, 1] > -1) and np.all(px[:, 1] < plane.shape[1])


def test_needle_and_bullseye_planes() -> None:
    entry = np.array([-80.0, -60.0, 30.0])
    target = np.array([-40.0, 10.0, 10.0])
    p = needle_plane(entry, target)
    re, ce, de = p.lps_to_pixel(entry)
    rt, ct, dt = p.lps_to_pixel(target)
    assert abs(de) < 1e-9 and abs(dt) < 1e-9  # the needle lies in the plane
    assert abs(ce - ct) < 1e-6 and re < rt  # vertical on screen, entry at the top
    b = bullseye_plane(entry, target)
    assert b.lps_to_pixel(target)[2] == pytest.approx(0.0, abs=1e-9)
    assert b.lps_to_pixel(entry)[2] > 0  # the viewer is on the entry side
    np.testing.assert_allclose(b.lps_to_pixel(entry)[:2], b.lps_to_pixel(target)[:2],
                               atol=1e-6)  # the needle is a point
    with pytest.raises(GeometryError):
        needle_plane(entry, entry)


def test_window_presets_and_auto_window() -> None:
    assert window_preset("Lung") == WINDOW_PRESETS[WindowPreset.LUNG]
    assert window_preset(WindowPreset.BONE).level == 400.0
    with pytest.raises(InputError, match="unknown window preset"):
        window_preset("brain-ish")
    with pytest.raises(InputError):
        WindowLevel(0.0, 40.0)
    w = WindowLevel(400.0, 40.0)
    grey = apply_window(np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0]), w)
    assert grey.tolist() == [0, 0, 127, 255, 255]
    assert w.dragged(-1000.0, 10.0).width == 1.0
    rng = np.random.default_rng(0)
    mr = np.zeros((20, 30, 30))
    mr[5:15] = rng.normal(600.0, 50.0, size=(10, 30, 30))
    aw = auto_window(mr)
    assert 400 < aw.low < 500 and 700 < aw.high < 800  # background zeros ignored
    mr_vol = ImageVolume(mr, np.eye(4), modality="MR")
    assert default_window(mr_vol) == aw
    assert default_window(mr_vol.with_array(mr, modality="CT")) == WINDOW_PRESETS[
        WindowPreset.ABDOMEN]


def test_fused_volume_lands_on_the_plan() -> None:
    """An intra-op volume moved by T, shown with intraop_to_plan = T⁻¹·…: same picture."""
    vol, centre = _volume_with_blob(np.eye(3))
    shift = np.eye(4)
    shift[:3, 3] = [12.0, -7.0, 5.0]
    moved = ImageVolume(vol.array.copy(), shift @ vol.index_to_lps)  # patient moved by +shift
    plane = standard_plane(vol, "axial", centre, spacing_mm=0.5)
    plan_img = reslice(vol, plane)
    fused_img = reslice(moved, plane, volume_to_plane=np.linalg.inv(shift))
    np.testing.assert_allclose(fused_img, plan_img, atol=1e-3)
    a = np.zeros((64, 64, 3), np.uint8)
    b = np.full((64, 64, 3), 200, np.uint8)
    assert fuse(a, b, opacity=0.25)[0, 0, 0] == 50
    cb = fuse(a, b, mode=FusionMode.CHECKERBOARD, checker_px=16)
    assert cb[0, 0, 0] == 0 and cb[0, 16, 0] == 200 and cb[16, 16, 0] == 0
    valid = np.zeros((64, 64), bool)
    assert fuse(a, b, valid, opacity=1.0).max() == 0  # no intra-op data: planning CT shows
    with pytest.raises(InputError):
        fuse(a, b, opacity=1.5)
