"""Hypothesis fuzzing of the NIfTI, DICOM, label-table and plan readers (in process).

Oracle for every reader: it either raises an :class:`IRPlannerError` (a one-line
user error) or returns an object that satisfies the invariants the planner relies
on (finite invertible geometry, spacing > 0, finite intensities, margins finite and
in range). Stronger oracles where the format allows one: a gzip file whose bytes
changed after its header, or any truncated file, never yields a volume different
from the original. Allocation is bounded by a small memory budget.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ir_planner.core.errors import IRPlannerError
from ir_planner.core.plan import Plan
from ir_planner.core.volume import ImageVolume
from ir_planner.io.dicom import read_dicom_series
from ir_planner.io.image_files import read_image_file
from ir_planner.io.seg_tables import read_names_table
from ir_planner.io.segmentation import load_labels
from tests.fuzz import corpus


@contextlib.contextmanager
def small_budget(mb: int = 64) -> Iterator[None]:
    old = os.environ.get("IR_PLANNER_MEMORY_BUDGET_MB")
    os.environ["IR_PLANNER_MEMORY_BUDGET_MB"] = str(mb)
    try:
        yield
    finally:
        if old is None:
            del os.environ["IR_PLANNER_MEMORY_BUDGET_MB"]
        else:
            os.environ["IR_PLANNER_MEMORY_BUDGET_MB"] = old


def assert_sane(volume: ImageVolume) -> None:
    affine = volume.index_to_lps
    assert np.all(np.isfinite(affine))
    assert abs(np.linalg.det(affine[:3, :3])) > 0
    assert np.all(volume.spacing_mm > 0)
    if volume.array.dtype.kind == "f":
        assert np.all(np.isfinite(volume.array))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("seeds")
    nii = corpus.write_image(d / "seed.nii")
    niigz = corpus.write_image(d / "seed.nii.gz")
    lm = corpus.label_map(d, name="lm.nii")
    series = corpus.dicom_series(d / "dcm")
    return {
        "nii": nii.read_bytes(), "niigz": niigz.read_bytes(), "lm": lm.read_bytes(),
        "volume": read_image_file(nii), "dicom": [p.read_bytes() for p in series],
        "dicom_names": [p.name for p in series],
        "dicom_volume": read_dicom_series(d / "dcm"),
    }


NIFTI_VALUES = st.sampled_from(
    [0.0, -1.0, 1.0, float("nan"), float("inf"), -float("inf"), 1e38, -1e38, 32767.0,
     -32768.0, 348.0, 352.0, 1e-30, 2.0, 64.0, 1024.0, 1280.0, 32.0]
) | st.floats(allow_nan=True, allow_infinity=True, width=32)
FIELD_EDITS = st.lists(st.tuples(st.sampled_from(sorted(corpus.NIFTI_FIELDS)), NIFTI_VALUES),
                       min_size=1, max_size=4)
BYTE_EDITS = st.lists(st.tuples(st.integers(0, 351), st.integers(0, 255)), max_size=6)


def _apply(raw: bytes, fields: list[tuple[str, float]], edits: list[tuple[int, int]]) -> bytes:
    for name, value in fields:
        offset, fmt = corpus.NIFTI_FIELDS[name]
        if fmt in "hi":
            if not math.isfinite(value):
                continue
            value = int(max(-32768, min(32767, value))) if fmt == "h" else int(
                max(-2**31, min(2**31 - 1, value)))
        raw = corpus.patch(raw, name, value)
    data = bytearray(raw)
    for offset, byte in edits:
        data[offset] = byte
    return bytes(data)


def _size_edited(fields: list[tuple[str, float]], edits: Sequence[tuple[int, int]] = ()) -> bool:
    """Whether the edits change the data size the header declares (then less is enough)."""
    return any(name.startswith(("dim", "datatype", "bitpix", "vox_offset"))
               for name, _ in fields) or any(
        40 <= o < 56 or 70 <= o < 74 or 108 <= o < 112 for o, _ in edits)


@given(fields=FIELD_EDITS, edits=BYTE_EDITS, cut=st.none() | st.integers(0, 2000))
def test_fuzz_nifti_header(seeds: dict, fields: list, edits: list, cut: int | None) -> None:
    raw = _apply(seeds["nii"], fields, edits)
    if cut is not None:
        raw = raw[:cut]
    with tempfile.TemporaryDirectory() as tmp, small_budget():
        p = corpus.write_nifti(Path(tmp) / "f.nii", raw)
        try:
            volume = read_image_file(p)
        except IRPlannerError as exc:
            assert "f.nii" in str(exc) and "\n" not in str(exc)
            return
        if not _size_edited(fields, edits):
            assert cut is None or cut >= len(seeds["nii"]), "a truncated file was read"
        assert_sane(volume)


@given(edits=st.lists(st.tuples(st.integers(10, 10_000), st.integers(1, 255)), min_size=1,
                      max_size=3),
       cut=st.none() | st.integers(0, 10_000))
def test_fuzz_gzip_stream_never_gives_another_volume(seeds: dict, edits: list,
                                                     cut: int | None) -> None:
    data = bytearray(seeds["niigz"])
    for offset, delta in edits:
        if offset < len(data):
            data[offset] = (data[offset] + delta) % 256
    raw = bytes(data if cut is None else data[:cut])
    with tempfile.TemporaryDirectory() as tmp, small_budget():
        p = Path(tmp) / "f.nii.gz"
        p.write_bytes(raw)
        try:
            volume = read_image_file(p)
        except IRPlannerError as exc:
            assert "f.nii.gz" in str(exc)
            return
    original = seeds["volume"]
    np.testing.assert_array_equal(volume.array, original.array)
    np.testing.assert_allclose(volume.index_to_lps, original.index_to_lps)


@given(fields=FIELD_EDITS, cut=st.none() | st.integers(0, 1200))
def test_fuzz_label_map_header(seeds: dict, fields: list, cut: int | None) -> None:
    raw = _apply(seeds["lm"], fields, [])
    if cut is not None:
        raw = raw[:cut]
    with tempfile.TemporaryDirectory() as tmp, small_budget():
        p = corpus.write_nifti(Path(tmp) / "lm.nii", raw)
        try:
            labels = load_labels(p)
        except IRPlannerError as exc:
            assert "lm.nii" in str(exc)
            return
        if not _size_edited(fields):
            assert cut is None or cut >= len(seeds["lm"]), "a truncated file was read"
        assert_sane(labels.grid)
        for s in labels.structures:
            assert math.isfinite(s.margin_mm) and 0 <= s.margin_mm <= 100


@given(which=st.integers(0, 4), offset=st.integers(0, 1500), value=st.integers(0, 255),
       cut=st.none() | st.integers(0, 1500))
def test_fuzz_dicom_file_in_series(seeds: dict, which: int, offset: int, value: int,
                                   cut: int | None) -> None:
    files = list(seeds["dicom"])
    data = bytearray(files[which])
    size = len(data)
    if offset < size:
        data[offset] = value
    if cut is not None:
        data = data[:cut]
    files[which] = bytes(data)
    with tempfile.TemporaryDirectory() as tmp, small_budget():
        folder = Path(tmp)
        for name, content in zip(seeds["dicom_names"], files):
            (folder / name).write_bytes(content)
        try:
            volume = read_dicom_series(folder)
        except IRPlannerError as exc:
            assert "\n" not in str(exc)
            return
    truncated = cut is not None and cut < size
    assert not truncated, "a truncated slice was read without an error"
    assert_sane(volume)
    assert volume.shape == seeds["dicom_volume"].shape


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.text(max_size=8)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(
        st.sampled_from(["1", "2", "0", "-1", "name", "label", "margin_mm", "forbidden",
                         "layer", "category", "color", "format", "structures", "layers",
                         "total", "x"]), ch, max_size=5),
    max_leaves=16,
)
ENTRY = st.fixed_dictionaries({"name": st.sampled_from(["liver", "aorta", "", "x"])}, optional={
    "margin_mm": st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=3),
    "forbidden": st.booleans() | st.integers(0, 2) | st.text(max_size=3),
    "layer": st.integers(-2, 3), "color": st.lists(st.floats(-10, 300), max_size=4),
    "category": st.sampled_from(["vessel", "bone", "nonsense"]),
})


@given(doc=JSON | st.dictionaries(st.sampled_from(["1", "2", "3"]), ENTRY, min_size=1))
def test_fuzz_names_table(doc: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "names.json"
        p.write_text(json.dumps(doc))
        try:
            table = read_names_table(p)
        except IRPlannerError as exc:
            assert "names.json" in str(exc) and "\n" not in str(exc)
            return
    for e in table.entries:
        assert e.label > 0 and e.name and e.layer >= 0
        assert e.margin_mm is None or (math.isfinite(e.margin_mm) and 0 <= e.margin_mm <= 100)
        assert e.forbidden is None or isinstance(e.forbidden, bool)


PLAN_FIELDS = st.fixed_dictionaries({"schema_version": st.sampled_from([1, 1, 2, "1"])}, optional={
    "target_structure": st.text(max_size=5) | st.integers(),
    "target_lps": st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    "structure_overrides": st.dictionaries(st.sampled_from(["aorta", "rib"]), st.fixed_dictionaries(
        {}, optional={"margin_mm": st.floats(allow_nan=True, allow_infinity=True),
                      "forbidden": st.booleans() | st.text(max_size=2)})),
    "trajectories": st.lists(st.fixed_dictionaries({"name": st.text(max_size=3)}, optional={
        "entry_lps": st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
        "target_lps": st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3)}), max_size=2),
    "bogus": JSON,
})


@given(doc=PLAN_FIELDS | JSON)
def test_fuzz_plan_reader(doc: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "plan.json"
        p.write_text(json.dumps(doc))
        try:
            plan = Plan.load(p)
        except IRPlannerError as exc:
            assert "plan.json" in str(exc) and "\n" not in str(exc)
            return
    for override in plan.structure_overrides.values():
        assert override.margin_mm is None or (
            math.isfinite(override.margin_mm) and 0 <= override.margin_mm <= 100)
    if plan.target_lps is not None:
        assert all(math.isfinite(v) for v in plan.target_lps)
    for t in plan.trajectories:
        assert all(math.isfinite(v) for v in (*t.entry_lps, *t.target_lps))
    json.loads(plan.to_json())


def test_nifti_seed_fields_are_where_the_corpus_says(seeds: dict) -> None:
    """The corpus' header offsets match the file SimpleITK wrote (an independent oracle)."""
    raw = seeds["nii"]
    assert struct.unpack("<i", raw[:4])[0] == 348
    assert struct.unpack("<3h", raw[42:48]) == (12, 10, 6)
    assert struct.unpack("<3f", raw[80:92]) == pytest.approx((0.8, 0.9, 2.5))
