"""IR Planner: planning and guidance for percutaneous needle procedures.

Research software, not a certified medical device.
"""

import os as _os
import signal as _signal
import sys as _sys

__version__ = "0.1.0"


def _start_up_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C during the command's start-up imports: one line, exit 130, no traceback."""
    _sys.stderr.write("ir-planner: interrupted\n")
    _sys.stderr.flush()
    _os._exit(130)


def _is_command_process() -> bool:
    """Whether this process is the ``ir-planner`` command (script or ``python -m``)."""
    argv0 = _sys.argv[0] if _sys.argv else ""
    orig = list(getattr(_sys, "orig_argv", []))
    as_module = any(a == "-m" and b == "ir_planner" for a, b in zip(orig, orig[1:]))
    return _os.path.basename(argv0) == "ir-planner" or as_module


# The command's imports take seconds; until ir_planner.cli.main() has started,
# Ctrl-C ends the process quietly (main() then restores KeyboardInterrupt).
if _is_command_process() and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _start_up_interrupt)
