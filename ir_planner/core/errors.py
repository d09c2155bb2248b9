"""The project's exception hierarchy.

Every *expected* failure (bad file, bad argument, impossible geometry) raises a
subclass of :class:`IRPlannerError` whose message says what was wrong, with which
file or argument, and what to do. The CLI prints these without a traceback and
exits non-zero; anything else is a bug.
"""

from __future__ import annotations


class IRPlannerError(Exception):
    """Base class of all expected, user-facing errors."""


class InputError(IRPlannerError, ValueError):
    """An argument given by the user or caller is invalid."""


class ImageReadError(IRPlannerError):
    """An image file or DICOM series cannot be read or is inconsistent."""


class SegmentationReadError(IRPlannerError):
    """A segmentation (label map, mask folder, DICOM SEG, RTSTRUCT) cannot be read."""


class GeometryError(IRPlannerError):
    """Image geometry is inconsistent or unsupported (e.g. mismatched grids)."""


class PlanError(IRPlannerError):
    """A plan is invalid, cannot be computed, or cannot be saved/loaded."""


class DatasetError(IRPlannerError):
    """A sample or public dataset cannot be generated, downloaded or verified."""


class OutputError(IRPlannerError, OSError):
    """An output cannot be written: it would replace an input, or the write failed."""
