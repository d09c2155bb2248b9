"""The site's catalog file (``ir-planner-device/1`` JSON, see IR Planner's docs/ablation.md)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["catalog_files"]


def catalog_files() -> list[Path]:
    """Catalog files of this site, read by IR Planner's device catalog."""
    return [Path(__file__).with_name("site_devices.json")]
