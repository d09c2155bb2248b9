"""A small synthetic case (CT, labels, plan) for scene and GUI tests.

Stored in two layouts: LPS (identity direction) and flipped storage (i and k
reversed, direction −1 on x and z) holding the *same anatomy* — a picture must not
depend on the layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ir_planner.core.labels import LabelMap
from ir_planner.core.plan import Plan, TrajectoryRecord
from ir_planner.core.volume import ImageVolume, affine_from_geometry

SHAPE = (40, 64, 72)  # (k, j, i)
SPACING = (3.0, 3.0, 4.0)
ORIGIN = (-105.0, -95.0, -80.0)
TARGET_LPS = (-45.0, -10.0, 0.0)
ENTRY_LPS = (-95.0, -50.0, 10.0)


@dataclass
class Case:
    image: ImageVolume
    labels: LabelMap
    plan: Plan


def _anatomy(grid: ImageVolume) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    k, j, i = np.indices(grid.shape)
    p = grid.index_to_world(np.stack([i, j, k], axis=-1).reshape(-1, 3)).reshape(*grid.shape, 3)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    body = (x / 100.0) ** 2 + (y / 75.0) ** 2 <= 1
    liver = body & (((x + 45) / 40.0) ** 2 + ((y + 5) / 35.0) ** 2 + (z / 60.0) ** 2 <= 1)
    tumour = np.linalg.norm(p - np.array(TARGET_LPS), axis=-1) <= 9.0
    aorta = ((x - 10) ** 2 + (y - 20) ** 2) <= 9.0 ** 2
    spine = ((x - 0) ** 2 + (y - 52) ** 2) <= 12.0 ** 2
    liver &= ~tumour
    ct = np.where(body, 40.0, -1000.0)
    ct[liver] = 70.0
    ct[tumour] = 20.0
    ct[aorta] = 180.0
    ct[spine] = 700.0
    return ct.astype(np.int16), {"liver": liver, "tumour_1": tumour, "aorta": aorta,
                                 "vertebrae_L1": spine}


def make_case(flipped: bool = False) -> Case:
    direction = np.diag([-1.0, 1.0, -1.0]) if flipped else np.eye(3)
    ni, nk = SHAPE[2], SHAPE[0]
    origin = np.array(ORIGIN, float)
    if flipped:  # the far corner becomes voxel (0, 0, 0): same extent, reversed storage
        origin = origin + np.array([(ni - 1) * SPACING[0], 0.0, (nk - 1) * SPACING[2]])
    grid = ImageVolume(np.zeros(SHAPE, np.int16),
                       affine_from_geometry(origin, SPACING, direction), modality="CT")
    ct, masks = _anatomy(grid)
    image = grid.with_array(ct)
    labels = LabelMap.from_masks(list(masks.items()), image)
    plan = Plan()
    plan.apply("target", lambda p: (setattr(p, "target_structure", "tumour_1"),
                                    setattr(p, "target_lps", TARGET_LPS)) and None)
    plan.add_trajectory(TrajectoryRecord(
        name="T1", entry_lps=ENTRY_LPS, target_lps=TARGET_LPS,
        needle={"gauge": 17, "outer_diameter_mm": 1.473},
        metrics={"verdict": "safe", "length_mm": 65.6}))
    return Case(image, labels, plan)


@pytest.fixture(scope="session")
def case() -> Case:
    return make_case()


@pytest.fixture(scope="session")
def flipped_case() -> Case:
    return make_case(flipped=True)
