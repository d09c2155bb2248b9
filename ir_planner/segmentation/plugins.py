"""External segmenters: a small protocol and discovery through entry points.

A segmenter is any object with ``name``, ``modalities`` and
``run(image, progress) -> LabelMap``. Packages declare them in the entry-point
group ``ir_planner.segmenters``; the entry point names a zero-argument factory
(or a class) returning the segmenter. Plugins are imported lazily (on first
use); a plugin that fails to import or to build is logged and skipped, never
fatal. The built-in classic segmenter ("classic") and the TotalSegmentator
adapter ("totalsegmentator") are registered through the same group in the
project's ``pyproject.toml``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import SimpleITK as sitk

from ir_planner.bridge.sitk import to_sitk
from ir_planner.core.errors import InputError, IRPlannerError, SegmentationReadError
from ir_planner.core.labels import LabelMap
from ir_planner.core.progress import ProgressCallback, report
from ir_planner.core.volume import ImageVolume

__all__ = ["Segmenter", "ENTRY_POINT_GROUP", "available_segmenters", "get_segmenter",
           "ClassicSegmenter", "TotalSegmentatorSegmenter"]

log = logging.getLogger(__name__)

#: Entry-point group where segmenters are declared.
ENTRY_POINT_GROUP = "ir_planner.segmenters"


@runtime_checkable
class Segmenter(Protocol):
    """What a segmenter plugin provides."""

    name: str
    modalities: tuple[str, ...]

    def run(self, image: ImageVolume, progress: ProgressCallback | None = None) -> LabelMap:
        """Segment ``image``; returns structures on its grid."""
        ...


def _entry_points() -> list[EntryPoint]:
    return list(entry_points(group=ENTRY_POINT_GROUP))


def available_segmenters() -> dict[str, EntryPoint]:
    """Declared segmenters by name (not imported yet)."""
    return {ep.name: ep for ep in _entry_points()}


def get_segmenter(name: str) -> Segmenter:
    """Import and build the segmenter called ``name``.

    Raises
    ------
    InputError
        If no such segmenter is declared, or it cannot be loaded (the reason is
        logged and named).
    """
    eps = available_segmenters()
    if name not in eps:
        raise InputError(f"no segmenter named {name!r}; available: "
                         f"{', '.join(sorted(eps)) or '(none)'}")
    seg = _load(eps[name])
    if seg is None:
        raise InputError(f"segmenter {name!r} ({eps[name].value}) could not be loaded; "
                         "see the log for the reason")
    return seg


def load_all() -> dict[str, Segmenter]:
    """Every segmenter that loads; broken plugins are logged and skipped."""
    out: dict[str, Segmenter] = {}
    for ep in _entry_points():
        seg = _load(ep)
        if seg is not None:
            out[ep.name] = seg
    return out


def _load(ep: EntryPoint) -> Segmenter | None:
    try:
        factory = ep.load()
        seg = factory() if callable(factory) else factory
    except Exception as exc:  # a broken plugin must never take the application down
        log.warning("segmenter plugin %r (%s) skipped: %s: %s", ep.name, ep.value,
                    type(exc).__name__, exc)
        return None
    if not isinstance(seg, Segmenter):
        log.warning("segmenter plugin %r (%s) skipped: it lacks name/modalities/run",
                    ep.name, ep.value)
        return None
    return seg


class ClassicSegmenter:
    """The built-in classic segmenter (:func:`ir_planner.segmentation.auto.segment_auto`)."""

    name = "classic"
    modalities = ("CT", "MR")

    def run(self, image: ImageVolume, progress: ProgressCallback | None = None) -> LabelMap:
        """Body, bone, lung, airway, bowel gas, contrast vessels (CT); body (MR)."""
        from ir_planner.segmentation.auto import segment_auto

        labels, _ = segment_auto(image, progress=progress)
        return labels


class TotalSegmentatorSegmenter:
    """Adapter running the ``TotalSegmentator`` command when it is installed.

    Parameters
    ----------
    task : str
        TotalSegmentator task ("total" for CT, "total_mr" for MR).
    fast : bool
        Use its 3 mm "--fast" model.
    """

    name = "totalsegmentator"
    modalities = ("CT", "MR")

    def __init__(self, task: str | None = None, fast: bool = True) -> None:
        self.task = task
        self.fast = fast

    @staticmethod
    def executable() -> str | None:
        """Path of the ``TotalSegmentator`` command, or None."""
        return shutil.which("TotalSegmentator")

    def run(self, image: ImageVolume, progress: ProgressCallback | None = None) -> LabelMap:
        """Run TotalSegmentator on ``image`` (multi-label output) and read its classes."""
        exe = self.executable()
        if exe is None:
            raise IRPlannerError(
                "TotalSegmentator is not installed (no 'TotalSegmentator' command on PATH); "
                "install it (pip install TotalSegmentator) or use --segmenter classic"
            )
        task = self.task or ("total_mr" if (image.modality or "").upper() == "MR" else "total")
        with tempfile.TemporaryDirectory(prefix="ir_planner_ts_") as tmp:
            src = Path(tmp) / "image.nii.gz"
            out = Path(tmp) / "seg.nii.gz"
            sitk.WriteImage(to_sitk(image), str(src))
            cmd = [exe, "-i", str(src), "-o", str(out), "--ml", "--task", task]
            if self.fast:
                cmd.append("--fast")
            report(progress, 0.05, f"running TotalSegmentator ({task})")
            done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            if done.returncode != 0 or not out.is_file():
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise SegmentationReadError(f"TotalSegmentator failed (exit "
                                            f"{done.returncode}): {tail[0]}")
            seg = sitk.ReadImage(str(out))
            resampled = sitk.Resample(seg, to_sitk(image, np.zeros(image.shape, np.uint8)),
                                      sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            arr = sitk.GetArrayFromImage(resampled)
        report(progress, 1.0, "TotalSegmentator done")
        return LabelMap.from_array(arr, image, _class_names(task))


def _class_names(task: str) -> dict[int, str]:
    """Label → name for a TotalSegmentator task, if its package tells us."""
    try:
        from totalsegmentator.map_to_binary import class_map  # type: ignore[import-not-found]

        return {int(k): str(v) for k, v in class_map[task].items()}
    except Exception:  # its package may be absent or differ between versions
        log.warning("TotalSegmentator class names for task %r unavailable; labels named "
                    "label_N", task)
        return {}
