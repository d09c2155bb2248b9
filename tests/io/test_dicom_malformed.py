"""Malformed DICOM and junk: clear ImageReadError naming the file, never a crash or a wrong volume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from ir_planner.core.errors import ImageReadError
from ir_planner.io.dicom import list_series, read_dicom_series
from ir_planner.io.dicom_write import write_dicom_series
from tests.io.test_dicom_write import make_volume


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("no_meta.dcm", "not a DICOM file"),
        ("MR_truncated.dcm", "pixel data"),
        ("badVR.dcm", "not a CT/MR/PET image"),
        ("meta_missing_tsyntax.dcm", "without SeriesInstanceUID|not a DICOM"),
        ("emri_small.dcm", "geometry"),
        ("SC_rgb_jpeg.dcm", "not a CT/MR/PET image"),
    ],
)
def test_pydicom_malformed_files_give_clear_errors(name: str, problem: str) -> None:
    path = get_testdata_file(name)
    with pytest.raises(ImageReadError, match=problem) as err:
        read_dicom_series(path)
    assert name in str(err.value)


def test_junk_folder_names_files_and_problems(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not an image\n" * 20)
    (junk / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (junk / "empty.dcm").write_bytes(b"")
    (junk / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)  # DICM then garbage
    with pytest.raises(ImageReadError) as err:
        read_dicom_series(junk)
    msg = str(err.value)
    assert "no readable DICOM" in msg
    for name in ("notes.txt", "random.bin", "empty.dcm", "fake.dcm"):
        assert name in msg
    assert "empty file" in msg
    with pytest.raises(ImageReadError, match="no readable DICOM"):
        list_series(junk)


def test_missing_and_empty_paths(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        read_dicom_series(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="empty"):
        read_dicom_series(tmp_path / "empty")


def test_junk_beside_a_good_series_is_skipped_with_a_warning(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(4, 6, 6))
    write_dicom_series(vol, tmp_path / "s")
    (tmp_path / "s" / "README.txt").write_text("exported by a PACS")
    got = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(got.array, vol.array)
    assert any("README.txt" in w and "skipped" in w for w in got.warnings)


def test_truncated_slice_in_series_names_the_file(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(5, 16, 16))
    files = write_dicom_series(vol, tmp_path / "s")
    data = files[2].read_bytes()
    files[2].write_bytes(data[:-100])  # pixel data cut short
    with pytest.raises(ImageReadError, match=files[2].name) as err:
        read_dicom_series(tmp_path / "s")
    assert "truncated" in str(err.value)


def test_unparsable_slice_of_the_series_stops_the_read(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(5, 16, 16))
    # A series UID that no generated UID (pydicom's root 1.2.826.0.1.3680043.8.498.)
    # can start with: searching for it must find the series UID, not a study/SOP UID.
    uid = "1.2.3.4.999.55"
    files = write_dicom_series(vol, tmp_path / "s", series_uid=uid)
    # Keep the header start (with the series UID) but corrupt a length field after it.
    ds_bytes = bytearray(files[3].read_bytes())
    assert ds_bytes.count(uid.encode()) == 1
    pos = ds_bytes.find(uid.encode(), 300)
    assert pos > 0
    cut = ds_bytes[: pos + 40] + b"\x20\x00\x13\x00IS\xff\xff" + b"garbage"
    files[3].write_bytes(bytes(cut))
    infos = list_series(tmp_path / "s")
    assert len(infos) == 1 and infos[0].n_frames == 4 and infos[0].n_files == 5
    assert any("cannot be used" in w and files[3].name in w for w in infos[0].warnings)
    with pytest.raises(ImageReadError, match=files[3].name) as err:
        read_dicom_series(tmp_path / "s")
    assert "incomplete" in str(err.value)


def test_file_without_pixel_data_is_rejected(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(1, 8, 8))
    f = write_dicom_series(vol, tmp_path / "s")[0]
    ds = pydicom.dcmread(f)
    del ds.PixelData
    ds.save_as(f)
    with pytest.raises(ImageReadError, match="no pixel data") as err:
        read_dicom_series(f)
    assert f.name in str(err.value)


def test_file_without_geometry_is_rejected(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(2, 8, 8))
    files = write_dicom_series(vol, tmp_path / "s")
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    with pytest.raises(ImageReadError, match="ImagePositionPatient"):
        read_dicom_series(tmp_path / "s")


def test_duplicated_positions_are_an_error(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(3, 8, 8))
    files = write_dicom_series(vol, tmp_path / "s")
    dup = tmp_path / "s" / "copy.dcm"
    shutil.copy(files[1], dup)
    ds = pydicom.dcmread(dup)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(dup)
    with pytest.raises(ImageReadError, match="duplicated slice position"):
        read_dicom_series(tmp_path / "s")


def test_mixed_orientations_are_an_error(tmp_path: Path) -> None:
    vol = make_volume(shape_kji=(6, 8, 8))
    files = write_dicom_series(vol, tmp_path / "s")
    for f in files[:3]:
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.save_as(f)
    with pytest.raises(ImageReadError, match="inconsistent series"):
        read_dicom_series(tmp_path / "s")
