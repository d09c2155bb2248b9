"""Adapter running the ``TotalSegmentator`` command on an IR Planner image.

The image is written as NIfTI, TotalSegmentator writes one mask per structure into a
folder (``<name>.nii.gz``), and IR Planner's mask-folder reader brings them back onto
the image grid: structure names come from the file names, so the planner knows which
structures are vessels, bowel or organs (unnamed labels would be unsafe to plan on).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ir_planner.core.errors import IRPlannerError, SegmentationReadError
from ir_planner.core.labels import LabelMap
from ir_planner.core.progress import ProgressCallback, report, subrange
from ir_planner.core.volume import ImageVolume
from ir_planner.io.image_files import write_image_file
from ir_planner.io.segmentation import load_labels

__all__ = ["TotalSegmentatorSegmenter", "HOW_TO_INSTALL"]

#: What the user is told when the command is missing.
HOW_TO_INSTALL = (
    "TotalSegmentator is not installed (no 'TotalSegmentator' command on PATH and "
    "$IR_PLANNER_TOTALSEGMENTATOR not set). Install it into this environment with "
    "'pip install TotalSegmentator' (needs PyTorch; model weights download on first run), "
    "or point $IR_PLANNER_TOTALSEGMENTATOR at its command; meanwhile use "
    "--segmenter classic"
)
_DEFAULT_TIMEOUT_S = 3600.0


class TotalSegmentatorSegmenter:
    """Segment CT (task ``total``) or MR (task ``total_mr``) with TotalSegmentator.

    Parameters
    ----------
    task : str, optional
        TotalSegmentator task; default from the image modality.
    fast : bool
        Use its 3 mm ``--fast`` model (minutes on a CPU instead of tens of minutes).
    """

    name = "totalsegmentator"
    modalities = ("CT", "MR")

    def __init__(self, task: str | None = None, fast: bool = True) -> None:
        self.task = task
        self.fast = fast

    @staticmethod
    def executable() -> str | None:
        """Path of the TotalSegmentator command, or None when it is not installed."""
        override = os.environ.get("IR_PLANNER_TOTALSEGMENTATOR")
        if override:
            return override if Path(override).is_file() and os.access(override, os.X_OK) \
                else None
        return shutil.which("TotalSegmentator")

    def command(self, image_path: Path, out_dir: Path, task: str) -> list[str]:
        """The command line run for ``task``."""
        exe = self.executable()
        if exe is None:
            raise IRPlannerError(HOW_TO_INSTALL)
        cmd = [exe, "-i", str(image_path), "-o", str(out_dir), "--task", task]
        if self.fast:
            cmd.append("--fast")
        return cmd

    def run(self, image: ImageVolume, progress: ProgressCallback | None = None) -> LabelMap:
        """Run TotalSegmentator on ``image``; returns its structures on the image grid.

        Raises
        ------
        IRPlannerError
            TotalSegmentator is not installed (the message says how to get it).
        SegmentationReadError
            It failed, timed out or wrote no masks (its last output line is quoted).
        """
        if self.executable() is None:
            raise IRPlannerError(HOW_TO_INSTALL)
        task = self.task or ("total_mr" if (image.modality or "").upper() == "MR" else "total")
        timeout_s = float(os.environ.get("IR_PLANNER_TOTALSEGMENTATOR_TIMEOUT_S",
                                         _DEFAULT_TIMEOUT_S))
        with tempfile.TemporaryDirectory(prefix="ir_planner_ts_") as tmp:
            src = Path(tmp) / "image.nii.gz"
            out = Path(tmp) / "masks"
            write_image_file(image, src)
            cmd = self.command(src, out, task)
            report(progress, 0.05, f"running TotalSegmentator ({task}"
                   f"{', fast' if self.fast else ''}); this takes minutes")
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                      check=False)
            except subprocess.TimeoutExpired as exc:
                raise SegmentationReadError(
                    f"TotalSegmentator did not finish within {timeout_s:g} s; raise "
                    "$IR_PLANNER_TOTALSEGMENTATOR_TIMEOUT_S or use a GPU") from exc
            masks = sorted(out.glob("*.nii.gz")) if out.is_dir() else []
            if done.returncode != 0 or not masks:
                lines = (done.stderr or done.stdout or "").strip().splitlines()
                last = lines[-1] if lines else "no output"
                raise SegmentationReadError(
                    f"TotalSegmentator failed (exit {done.returncode}"
                    f"{', no masks written' if not masks else ''}): {last}")
            labels = load_labels(out, image=image, progress=subrange(progress, 0.8, 0.99))
        report(progress, 1.0, f"TotalSegmentator: {len(labels.structures)} structures")
        return labels
