"""Hypothesis profiles of the fuzzing suite.

``ci`` (default): a bounded, derandomised budget so the suite is reproducible and
cheap. ``long``: the run for the benchmark machine (see docs/input_checks.md)::

    IR_PLANNER_FUZZ_PROFILE=long .venv/bin/python -m pytest tests/fuzz -p no:xdist

(``IR_PLANNER_FUZZ_EXAMPLES`` changes the number of examples per reader.)
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.function_scoped_fixture])
settings.register_profile("ci", max_examples=40, derandomize=True, **_COMMON)  # type: ignore[arg-type]
settings.register_profile(
    "long", max_examples=int(os.environ.get("IR_PLANNER_FUZZ_EXAMPLES", "5000")), **_COMMON
)  # type: ignore[arg-type]
settings.load_profile(os.environ.get("IR_PLANNER_FUZZ_PROFILE", "ci"))
