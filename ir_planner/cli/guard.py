"""The output guard applied to every sub-command before it runs.

Outputs are the arguments whose destination is ``out`` or ends in ``_out`` (and the
few listed in :data:`EXTRA_OUTPUTS`); every
other argument naming an existing file or folder is an input. A label-map output
also writes ``<stem>.labels.json`` (and ``<stem>.layerN<suffix>``); a label-map
input is read with its sidecar. :func:`command_files` gathers both lists and
:func:`~ir_planner.core.fileio.check_outputs` refuses any output that is an input
(whatever the spelling) or another output.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ir_planner.core.errors import InputError, OutputError
from ir_planner.core.fileio import check_outputs, same_file
from ir_planner.io.image_files import IMAGE_SUFFIXES

__all__ = ["command_files", "check_command_outputs"]


#: Output options not named ``--out``/``--*-out`` (``live --events``, ``live --record``).
EXTRA_OUTPUTS = frozenset({"events", "record"})


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-") if dest != "out" else "output"


def _paths(value: Any) -> Iterable[Path]:
    if isinstance(value, (str, os.PathLike)) and str(value):
        yield Path(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _paths(v)


def _image_suffix(p: Path) -> str | None:
    name = p.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def _companions(p: Path) -> list[Path]:
    """The sidecar and first extra layer files written/read with a label map ``p``."""
    suffix = _image_suffix(p)
    if suffix is None:
        return []
    stem = p.name[: len(p.name) - len(suffix)]
    return [p.with_name(stem + ".labels.json")] + [
        p.with_name(f"{stem}.layer{n}{suffix}") for n in range(1, 9)
    ]


def command_files(args: argparse.Namespace) -> tuple[list[tuple[str, Path]], list[Path]]:
    """The outputs (``(option, path)``) and the inputs of a parsed command line."""
    outputs: list[tuple[str, Path]] = []
    inputs: list[Path] = []
    for dest, value in sorted(vars(args).items()):
        if dest in ("func", "command"):
            continue
        if dest == "out" or dest.endswith("_out") or dest in EXTRA_OUTPUTS:
            for p in _paths(value):
                outputs.append((_option(dest), p))
        else:
            for p in _paths(value):
                try:
                    exists = p.exists()
                except (OSError, ValueError):
                    exists = False
                if exists:
                    inputs.append(p)
                    inputs.extend(c for c in _companions(p) if c.exists())
    return outputs, inputs


def check_command_outputs(args: argparse.Namespace) -> list[Path]:
    """Refuse outputs that are inputs or each other; returns the inputs found.

    Raises
    ------
    OutputError
        Naming the option, the output and the input it would replace.
    """
    outputs, inputs = command_files(args)
    files: list[tuple[str, Path]] = []
    for what, p in outputs:
        if p.is_dir():  # a folder output (demo --out) must not be an input folder
            for inp in inputs:
                if same_file(inp, p):
                    raise OutputError(f"{what} {p} is the input {inp}; choose another folder")
            continue
        files.append((what, p))
        if what == "--labels-out" or (getattr(args, "command", "") == "segment"
                                      and what == "output"):
            files.extend((f"{what} sidecar", c) for c in _companions(p)[:1])
    check_outputs(files, inputs)
    return inputs


#: Ranges of numeric options that reach planning or ablation and that no command checks
#: itself (inclusive). The commands check the others (--calibration, --margin, angles).
NUMBER_RANGES: dict[str, tuple[float, float, str]] = {
    "needle_length": (1.0, 1000.0, "mm"),
    "lesion_radius": (0.5, 100.0, "mm"),
    "radius": (0.5, 100.0, "mm"),
    "depth_offset": (-300.0, 300.0, "mm"),
    "timeout": (0.1, 3600.0, "s"),
}


def check_numbers(args: argparse.Namespace) -> None:
    """Every number given on the command line is finite and, where known, in range.

    Raises
    ------
    InputError
        Naming the option and the accepted range.
    """
    for dest, value in sorted(vars(args).items()):
        if dest in ("func", "command"):
            continue
        option = "--" + dest.replace("_", "-")
        for v in _numbers(value):
            if not math.isfinite(v):
                raise InputError(f"{option} must be a finite number; got {v}")
            if dest in NUMBER_RANGES:
                lo, hi, unit = NUMBER_RANGES[dest]
                if not lo <= v <= hi:
                    raise InputError(
                        f"{option} must be from {lo:g} to {hi:g}{' ' + unit if unit else ''}; "
                        f"got {v:g}"
                    )


def _numbers(value: Any) -> Iterable[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, float):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)
