"""Helpers shared by the sub-commands: progress display, tables, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from ir_planner.core.errors import InputError
from ir_planner.core.progress import ProgressCallback

__all__ = ["progress_printer", "print_table", "print_json", "parse_point"]


def progress_printer(args: argparse.Namespace) -> ProgressCallback | None:
    """A progress callback drawing a bar on stderr (None with ``--quiet``).

    On a terminal the bar is redrawn in place; otherwise a line is printed per
    10 % step and per new message, so logs stay readable.
    """
    if getattr(args, "quiet", False):
        return None
    tty = sys.stderr.isatty()
    state = {"last_pct": -10, "last_msg": "", "t0": time.monotonic()}

    def show(fraction: float, message: str) -> None:
        pct = int(round(100 * fraction))
        elapsed = time.monotonic() - state["t0"]
        if tty:
            bar = "#" * (pct // 5) + "-" * (20 - pct // 5)
            end = "\n" if pct >= 100 else ""
            sys.stderr.write(f"\r[{bar}] {pct:3d}% {elapsed:6.1f} s  {message[:50]:<50}{end}")
            sys.stderr.flush()
        elif pct >= state["last_pct"] + 10 or message != state["last_msg"] or pct >= 100:
            sys.stderr.write(f"[{pct:3d}%] {elapsed:6.1f} s  {message}\n")
            state["last_pct"], state["last_msg"] = pct, message

    return show


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a plain-text table with aligned columns."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[c]) for r in cells) for c in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def print_json(data: Any) -> None:
    """Print data as indented JSON on stdout."""
    print(json.dumps(data, indent=2, default=str))


def parse_point(values: Sequence[float] | None, name: str) -> tuple[float, float, float] | None:
    """Validate an ``X Y Z`` argument (LPS mm)."""
    if values is None:
        return None
    import math

    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(f"{name} must be three finite numbers X Y Z (LPS mm); got {values}")
    return (float(values[0]), float(values[1]), float(values[2]))
