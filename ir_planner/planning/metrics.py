"""Result types of trajectory evaluation (all lengths mm, angles degrees, points LPS mm)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

__all__ = ["Verdict", "StructureClearance", "Crossing", "TrajectoryMetrics"]


class Verdict(StrEnum):
    """Overall judgement of a trajectory."""

    SAFE = "safe"
    CAUTION = "caution"
    UNSAFE = "unsafe"


def _pt(p: Any) -> list[float]:
    return [round(float(v), 3) for v in np.asarray(p, dtype=float).reshape(3)]


@dataclass(frozen=True)
class StructureClearance:
    """Minimum clearance of the needle to one structure.

    Attributes
    ----------
    name : str
    clearance_mm : float
        Distance from the needle axis segment to the structure's voxel cells minus
        the needle outer radius (negative = the needle surface touches or crosses it).
    at_mm_from_entry : float
        Position along the needle (from the entry point) of the closest approach.
    point_lps : tuple of float
        Closest point on the axis (LPS mm).
    forbidden : bool
    margin_mm : float
    exact : bool
        False when the value is a guaranteed lower bound only (structure farther
        than the evaluation range; see :class:`~ir_planner.planning.engine.PlanningEngine`).
    """

    name: str
    clearance_mm: float
    at_mm_from_entry: float
    point_lps: tuple[float, float, float]
    forbidden: bool
    margin_mm: float
    exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"clearance_mm": round(self.clearance_mm, 3),
                "at_mm_from_entry": round(self.at_mm_from_entry, 2),
                "point_lps": _pt(self.point_lps), "forbidden": self.forbidden,
                "margin_mm": self.margin_mm, "exact": self.exact}


@dataclass(frozen=True)
class Crossing:
    """One passage of the needle axis through a structure (entry/exit along the needle)."""

    name: str
    enter_mm_from_entry: float
    exit_mm_from_entry: float
    forbidden: bool

    @property
    def length_mm(self) -> float:
        """Length travelled inside the structure, mm."""
        return self.exit_mm_from_entry - self.enter_mm_from_entry

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"name": self.name, "enter_mm_from_entry": round(self.enter_mm_from_entry, 2),
                "exit_mm_from_entry": round(self.exit_mm_from_entry, 2),
                "length_mm": round(self.length_mm, 2), "forbidden": self.forbidden}


@dataclass
class TrajectoryMetrics:
    """Everything the planner knows about one straight trajectory entry → target.

    Attributes
    ----------
    entry_lps, target_lps : tuple of float
    length_mm : float
        Entry to target.
    skin_lps : tuple of float or None
        Where the axis crosses the skin (first body cell from the entry).
    insertion_depth_mm : float
        Skin crossing to target (= length when the entry is on the skin).
    needle : dict
        Gauge, outer diameter (mm), usable length (mm).
    needle_long_enough : bool
        Whether the entry→target length fits the needle's usable length.
    craniocaudal_angle_deg : float
        Angle out of the axial plane (gantry tilt needed); positive when the tip
        points toward the head.
    in_plane_angle_deg : float
        Angle of the axial projection from the vertical (anterior–posterior) axis,
        0–90°.
    approach : str
        Side the needle comes from, e.g. "anterior-right" (patient directions).
    clearances : dict of StructureClearance
        Per structure name.
    crossings : list of Crossing
        In order along the needle.
    pleural_crossings : int
        Entries into lung along the needle.
    length_in_structure_mm : dict
        Length travelled inside each structure (mm), e.g. liver parenchyma.
    target_structures : list of str
        Structures containing the target.
    capsule_angle_deg : float or None
        Angle between the needle and the normal of the target organ's capsule where
        the needle enters it (0 = perpendicular entry).
    verdict : Verdict
    reasons : list of str
    """

    entry_lps: tuple[float, float, float]
    target_lps: tuple[float, float, float]
    length_mm: float
    skin_lps: tuple[float, float, float] | None
    insertion_depth_mm: float
    needle: dict[str, Any]
    needle_long_enough: bool
    craniocaudal_angle_deg: float
    in_plane_angle_deg: float
    approach: str
    clearances: dict[str, StructureClearance]
    crossings: list[Crossing]
    pleural_crossings: int
    length_in_structure_mm: dict[str, float]
    target_structures: list[str]
    capsule_angle_deg: float | None
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)

    def min_forbidden_clearance(self) -> tuple[str, float] | None:
        """(name, clearance mm) of the forbidden structure closest to the needle."""
        items = [(c.name, c.clearance_mm) for c in self.clearances.values() if c.forbidden]
        return min(items, key=lambda x: x[1]) if items else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form with units in every key (stored in TrajectoryRecord.metrics)."""
        closest = self.min_forbidden_clearance()
        return {
            "length_mm": round(self.length_mm, 2),
            "insertion_depth_mm": round(self.insertion_depth_mm, 2),
            "skin_lps": _pt(self.skin_lps) if self.skin_lps is not None else None,
            "needle_long_enough": self.needle_long_enough,
            "craniocaudal_angle_deg": round(self.craniocaudal_angle_deg, 2),
            "in_plane_angle_deg": round(self.in_plane_angle_deg, 2),
            "approach": self.approach,
            "min_forbidden_clearance_mm": round(closest[1], 3) if closest else None,
            "closest_forbidden_structure": closest[0] if closest else None,
            "clearance_mm": {k: v.to_dict() for k, v in self.clearances.items()},
            "crossed_structures": [c.to_dict() for c in self.crossings],
            "pleural_crossings": self.pleural_crossings,
            "length_in_structure_mm": {k: round(v, 2)
                                       for k, v in self.length_in_structure_mm.items()},
            "target_structures": list(self.target_structures),
            "capsule_angle_deg": (round(self.capsule_angle_deg, 2)
                                  if self.capsule_angle_deg is not None else None),
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
        }
