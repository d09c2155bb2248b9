"""Needle devices: gauge → outer diameter, usable length.

Outer diameters follow Stubs' (Birmingham) iron-wire gauge, the series that the
nominal outside diameters of ISO 9626 (stainless-steel needle tubing) are based
on; e.g. 18 G = 0.049 in = 1.245 mm, 17 G = 0.058 in = 1.473 mm. Clearances are
measured from the needle *surface*: axis distance minus the outer radius.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ir_planner.core.errors import InputError

__all__ = ["GAUGE_OUTER_DIAMETER_MM", "Needle", "DEFAULT_NEEDLE"]

#: Gauge → nominal outer diameter (mm), Stubs' iron-wire gauge (inch values × 25.4).
GAUGE_OUTER_DIAMETER_MM: dict[int, float] = {
    10: 3.404, 11: 3.048, 12: 2.769, 13: 2.413, 14: 2.108, 15: 1.829, 16: 1.651,
    17: 1.473, 18: 1.245, 19: 1.067, 20: 0.889, 21: 0.813, 22: 0.711, 23: 0.635,
    24: 0.559, 25: 0.508, 26: 0.457, 27: 0.406,
}


@dataclass(frozen=True)
class Needle:
    """A straight needle.

    Parameters
    ----------
    gauge : int
        Needle gauge (10–27 G); sets the outer diameter.
    usable_length_mm : float
        Length that can be inserted (from the hub to the tip), mm.
    name : str
        Free description ("17G coaxial 15 cm").
    """

    gauge: int = 17
    usable_length_mm: float = 150.0
    name: str = ""

    def __post_init__(self) -> None:
        if self.gauge not in GAUGE_OUTER_DIAMETER_MM:
            raise InputError(
                f"needle gauge {self.gauge} G is not in the table; use one of "
                f"{min(GAUGE_OUTER_DIAMETER_MM)}–{max(GAUGE_OUTER_DIAMETER_MM)} G"
            )
        if not self.usable_length_mm > 0:
            raise InputError(f"needle usable length must be > 0 mm; got {self.usable_length_mm}")

    @property
    def outer_diameter_mm(self) -> float:
        """Nominal outer diameter in mm (Stubs' gauge)."""
        return GAUGE_OUTER_DIAMETER_MM[self.gauge]

    @property
    def outer_radius_mm(self) -> float:
        """Half the outer diameter, mm."""
        return self.outer_diameter_mm / 2.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (units in keys)."""
        return {"gauge": self.gauge, "outer_diameter_mm": self.outer_diameter_mm,
                "usable_length_mm": self.usable_length_mm, "name": self.name}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Needle":
        """Inverse of :meth:`to_dict` (extra keys ignored)."""
        return cls(gauge=int(data.get("gauge", 17)),
                   usable_length_mm=float(data.get("usable_length_mm", 150.0)),
                   name=str(data.get("name", "")))


DEFAULT_NEEDLE = Needle()
