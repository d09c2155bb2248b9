"""Re-export of :mod:`ir_planner.bridge.sitk` (the conversions live there)."""

from ir_planner.bridge.sitk import from_sitk, to_sitk

__all__ = ["to_sitk", "from_sitk"]
