"""Generate the IR Planner synthetic sample case (thin wrapper over ir_planner.sample).

Usage::

    python sample_data/generate.py                 # -> sample_data/generated (seed 0)
    python sample_data/generate.py --seed 3 --out /tmp/case3

The data is synthetic (not patient data); see sample_data/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Generate the case; returns the exit code."""
    from ir_planner.core.errors import IRPlannerError
    from ir_planner.sample.case import generate_sample_case, sample_case_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: sample_data/generated, or "
                        "$IR_PLANNER_SAMPLE_DIR)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else sample_case_dir(args.seed)

    def progress(fraction: float, message: str) -> None:
        print(f"[{100 * fraction:5.1f}%] {message}", file=sys.stderr)

    try:
        case = generate_sample_case(out, seed=args.seed, progress=progress)
    except IRPlannerError as exc:
        print(f"generate.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"synthetic sample case written to {case.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
