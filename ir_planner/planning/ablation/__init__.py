"""Ablation planning: device catalog, zones on trajectories, coverage/margins, optimisation.

All coordinates are DICOM patient LPS in millimetres. See ``docs/ablation.md``.

Examples
--------
>>> from ir_planner.planning.ablation import load_catalog, Probe, zone_for, TumourModel, evaluate
>>> device = load_catalog().get("neuwave-pr")
>>> probe = Probe.on_trajectory(device, "65W-10min", (0, -100, 0), (0, 0, 0))
>>> tumour = TumourModel.sphere((0, -12, 0), 10.0)
>>> m = evaluate(zone_for(probe), tumour)
>>> round(m.coverage_pct)
100
"""

from ir_planner.planning.ablation.coverage import (
    SHELLS_MM,
    AblationMetrics,
    CriticalModel,
    TumourModel,
    evaluate,
    margins,
)
from ir_planner.planning.ablation.devices import (
    Device,
    DeviceCatalog,
    DeviceSetting,
    get_device,
    load_catalog,
    user_devices_dir,
)
from ir_planner.planning.ablation.optimize import (
    Candidate,
    OptimizationResult,
    ProbePlacement,
    engine_safety,
    optimize_multi,
    optimize_single,
)
from ir_planner.planning.ablation.zones import (
    CRYO_COMBINE_P,
    CryoZone,
    EllipsoidZone,
    HeatZone,
    Probe,
    voxelise,
    zone_for,
)

__all__ = [
    "SHELLS_MM", "AblationMetrics", "CriticalModel", "TumourModel", "evaluate", "margins",
    "Device", "DeviceCatalog", "DeviceSetting", "get_device", "load_catalog",
    "user_devices_dir", "Candidate", "OptimizationResult", "ProbePlacement", "engine_safety",
    "optimize_multi", "optimize_single", "CRYO_COMBINE_P", "CryoZone", "EllipsoidZone",
    "HeatZone", "Probe", "voxelise", "zone_for",
]
