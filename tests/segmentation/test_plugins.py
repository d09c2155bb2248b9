"""Segmenter discovery through the ir_planner.segmenters entry-point group."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint

import pytest

from ir_planner.core.errors import InputError, IRPlannerError
from ir_planner.segmentation import plugins


def test_builtin_segmenters_registered() -> None:
    eps = plugins.available_segmenters()
    assert {"classic", "totalsegmentator"} <= set(eps)
    seg = plugins.get_segmenter("classic")
    assert isinstance(seg, plugins.Segmenter) and seg.name == "classic"


def test_broken_plugin_logged_and_skipped(monkeypatch, caplog) -> None:
    real = plugins._entry_points()
    broken = EntryPoint("broken", "no_such_module_xyz:Thing", plugins.ENTRY_POINT_GROUP)
    not_seg = EntryPoint("notseg", "json:dumps", plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "_entry_points", lambda: [*real, broken, not_seg])
    with caplog.at_level(logging.WARNING, logger=plugins.__name__):
        loaded = plugins.load_all()
    assert "classic" in loaded and "broken" not in loaded and "notseg" not in loaded
    assert "broken" in caplog.text and "no_such_module_xyz" in caplog.text
    with pytest.raises(InputError, match="could not be loaded"):
        plugins.get_segmenter("broken")
    with pytest.raises(InputError, match="no segmenter named"):
        plugins.get_segmenter("nope")


def test_totalsegmentator_absent_says_so(monkeypatch) -> None:
    import numpy as np

    from ir_planner.core.volume import ImageVolume

    monkeypatch.setenv("PATH", "/nonexistent")
    seg = plugins.get_segmenter("totalsegmentator")
    with pytest.raises(IRPlannerError, match="TotalSegmentator is not installed"):
        seg.run(ImageVolume(np.zeros((4, 4, 4)), np.eye(4), modality="CT"))
