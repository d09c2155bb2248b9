"""The generated sample case: real DICOM that reads back exactly, deterministic, atomic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ir_planner.io.load import load_image
from ir_planner.io.segmentation import load_labels
from ir_planner.sample.case import (
    SAMPLE_DIR_ENV,
    SampleCase,
    ensure_sample_case,
    generate_sample_case,
    sample_case_dir,
)
from ir_planner.sample.phantom import make_phantom

ARGS = dict(size_ijk=(96, 96, 32), spacing_mm=(3.73, 3.73, 7.5), intraop_slices=12)


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> SampleCase:  # type: ignore[no-untyped-def]
    return generate_sample_case(tmp_path_factory.mktemp("c") / "case", seed=2, **ARGS)


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_every_file_written_and_marked_synthetic(case: SampleCase) -> None:
    assert case.is_complete(seed=2)
    assert "SYNTHETIC" in case.readme.read_text()
    manifest = case.read_manifest()
    assert manifest["synthetic"] is True and manifest["seed"] == 2
    assert len(list(case.planning_dicom_dir.glob("*.dcm"))) == 32
    assert len(list(case.intraop_dicom_dir.glob("*.dcm"))) == 12
    assert case.planning_labels.with_name("planning_labels.labels.json").is_file()
    truth = case.read_truth()
    assert truth["intraop_series_uid"] != truth["plan_series_uid"]
    assert truth["intraop_frame_of_reference_uid"] != truth["plan_frame_of_reference_uid"]
    # nothing left over from the atomic write
    assert [p.name for p in case.root.parent.iterdir()] == ["case"]


def test_dicom_reads_back_in_simpleitk_like_the_volume(case: SampleCase) -> None:
    image, _labels, _info = make_phantom(seed=2, size_ijk=ARGS["size_ijk"],
                                         spacing_mm=ARGS["spacing_mm"])
    ref = _sitk_series(case.planning_dicom_dir)
    assert ref.GetSize() == image.shape_ijk
    assert np.allclose(ref.GetOrigin(), image.origin_lps, atol=1e-4)
    assert np.allclose(ref.GetSpacing(), image.spacing_mm, atol=1e-5)
    assert np.allclose(np.reshape(ref.GetDirection(), (3, 3)), np.eye(3))
    assert np.array_equal(sitk.GetArrayFromImage(ref), image.array)
    ds = pydicom.dcmread(next(iter(sorted(case.planning_dicom_dir.glob("*.dcm")))))
    assert ds.Modality == "CT" and ds.PatientPosition == "HFS"
    assert ds.PatientName == "SYNTHETIC^PHANTOM"


def test_project_readers_load_the_case(case: SampleCase) -> None:
    image = load_image(case.planning_dicom_dir)
    labels = load_labels(case.planning_labels, image=image)
    assert image.shape_ijk == (96, 96, 32) and image.orientation_code() == "LPS"
    assert not labels.warnings
    info = case.read_manifest()["phantom"]
    assert sorted(labels.names) == sorted(info["label_names"].values())
    intra = load_image(case.intraop_dicom_dir)
    assert intra.series_uid == case.read_truth()["intraop_series_uid"]
    assert intra.array.max() > 2000  # the needle
    intra_labels = load_labels(case.intraop_labels, image=intra)
    assert "tumour_1" in intra_labels.names


def test_same_seed_gives_identical_pixels_and_uids(case: SampleCase, tmp_path: Path) -> None:
    again = generate_sample_case(tmp_path / "again", seed=2, **ARGS)
    for a_dir, b_dir in ((case.planning_dicom_dir, again.planning_dicom_dir),
                         (case.intraop_dicom_dir, again.intraop_dicom_dir)):
        a_files, b_files = sorted(a_dir.glob("*.dcm")), sorted(b_dir.glob("*.dcm"))
        assert [p.name for p in a_files] == [p.name for p in b_files]
        for fa, fb in zip(a_files, b_files):
            da, db = pydicom.dcmread(fa), pydicom.dcmread(fb)
            assert da.PixelData == db.PixelData
            assert da.SOPInstanceUID == db.SOPInstanceUID
    assert json.loads(case.intraop_truth.read_text()) == json.loads(again.intraop_truth.read_text())


def test_regenerate_over_existing_and_reuse(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(SAMPLE_DIR_ENV, str(tmp_path / "samples"))
    assert sample_case_dir() == tmp_path / "samples"
    assert sample_case_dir(7) == tmp_path / "samples-seed7"
    small = dict(size_ijk=(48, 48, 16), spacing_mm=(7.46, 7.46, 15.0), intraop_slices=6)
    first = ensure_sample_case(seed=0, **small)
    assert first.root == tmp_path / "samples" and first.is_complete(seed=0)
    stamp = first.manifest.stat().st_mtime_ns
    assert ensure_sample_case(seed=0, **small).manifest.stat().st_mtime_ns == stamp  # reused
    (first.root / "stray.txt").write_text("old")
    second = generate_sample_case(first.root, seed=0, **small)  # replaces the folder
    assert second.is_complete() and not (second.root / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples"]
    first.intraop_truth.unlink()  # incomplete → regenerated
    assert ensure_sample_case(seed=0, **small).intraop_truth.is_file()


def test_generate_script(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "sample_data" / "generate.py"
    out = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "g"), "--seed", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    case = SampleCase.in_folder(tmp_path / "g")
    assert case.is_complete(seed=1) and "synthetic" in out.stdout
