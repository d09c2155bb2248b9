"""The ``ir-planner`` command.

Each sub-command lives in its own module of this package exposing
``register(subparsers)``, which adds its parser and sets ``func`` (called with the
parsed arguments, returning an exit code). Expected failures
(:class:`~ir_planner.core.errors.IRPlannerError`) print one clear line and exit 2;
a bug prints a traceback and exits 1. Ctrl-C exits 130 with one line, also during
the start-up imports (seconds on a loaded machine).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from ir_planner import __version__
from ir_planner.core.errors import IRPlannerError

__all__ = ["main", "COMMAND_MODULES"]

#: Sub-command modules, in the order shown by ``--help``.
COMMAND_MODULES: list[str] = [
    "info",
    "convert",
    "labels",
    "segment",
    "plan",
    "ablate",
    "devices",
    "plugins",
    "datasets",
    "demo",
    "live",
    "render",
    "gui",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="ir-planner",
        description="Plan and guide percutaneous needle procedures (research use only, "
        "not a medical device). Coordinates are DICOM patient LPS in millimetres.",
    )
    parser.add_argument("--version", action="version", version=f"ir-planner {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"ir_planner.cli.{name}") is None:
            continue  # command not part of this build
        try:
            module = importlib.import_module(f"ir_planner.cli.{name}")
        except ImportError as exc:
            # One command with a missing dependency must not take the others down.
            _register_unavailable(sub, name, exc)
            continue
        module.register(sub)
    return parser


def _register_unavailable(sub: Any, name: str, exc: ImportError) -> None:
    """Register ``name`` as a command that explains why it cannot run."""
    reason = f"{type(exc).__name__}: {exc}"
    parser = sub.add_parser(name, help=f"(unavailable: {reason})", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def unavailable(args: argparse.Namespace) -> int:
        raise IRPlannerError(
            f"this command cannot run because a dependency failed to import ({reason}); "
            "reinstall IR Planner with its dependencies (bash scripts/setup_env.sh)"
        )

    parser.set_defaults(func=unavailable)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    Expected failures print one line and return 2; an interrupt (Ctrl-C), also
    during the start-up imports, returns 130.
    """
    command = "ir-planner"
    try:
        parser = build_parser()
        if getattr(signal.getsignal(signal.SIGINT), "__name__", "") == "_start_up_interrupt":
            signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt again
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        command = f"ir-planner {args.command}"
        from ir_planner.cli.guard import check_command_outputs, check_numbers
        from ir_planner.core.fileio import guarded_inputs

        check_numbers(args)
        inputs = check_command_outputs(args)
        with guarded_inputs(inputs):
            return int(args.func(args) or 0)
    except IRPlannerError as exc:
        print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        print(f"{command}: error: {exc.strerror or exc}: "
              f"{exc.filename or ''}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{command}: error: out of memory (input too large for this machine?)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # output piped into a command that stopped reading (``| head``): not an error
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        except OSError:
            pass
        return 0


def _one_line(exc: BaseException) -> str:
    """The message of an expected error on one line."""
    return " ".join(str(exc).split())


def run() -> None:
    """Console-script entry point."""
    try:
        code = main()
    except KeyboardInterrupt:  # between the handlers above and here
        print("ir-planner: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
