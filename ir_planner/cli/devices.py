"""``ir-planner devices``: list the needle / ablation device catalog with its sources."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ir_planner.cli.common import print_json, print_table
from ir_planner.planning.ablation.devices import Device, load_catalog, user_devices_dir

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``devices`` sub-command."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "devices", help="list biopsy needles and ablation devices with cited zone sizes",
        description="List the device catalog: built-in files, plugins (entry-point group "
        "'ir_planner.devices') and the user's folder ($IR_PLANNER_DEVICES_DIR or "
        f"{user_devices_dir()}). Every zone number names its source.")
    p.add_argument("--json", action="store_true", help="print the full catalog as JSON")
    p.add_argument("--kind", choices=["microwave", "radiofrequency", "cryo", "biopsy"],
                   help="only devices of this kind")
    p.set_defaults(func=run)


def _zone_text(device: Device, zone: dict[str, Any]) -> str:
    if device.is_heat:
        where = (f"edge {zone['distal_edge_beyond_tip_mm']:g} mm past tip"
                 if "distal_edge_beyond_tip_mm" in zone
                 else f"centre {zone['tip_to_centre_mm']:g} mm behind tip")
        return f"{zone['length_mm']:g} x {zone['diameter_mm']:g} mm, {where}"
    radii = ", ".join(f"{t} C @ {r:g} mm" for t, r in sorted(
        zone["isotherm_radii_mm"].items(), key=lambda kv: float(kv[0])))
    return f"isotherms {radii}; lethal {zone['lethal_isotherm_c']:g} C"


def run(args: argparse.Namespace) -> int:
    """List the catalog."""
    catalog = load_catalog()
    devices = catalog.devices(args.kind)
    for w in catalog.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print_json([d.to_dict() for d in devices])
        return 0
    rows = []
    for d in devices:
        if not d.settings:
            size = (f"OD {d.outer_diameter_mm:g} mm" if d.outer_diameter_mm else "")
            rows.append([d.id, d.kind, "-", size, ",".join(sorted(set(d.cite.values())))])
            continue
        for s in d.settings:
            cites = sorted(set(s.cite.values()) | set(d.cite.values()))
            assumed = f" (assumed: {', '.join(s.assumed)})" if s.assumed else ""
            rows.append([d.id, d.kind, f"{s.name} [{s.label()}]", _zone_text(d, s.zone) + assumed,
                         ",".join(cites)])
    print_table(["device", "kind", "setting", "zone", "sources"], rows)
    refs: dict[str, str] = {}
    for d in devices:
        refs.update(d.references)
    if refs:
        print("\nSources:")
        for key in sorted(refs):
            print(f"  [{key}] {refs[key]}")
    print("\nZones are vendor/study values; measured zones are often smaller (e.g. 23 % for "
          "the NeuWave PR at 65 W 10 min): use --calibration in 'ir-planner ablate'.")
    return 0
