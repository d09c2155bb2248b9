"""Fixtures: the sample case (planning CT + intra-op scan with truth) and a plan on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ir_planner.core.plan import CaseRef, Plan, TrajectoryRecord
from ir_planner.sample.case import SampleCase, generate_sample_case


@pytest.fixture(scope="session")
def sample_case(tmp_path_factory: pytest.TempPathFactory) -> SampleCase:
    """The default sample case (seed 0): 256×256×96 planning CT, 36-slice intra-op slab."""
    return generate_sample_case(tmp_path_factory.mktemp("intraop") / "case", seed=0)


@pytest.fixture(scope="session")
def truth(sample_case: SampleCase) -> dict[str, Any]:
    return sample_case.read_truth()


@pytest.fixture(scope="session")
def plan_file(sample_case: SampleCase, truth: dict[str, Any],
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plan on the sample case: trajectory T1 along the generator's safe path."""
    manifest = sample_case.read_manifest()
    plan = Plan(case=CaseRef(image_path=str(sample_case.planning_dicom_dir),
                             labels_path=str(sample_case.planning_labels),
                             patient_id=manifest["patient_id"]))
    target = tuple(truth["target"]["centre_plan_lps_mm"])
    plan.target_structure = truth["target"]["structure"]
    plan.target_lps = target  # type: ignore[assignment]
    plan.add_trajectory(TrajectoryRecord(name="T1", entry_lps=tuple(
        truth["needle"]["entry_plan_lps_mm"]), target_lps=target, metrics={"verdict": "safe"}))
    out = tmp_path_factory.mktemp("plan") / "plan.json"
    plan.save(out)
    return out
