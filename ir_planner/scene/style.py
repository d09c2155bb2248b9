"""Display style: structure colours and opacities, CT window presets, colour scales.

Colours come from the structure catalog (:mod:`ir_planner.core.catalog`, carried on
each :class:`~ir_planner.core.labels.Structure`); opacities per category are set
here so that what a needle must avoid is solid and what it passes through is
see-through.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ir_planner.core.catalog import Category
from ir_planner.core.errors import InputError
from ir_planner.core.labels import Structure
from ir_planner.core.volume import ImageVolume

__all__ = [
    "CATEGORY_OPACITY",
    "structure_opacity",
    "structure_color",
    "structure_visible_by_default",
    "WindowLevel",
    "WindowPreset",
    "WINDOW_PRESETS",
    "window_preset",
    "auto_window",
    "default_window",
    "apply_window",
    "clearance_colors",
    "risk_colors",
    "CLEARANCE_SAFE_RGB",
    "CLEARANCE_CAUTION_RGB",
    "CLEARANCE_UNSAFE_RGB",
]

#: Default opacity by category: structures to avoid are solid, organs the needle
#: traverses are translucent, the body outline faint.
CATEGORY_OPACITY: dict[Category, float] = {
    Category.VESSEL: 1.0,
    Category.BONE: 1.0,
    Category.NERVE: 1.0,
    Category.TARGET: 1.0,
    Category.AIRWAY: 0.8,
    Category.BOWEL: 0.4,
    Category.LUNG: 0.2,
    Category.SOLID_ORGAN: 0.4,
    Category.MUSCLE: 0.08,
    Category.BODY: 0.1,
    Category.OTHER: 0.5,
}


def structure_opacity(structure: Structure) -> float:
    """Default display opacity (0–1) of a structure, from its category."""
    return CATEGORY_OPACITY.get(structure.category, 0.5)


def structure_visible_by_default(structure: Structure) -> bool:
    """Whether a structure is shown when a case opens: fat layers hide everything
    under them and are off until the user turns them on."""
    return "fat" not in structure.name.lower().split("_")


def structure_color(structure: Structure) -> tuple[float, float, float]:
    """Display RGB (0–1) of a structure: the catalog colour it carries."""
    r, g, b = (float(min(1.0, max(0.0, c))) for c in structure.color)
    return (r, g, b)


@dataclass(frozen=True)
class WindowLevel:
    """A display window: intensities ``level ± width/2`` map to black…white.

    Attributes
    ----------
    width : float
        Window width (image units, HU on CT), > 0.
    level : float
        Window centre (image units).
    """

    width: float
    level: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.width) or self.width <= 0:
            raise InputError(f"window width must be > 0; got {self.width}")
        if not np.isfinite(self.level):
            raise InputError(f"window level must be finite; got {self.level}")

    @property
    def low(self) -> float:
        """Intensity shown black."""
        return self.level - self.width / 2.0

    @property
    def high(self) -> float:
        """Intensity shown white."""
        return self.level + self.width / 2.0

    def dragged(self, d_width: float, d_level: float) -> "WindowLevel":
        """The window after a W/L drag (width kept ≥ 1)."""
        return WindowLevel(max(1.0, self.width + d_width), self.level + d_level)


class WindowPreset(str, Enum):  # noqa: UP042 (str(preset) keeps the value)
    """Named CT windows (Hounsfield units)."""

    ABDOMEN = "abdomen"
    LIVER = "liver"
    LUNG = "lung"
    BONE = "bone"


#: W/L of each CT preset (HU): the usual radiology reading windows.
WINDOW_PRESETS: dict[WindowPreset, WindowLevel] = {
    WindowPreset.ABDOMEN: WindowLevel(400.0, 40.0),
    WindowPreset.LIVER: WindowLevel(150.0, 60.0),
    WindowPreset.LUNG: WindowLevel(1500.0, -600.0),
    WindowPreset.BONE: WindowLevel(1800.0, 400.0),
}


def window_preset(name: str | WindowPreset) -> WindowLevel:
    """The W/L of a CT preset by name (``"abdomen"``, ``"liver"``, ``"lung"``, ``"bone"``)."""
    try:
        return WINDOW_PRESETS[WindowPreset(str(getattr(name, "value", name)).lower())]
    except ValueError as exc:
        raise InputError(f"unknown window preset {name!r}; use one of "
                         f"{[p.value for p in WindowPreset]} or a custom W/L") from exc


def auto_window(values: ArrayLike, *, low_percentile: float = 0.5,
                high_percentile: float = 99.5) -> WindowLevel:
    """A window from intensity percentiles of the non-zero voxels (MR, non-HU images).

    Parameters
    ----------
    values : array_like
        Image intensities (any shape); sampled to at most ~1 M values.
    low_percentile, high_percentile : float
        Percentiles mapped to black and white.
    """
    arr = np.asarray(values).ravel()
    if arr.size > 1_000_000:
        arr = arr[:: arr.size // 1_000_000 + 1]
    arr = arr[np.isfinite(arr)]
    nz = arr[arr != 0]
    data = nz if nz.size >= max(16, arr.size // 100) else arr
    if data.size == 0:
        return WindowLevel(1.0, 0.0)
    lo, hi = np.percentile(data.astype(np.float64), [low_percentile, high_percentile])
    width = float(max(hi - lo, 1e-3))
    return WindowLevel(width, float(lo + width / 2.0))


def default_window(volume: ImageVolume) -> WindowLevel:
    """Abdomen window for CT, percentile auto-window for anything else."""
    if volume.modality.upper() == "CT":
        return WINDOW_PRESETS[WindowPreset.ABDOMEN]
    return auto_window(volume.array)


def apply_window(values: ArrayLike, window: WindowLevel) -> NDArray[np.uint8]:
    """Intensities → grey levels 0–255 through ``window``."""
    v = np.asarray(values, dtype=np.float32)
    out = (v - np.float32(window.low)) * np.float32(255.0 / window.width)
    return np.clip(out, 0, 255).astype(np.uint8)


CLEARANCE_SAFE_RGB = (0.10, 0.80, 0.25)
CLEARANCE_CAUTION_RGB = (1.00, 0.70, 0.05)
CLEARANCE_UNSAFE_RGB = (0.90, 0.05, 0.05)


def clearance_colors(slack_mm: ArrayLike, *, caution_band_mm: float = 2.0
                     ) -> NDArray[np.float64]:
    """RGB (n, 3) for clearance slack values (clearance − margin, mm).

    Below 0 mm: red (the margin is violated); from 0 to ``caution_band_mm``: red →
    amber → green; beyond: green. ``inf`` (nothing near) is green.
    """
    s = np.asarray(slack_mm, dtype=float).reshape(-1)
    red, amber, green = (np.array(c) for c in (CLEARANCE_UNSAFE_RGB, CLEARANCE_CAUTION_RGB,
                                                CLEARANCE_SAFE_RGB))
    t = np.clip(np.where(np.isfinite(s), s, caution_band_mm) / max(caution_band_mm, 1e-6),
                0.0, 1.0)
    out = np.where((t < 0.5)[:, None], red + (amber - red) * (2 * t)[:, None],
                   amber + (green - amber) * (2 * t - 1)[:, None])
    out[s < 0] = red
    return out


def risk_colors(risk: ArrayLike, feasible: ArrayLike | None = None) -> NDArray[np.float64]:
    """RGB (n, 3) for search risk values (0 best → green, 1 → red); infeasible grey."""
    r = np.clip(np.asarray(risk, dtype=float).reshape(-1), 0.0, 1.0)
    green, amber, red = (np.array(c) for c in (CLEARANCE_SAFE_RGB, CLEARANCE_CAUTION_RGB,
                                                CLEARANCE_UNSAFE_RGB))
    out = np.where((r < 0.5)[:, None], green + (amber - green) * (2 * r)[:, None],
                   amber + (red - amber) * (2 * r - 1)[:, None])
    if feasible is not None:
        out[~np.asarray(feasible, dtype=bool).reshape(-1)] = (0.55, 0.55, 0.58)
    return out
