"""Numpy-only core model: volumes, label maps, structure catalog, plan, errors.

Imports neither VTK nor Qt (enforced by import-linter).
"""

from ir_planner.core.catalog import Category, lookup
from ir_planner.core.errors import (
    DatasetError,
    GeometryError,
    ImageReadError,
    InputError,
    IRPlannerError,
    PlanError,
    SegmentationReadError,
)
from ir_planner.core.labels import LabelMap, Structure
from ir_planner.core.plan import Plan, TrajectoryRecord
from ir_planner.core.volume import ImageVolume

__all__ = [
    "Category", "lookup", "DatasetError", "GeometryError", "ImageReadError", "InputError",
    "IRPlannerError", "PlanError", "SegmentationReadError", "LabelMap", "Structure", "Plan",
    "TrajectoryRecord", "ImageVolume",
]
