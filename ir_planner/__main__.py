"""``python -m ir_planner`` runs the CLI (Ctrl-C during start-up exits 130 quietly)."""

import sys

try:
    from ir_planner.cli import run
except KeyboardInterrupt:
    print("ir-planner: interrupted", file=sys.stderr)
    sys.exit(130)

run()
