"""Label values that do not fit in 16 bits (int32 label maps) keep their identity."""

from __future__ import annotations

import numpy as np

from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume


def test_from_array_labels_above_65535() -> None:
    grid = ImageVolume(np.zeros((4, 5, 6), dtype=np.float32), np.eye(4))
    arr = np.zeros(grid.shape, dtype=np.int32)
    arr[1, 2, 3] = 70000  # 70000 mod 65536 = 4464: a uint16 cast would rename it
    arr[2, 2, 2] = 300
    lm = LabelMap.from_array(arr, grid, {70000: "aorta", 300: "liver"})
    assert sorted((s.name, s.label) for s in lm.structures) == [("aorta", 70000), ("liver", 300)]
    assert lm.mask("aorta").sum() == 1 and lm.mask("aorta")[1, 2, 3]
    assert lm.get("aorta").forbidden
    assert lm.layers[0].dtype == np.uint32
    # small label maps stay compact
    assert LabelMap.from_array(np.minimum(arr, 255), grid).layers[0].dtype == np.uint8
