"""``python -m ir_planner`` runs the CLI."""

from ir_planner.cli import run

run()
