"""``ir-planner plugins``: every plugin, what it contributes, its version and status."""

from __future__ import annotations

import argparse
from typing import Any

from ir_planner.cli.common import print_json, print_table
from ir_planner.core.plugins import ENTRY_POINT_GROUP, KINDS, Status, get_registry

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``plugins`` sub-command."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "plugins", help="list plugins, what they contribute, their version and status",
        description="List the plugins (entry-point group "
        f"'{ENTRY_POINT_GROUP}', IR Planner's own included): each contribution (reader, "
        "exporter, segmenter, device catalog, search constraint or risk term, live source, "
        "GUI panel), its version, the IR Planner versions it supports and its status: "
        "available (declared, not imported), loaded (imported without error) or failed "
        "(with the reason). A failed plugin is skipped; everything else keeps working.")
    p.add_argument("--load", action="store_true",
                   help="import every contribution now, to check that it loads")
    p.add_argument("--kind", choices=KINDS, help="only contributions of this kind")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List the plugins; returns 0 (failed plugins are reported, not fatal)."""
    registry = get_registry()
    if args.load:
        registry.load_all()
    plugins = registry.plugins()
    if args.json:
        data = [p.to_dict() for p in plugins]
        if args.kind:
            for d in data:
                contributions = d["contributions"]
                assert isinstance(contributions, list)
                d["contributions"] = [c for c in contributions if c["kind"] == args.kind]
        print_json(data)
        return 0
    rows: list[list[str]] = []
    for p in plugins:
        version = p.version or "-"
        supports = p.ir_planner_version or "any"
        shown = [c for c in p.contributions if not args.kind or c.kind.value == args.kind]
        if not p.contributions:
            rows.append([p.name, version, supports, "-", "-", p.status.value, ""])
        for c in shown:
            status = Status.FAILED if p.status is Status.FAILED else c.status
            rows.append([p.name, version, supports, c.kind.value, c.id, status.value, c.title])
    if not plugins:
        print("no plugins found (is IR Planner installed? pip install -e .)")
        return 0
    print_table(["plugin", "version", "supports", "kind", "contribution", "status",
                 "title"], rows)
    problems = [p for p in plugins if p.overall_status is Status.FAILED]
    if problems:
        print("\nFailed (skipped; the rest of IR Planner works):")
        for p in problems:
            if p.reason:
                print(f"  {p.name}: {p.reason}")
            for c in p.contributions:
                if c.status is Status.FAILED:
                    print(f"  {p.name}: {c.kind.value} {c.id!r} ({c.python_name}): {c.reason}")
    print("\nSources:")
    for p in plugins:
        legacy = " [legacy entry-point group]" if p.legacy else ""
        print(f"  {p.name}: {p.source}{legacy}")
    return 0
