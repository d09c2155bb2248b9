"""The fast header walker agrees with pydicom on every file it accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom.data
import pytest

from ir_planner.io import dicom_scan
from ir_planner.io.dicom_write import write_dicom_series
from tests.io.test_dicom_write import DIRECTIONS, make_volume

HEADER_FIELDS = (
    "sop_class", "study_uid", "series_uid", "modality", "series_number", "image_type",
    "patient_position", "problem", "pixel_offset", "pixel_dtype", "n_frames", "bits_stored",
    "pixel_representation", "padding", "gantry_tilt_deg",
)
FRAME_FIELDS = (
    "position_lps", "row_cos", "col_cos", "row_spacing_mm", "col_spacing_mm", "rows", "cols",
    "slope", "intercept", "instance_number", "thickness_mm",
)


def _files(shared_data: Path, tmp_path: Path) -> list[Path]:
    ours = write_dicom_series(make_volume(DIRECTIONS["oblique"], shape_kji=(2, 4, 4)),
                              tmp_path / "s")
    real = sorted(shared_data.glob("*/*.dcm")) + sorted(shared_data.glob("*/*/*.dcm"))
    # pydicom's own test files, listed from disk (get_testdata_files may try the network)
    local = Path(pydicom.data.__file__).parent / "test_files"
    pydicom_files = sorted(p for p in local.rglob("*.dcm") if p.is_file())
    return ours + real + pydicom_files


def test_fast_walker_matches_pydicom(shared_data: Path, tmp_path: Path) -> None:
    checked = 0
    for path in _files(shared_data, tmp_path):
        try:
            fast = dicom_scan._fast_parse(path)
        except dicom_scan._NeedPydicom:
            continue
        assert fast is not None
        slow, _problem, _like = dicom_scan._read_header(path, None)
        if slow is None:
            continue
        try:
            got, _p, _l = dicom_scan._build_header(
                path, fast[0], fast[1], fast[2], True, {slow.series_uid, "other"}
            )
        except dicom_scan._NeedPydicom:
            continue  # left to pydicom: fine
        assert got is not None
        for name in HEADER_FIELDS:
            assert getattr(got, name) == getattr(slow, name), (path.name, name)
        assert len(got.frames) == len(slow.frames)
        for a, b in zip(got.frames, slow.frames):
            for name in FRAME_FIELDS:
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        checked += 1
    assert checked >= 40  # ours, the GE and dcmqi CTs and most of pydicom's native files


@pytest.mark.parametrize("cut", [200, 600, 1000])
def test_fast_walker_hands_truncated_headers_to_pydicom(tmp_path: Path, cut: int) -> None:
    f = write_dicom_series(make_volume(shape_kji=(1, 4, 4)), tmp_path / "s")[0]
    f.write_bytes(f.read_bytes()[:cut])
    with pytest.raises(dicom_scan._NeedPydicom):
        dicom_scan._fast_parse(f)
