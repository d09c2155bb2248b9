"""Off-screen pictures: content where it belongs, independent of the storage layout.

The storage-layout test is the picture-level oracle: the same anatomy stored LPS or
flipped must give the same picture.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ir_planner.core.errors import InputError
from ir_planner.scene.render import RenderOptions, plane_for_view, render, save_png
from ir_planner.scene.surfaces import MeshOptions

from .conftest import TARGET_LPS, Case

OPTS = RenderOptions(size=(400, 300), mesh_options=MeshOptions(triangle_budget=8000))


def _pixel_of(point_lps: tuple[float, float, float], case: Case, view: str) -> tuple[int, int]:
    """Window pixel (row, col) of an LPS point in a planar view: the plane's height
    fills the window height, centred."""
    plane = plane_for_view(view, case.image, case.plan)
    w, h = OPTS.size
    r, c, _ = plane.lps_to_pixel(point_lps)
    nr, nc = plane.shape
    scale = h / plane.height_mm * plane.spacing_mm  # window pixels per slice pixel
    return (int(round((r + 0.5 - nr / 2) * scale + h / 2)),
            int(round((c + 0.5 - nc / 2) * scale + w / 2)))


def test_axial_view_shows_the_target_where_it_is(case: Case) -> None:
    rgb = render(case.image, case.labels, case.plan, view="axial", options=OPTS)
    assert rgb.shape == (300, 400, 3) and rgb.dtype == np.uint8
    r, c = _pixel_of(TARGET_LPS, case, "axial")
    patch = rgb[r - 2:r + 3, c - 2:c + 3].reshape(-1, 3).astype(int)
    # the target marker is green, drawn over the tumour
    assert np.any((patch[:, 1] > 150) & (patch[:, 1] > patch[:, 0] + 60)), patch
    # the aorta (x = 10, y = 20) shows its red overlay; body outside the liver is grey
    ra, ca = _pixel_of((10.0, 20.0, 0.0), case, "axial")
    px = rgb[ra, ca].astype(int)
    assert px[0] > px[1] + 40 and px[0] > px[2] + 40, px
    # patient's right (liver, target at x = −45) is on the screen's left
    assert c < 200


@pytest.mark.parametrize("view", ["axial", "sagittal", "along-needle", "3d"])
def test_picture_independent_of_storage_layout(case: Case, flipped_case: Case,
                                               view: str) -> None:
    a = render(case.image, case.labels, case.plan, view=view, options=OPTS).astype(float)
    b = render(flipped_case.image, flipped_case.labels, flipped_case.plan, view=view,
               options=OPTS).astype(float)
    assert a.std() > 10  # not a blank picture
    diff = np.abs(a - b).mean(axis=2)
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 60, (diff.mean(),
                                                                np.percentile(diff, 99))


def test_3d_view_draws_the_plan(case: Case, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with_plan = render(case.image, case.labels, case.plan, view="anterior", options=OPTS)
    without = render(case.image, case.labels, None, view="anterior", options=OPTS)
    changed = np.abs(with_plan.astype(int) - without.astype(int)).sum(axis=2) > 30
    assert changed.sum() > 50  # needle, markers, caption
    out = save_png(with_plan, tmp_path / "scene.png")
    back = np.asarray(Image.open(out).convert("RGB"))
    np.testing.assert_array_equal(back, with_plan)
    assert not list(tmp_path.glob(".*.tmp"))


def test_render_arguments_checked(case: Case) -> None:
    with pytest.raises(InputError, match="unknown view"):
        render(case.image, case.labels, case.plan, view="oblique-ish")
    with pytest.raises(InputError, match="needs the image"):
        render(None, case.labels, case.plan, view="axial")
    with pytest.raises(InputError, match="needs a plan with a trajectory"):
        render(case.image, case.labels, None, view="bullseye", options=OPTS)
    with pytest.raises(InputError, match="picture size"):
        render(case.image, case.labels, None, options=RenderOptions(size=(5, 5)))
