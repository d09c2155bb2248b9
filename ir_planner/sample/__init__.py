"""The project's own synthetic sample case and the registry of public datasets.

* :mod:`ir_planner.sample.phantom` — :func:`make_phantom`, a synthetic abdominal CT with labels.
* :mod:`ir_planner.sample.intraop` — :func:`make_intraop_scan`, the matching intra-op scan
  with a needle and its ground truth.
* :mod:`ir_planner.sample.case` — :func:`generate_sample_case`, :func:`ensure_sample_case`,
  :func:`sample_case_dir`: the DICOM/NIfTI sample case on disk.
* :mod:`ir_planner.sample.datasets` — public real datasets: list, fetch, verify.

Names are imported lazily (``from ir_planner.sample import make_phantom`` works).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "make_phantom": "phantom",
    "make_intraop_scan": "intraop",
    "IntraopScan": "intraop",
    "SampleCase": "case",
    "generate_sample_case": "case",
    "ensure_sample_case": "case",
    "sample_case_dir": "case",
    "load_registry": "datasets",
    "fetch_dataset": "datasets",
    "verify_dataset": "datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"ir_planner.sample.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'ir_planner.sample' has no attribute {name!r}")
