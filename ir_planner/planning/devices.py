"""Needle devices: gauge → outer diameter, usable length.

The outer diameter of each gauge is read from the device catalog's package data,
``ir_planner/data/devices/biopsy_needles.json`` (the one gauge table of the
project; the ablation catalog reads the same file): the **nominal outer diameter
of regular-wall needle tubing** from the needle gauge comparison chart (the
series ISO 9626 designates by gauge; the standard's own min/max limits were not
available, see the file's ``references``), e.g. 17 G = 1.473 mm, 18 G = 1.270 mm,
20 G = 0.9081 mm, 22 G = 0.7176 mm. These tubing values are at least as large as
the Stubs' wire-gauge values used before (18 G 1.245 mm), i.e. conservative for
clearance. Only the gauges in that file (13–22 G) are accepted: no uncited number.

Clearances are measured from the needle *surface*: axis distance minus the outer
radius.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ir_planner.core.errors import InputError

__all__ = ["GAUGE_OUTER_DIAMETER_MM", "GAUGE_TABLE_SOURCE", "Needle", "DEFAULT_NEEDLE",
           "load_gauge_table"]

_FILE = "biopsy_needles.json"


def load_gauge_table() -> tuple[dict[int, float], str]:
    """Gauge → nominal outer diameter (mm), read from the catalog's package data.

    Returns
    -------
    table : dict of int to float
        Gauge → outer diameter in mm, for every biopsy needle in
        ``ir_planner/data/devices/biopsy_needles.json``.
    source : str
        The reference text cited for the diameters (the file's ``references``).

    Raises
    ------
    InputError
        If the package data file is missing or malformed (a broken installation),
        or two entries give the same gauge different diameters.
    """
    try:
        text = (resources.files("ir_planner") / "data" / "devices" / _FILE).read_text(
            encoding="utf-8")
        doc = json.loads(text)
        devices = doc["devices"]
        refs = doc.get("references", {})
    except (OSError, ValueError, KeyError, TypeError, ModuleNotFoundError) as exc:
        raise InputError(f"needle gauge table ir_planner/data/devices/{_FILE} cannot be read ({exc}); "
                         "reinstall ir-planner") from exc
    table: dict[int, float] = {}
    cited: set[str] = set()
    for dev in devices:
        if dev.get("kind") != "biopsy" or dev.get("gauge") is None:
            continue
        gauge, od_mm = int(dev["gauge"]), float(dev["outer_diameter_mm"])
        if gauge in table and table[gauge] != od_mm:
            raise InputError(f"{_FILE}: gauge {gauge} G has two outer diameters "
                             f"({table[gauge]} and {od_mm} mm)")
        table[gauge] = od_mm
        key = dev.get("cite", {}).get("outer_diameter_mm")
        if key:
            cited.add(str(key))
    if not table:
        raise InputError(f"ir_planner/data/devices/{_FILE} holds no biopsy needle gauge; reinstall ir-planner")
    source = " | ".join(str(refs.get(k, k)) for k in sorted(cited))
    return dict(sorted(table.items())), source


#: Gauge → nominal outer diameter (mm): regular-wall needle tubing (gauge chart), read
#: from ``ir_planner/data/devices/biopsy_needles.json``.
GAUGE_OUTER_DIAMETER_MM: dict[int, float]
#: The reference cited for :data:`GAUGE_OUTER_DIAMETER_MM`.
GAUGE_TABLE_SOURCE: str
GAUGE_OUTER_DIAMETER_MM, GAUGE_TABLE_SOURCE = load_gauge_table()


@dataclass(frozen=True)
class Needle:
    """A straight needle.

    Parameters
    ----------
    gauge : int
        Needle gauge (13–22 G, the gauges of the catalog); sets the outer diameter.
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
                f"needle gauge {self.gauge} G is not in the gauge table "
                f"(ir_planner/data/devices/{_FILE}); use one of "
                f"{min(GAUGE_OUTER_DIAMETER_MM)}–{max(GAUGE_OUTER_DIAMETER_MM)} G"
            )
        if not (math.isfinite(self.usable_length_mm) and 0 < self.usable_length_mm <= 1000):
            raise InputError(
                f"needle usable length must be a finite number > 0 and ≤ 1000 mm; got "
                f"{self.usable_length_mm}"
            )

    @property
    def outer_diameter_mm(self) -> float:
        """Nominal outer diameter in mm (regular-wall needle tubing, gauge chart)."""
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
