"""Trajectory metrics, automatic path search, ablation devices, zones and coverage.

Imports neither VTK nor Qt (enforced by import-linter). See docs/planning.md.
"""

from ir_planner.planning.devices import DEFAULT_NEEDLE, GAUGE_OUTER_DIAMETER_MM, Needle
from ir_planner.planning.engine import PlanningEngine, effective_structures
from ir_planner.planning.metrics import (
    Crossing,
    StructureClearance,
    TrajectoryMetrics,
    Verdict,
)
from ir_planner.planning.search import SearchConstraints, SearchResult, SearchWeights

__all__ = [
    "DEFAULT_NEEDLE",
    "GAUGE_OUTER_DIAMETER_MM",
    "Needle",
    "PlanningEngine",
    "effective_structures",
    "Crossing",
    "StructureClearance",
    "TrajectoryMetrics",
    "Verdict",
    "SearchConstraints",
    "SearchResult",
    "SearchWeights",
]
