"""Damaged image files through the real CLI: truncations, header fields, bombs, escapes.

Each case is a real command line run in a worker process under an address-space
limit (see ``harness.py``); each must exit 2 with one error line naming the file,
leave its inputs untouched and write no output (issue 15, classes 1, 4, 5, 6).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from tests.fuzz import corpus
from tests.fuzz.harness import Case, check_refused, digest, run_batch, snapshot

Builder = Callable[[Path], Case]
BUILDERS: dict[str, Builder] = {}


def case(name: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        BUILDERS[name] = fn
        return fn
    return register


def convert(d: Path, src: Path, name: str | None = None) -> Case:
    out = d / f"out_{src.name.replace('.', '_')}.nrrd"
    return Case(name or src.name, ["convert", str(src), str(out)], src.name,
                inputs=[src], outputs=[out])


# -- class 1: truncation ------------------------------------------------------------------

def _truncated_nifti(suffix: str, fraction: float) -> Builder:
    def build(d: Path) -> Case:
        src = corpus.write_image(d / f"cut{int(fraction * 1000)}{suffix}")
        size = src.stat().st_size
        keep = max(1, int(size * fraction)) if fraction < 1 else size - 1
        corpus.truncate(src, keep)
        return convert(d, src)
    return build


for _suffix in (".nii.gz", ".nii"):
    for _fraction in (0.002, 0.1, 0.3, 0.5, 0.9, 0.99, 1.0):
        case(f"truncated{_suffix}@{_fraction}")(_truncated_nifti(_suffix, _fraction))


@case("truncated.nii.gz-crc-trailer")
def _gz_trailer(d: Path) -> Case:
    src = corpus.write_image(d / "trailer.nii.gz")
    corpus.truncate(src, src.stat().st_size - 4)  # ISIZE gone, CRC present
    return convert(d, src)


@case("truncated.nrrd")
def _nrrd_cut(d: Path) -> Case:
    src = corpus.write_image(d / "cut.nrrd")
    corpus.truncate(src, src.stat().st_size // 2)
    return convert(d, src)


@case("truncated.mha")
def _mha_cut(d: Path) -> Case:
    src = corpus.write_image(d / "cut.mha")
    corpus.truncate(src, src.stat().st_size - 50)
    return convert(d, src)


@case("truncated-labelmap")
def _labelmap_cut(d: Path) -> Case:
    sub = d / "lm"
    sub.mkdir()
    src = corpus.label_map(sub)
    corpus.truncate(src, src.stat().st_size // 2)
    return Case("truncated-labelmap", ["labels", str(src)], src.name, inputs=[src])


@case("truncated-mask-in-folder")
def _mask_cut(d: Path) -> Case:
    folder = d / "masks"
    paths = corpus.mask_folder(folder)
    corpus.truncate(paths[1], paths[1].stat().st_size // 2)
    return Case("truncated-mask-in-folder", ["labels", str(folder)], paths[1].name,
                inputs=paths)


def _dicom_cut(offset: int | str) -> Builder:
    def build(d: Path) -> Case:
        folder = d / f"dcm_cut_{offset}"
        files = corpus.dicom_series(folder)
        victim = files[2]
        size = victim.stat().st_size
        keep = {"header": 300, "meta": 150, "pixels": size - 20}.get(str(offset), offset)
        corpus.truncate(victim, int(keep))
        out = d / f"dcm_cut_{offset}.nii.gz"
        return Case(f"dicom-cut-{offset}", ["convert", str(folder), str(out)], victim.name,
                    inputs=files, outputs=[out])
    return build


@case("dicom-truncated-inside-series-uid")
def _dicom_cut_uid(d: Path) -> Case:
    """Cut inside the SeriesInstanceUID: the file parses, with a UID of its own."""
    folder = d / "dcm_cut_uid"
    files = corpus.dicom_series(folder)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID).encode()
    data = files[0].read_bytes()
    corpus.truncate(files[0], data.index(uid) + len(uid) // 2)
    out = d / "dcm_cut_uid.nii.gz"
    return Case("dicom-truncated-inside-series-uid", ["convert", str(folder), str(out)],
                files[0].name, inputs=files, outputs=[out])


for _off in ("meta", "header", 450, 600, "pixels"):
    case(f"dicom-truncated-{_off}")(_dicom_cut(_off))


# -- class 4: NIfTI geometry and intensity fields ------------------------------------------

NAN, INF = float("nan"), float("inf")
FIELD_CASES: list[tuple[str, float, str]] = [
    ("pixdim1", 0.0, "pixdim[1]"), ("pixdim2", NAN, "pixdim[2]"), ("pixdim3", -2.0, "pixdim[3]"),
    ("pixdim1", INF, "pixdim[1]"), ("qform_code", 0, "qform_code"),
    ("srow_x0", NAN, "sform"), ("srow_x0", 0.0, "sform"), ("quatern_b", NAN, "qform"),
    ("quatern_b", 2.0, "quaternion"), ("vox_offset", 1e9, "vox_offset"),
    ("vox_offset", NAN, "vox_offset"), ("vox_offset", 100, "vox_offset"),
    ("scl_slope", NAN, "scl_slope"), ("scl_slope", 1e38, "scl_slope"),
    ("datatype", 32, "complex"), ("datatype", 1792, "complex"), ("datatype", 128, "RGB"),
    ("dim1", 0, "dim[1]"), ("dim2", -5, "dim[2]"), ("dim0", 9, "dim[0]"),
    ("dim1", 32767, "truncated"), ("sizeof_hdr", 100, "not a NIfTI"),
]


def _field_case(field: str, value: float, expect: str, suffix: str) -> Builder:
    def build(d: Path) -> Case:
        good = corpus.write_image(d / f"good_{field}_{value}{suffix}".replace("/", "_"))
        raw = corpus.patch(corpus.nifti_raw(good), field, value)
        if field == "qform_code":
            raw = corpus.patch(raw, "sform_code", 0)
        if field.startswith("srow"):
            raw = corpus.patch(raw, "qform_code", 0)
            if value == 0.0:  # a singular sform: zero the whole first row
                for f in ("srow_y1", "srow_z2"):
                    raw = corpus.patch(raw, f, 0.0)
        src = corpus.write_nifti(good.with_name("f_" + good.name), raw)
        good.unlink()
        c = convert(d, src)
        c.name = f"{field}={value}{suffix}"
        return c
    return build


for _field, _value, _expect in FIELD_CASES:
    for _suffix in (".nii", ".nii.gz"):
        case(f"nifti-{_field}={_value}{_suffix}")(_field_case(_field, _value, _expect, _suffix))


# -- class 5: bounded memory ---------------------------------------------------------------

@case("gzip-bomb")
def _bomb(d: Path) -> Case:
    src = corpus.nifti_bomb(d / "bomb.nii.gz", 64 << 20)  # declares 2×2×2, inflates to 64 MiB
    return convert(d, src)


@case("nifti-declares-huge")
def _huge(d: Path) -> Case:
    good = corpus.write_image(d / "huge_src.nii")
    raw = corpus.nifti_raw(good)
    for f in ("dim1", "dim2", "dim3"):
        raw = corpus.patch(raw, f, 30000)
    src = corpus.write_nifti(d / "huge.nii", raw)
    return convert(d, src)


@case("dicom-rows-cols-65535")
def _rows(d: Path) -> Case:
    folder = d / "dcm_rows"
    files = corpus.dicom_series(folder)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.Rows = 65535
        ds.Columns = 65535
        ds.save_as(f)
    out = d / "rows.nii.gz"
    return Case("dicom-rows-cols-65535", ["convert", str(folder), str(out)], "dcm_rows",
                inputs=files, outputs=[out])


@case("dicom-slice-1e6mm-away")
def _far(d: Path) -> Case:
    folder = d / "dcm_far"
    files = corpus.dicom_series(folder)
    ds = pydicom.dcmread(files[-1])
    pos = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 1e6]
    ds.save_as(files[-1])
    out = d / "far.nii.gz"
    return Case("dicom-slice-1e6mm-away", ["convert", str(folder), str(out)], files[-1].name,
                inputs=files, outputs=[out])


def _rescale(value: str) -> Builder:
    def build(d: Path) -> Case:
        folder = d / f"dcm_slope_{value}"
        files = corpus.dicom_series(folder)
        ds = pydicom.dcmread(files[1])
        ds.RescaleSlope = value
        ds.save_as(files[1])
        out = d / f"slope_{value}.nii.gz"
        return Case(f"dicom-slope-{value}", ["convert", str(folder), str(out)], files[1].name,
                    inputs=files, outputs=[out])
    return build


for _slope in ("1e300", "NaN", "0"):
    case(f"dicom-rescale-slope-{_slope}")(_rescale(_slope))


@case("dicom-pixeldata-short")
def _short_pixels(d: Path) -> Case:
    folder = d / "dcm_short"
    files = corpus.dicom_series(folder)
    ds = pydicom.dcmread(files[3])
    ds.PixelData = ds.PixelData[:64]
    ds.save_as(files[3])
    out = d / "short.nii.gz"
    return Case("dicom-pixeldata-short", ["convert", str(folder), str(out)], files[3].name,
                inputs=files, outputs=[out])


@case("dicom-pixeldata-long")
def _long_pixels(d: Path) -> Case:
    folder = d / "dcm_long"
    files = corpus.dicom_series(folder)
    ds = pydicom.dcmread(files[2])
    ds.Rows = 4  # the data holds 8 rows
    ds.save_as(files[2])
    out = d / "long.nii.gz"
    return Case("dicom-pixeldata-long", ["convert", str(folder), str(out)], files[2].name,
                inputs=files, outputs=[out])


# -- class 6: paths that escape ------------------------------------------------------------

def _nhdr(d: Path, name: str, data_file: str) -> Case:
    sub = d / f"nhdr_{name}"
    sub.mkdir()
    header = sub / "img.nhdr"
    header.write_text(
        "NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\n"
        "sizes: 2 2 2\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nkinds: domain domain domain\n"
        f"endian: little\nencoding: raw\nspace origin: (0,0,0)\ndata file: {data_file}\n\n"
    )
    return Case(f"nhdr-{name}", ["convert", str(header), str(d / f"nhdr_{name}.nrrd")],
                "img.nhdr", inputs=[header], outputs=[d / f"nhdr_{name}.nrrd"])


@case("nhdr-absolute-data-file")
def _nhdr_abs(d: Path) -> Case:
    return _nhdr(d, "abs", "/etc/passwd")


@case("nhdr-dotdot-data-file")
def _nhdr_dotdot(d: Path) -> Case:
    (d / "outside.raw").write_bytes(b"\1" * 8)
    return _nhdr(d, "dotdot", "../outside.raw")


@case("nhdr-symlink-data-file")
def _nhdr_link(d: Path) -> Case:
    (d / "outside2.raw").write_bytes(b"\1" * 8)
    c = _nhdr(d, "link", "data.raw")
    os.symlink(d / "outside2.raw", d / "nhdr_link" / "data.raw")
    return c


@case("sidecar-layer-dotdot")
def _layers(d: Path) -> Case:
    sub = d / "side"
    sub.mkdir()
    (d / "secret.nii.gz").write_bytes(b"x")
    src = corpus.label_map(sub, sidecar={
        "format": "ir-planner-labels", "version": 1,
        "layers": ["seg.nii.gz", "../secret.nii.gz"],
        "structures": [{"name": "liver", "label": 1}, {"name": "aorta", "label": 2}],
    })
    return Case("sidecar-layer-dotdot", ["labels", str(src)], "../secret.nii.gz", inputs=[src])


# -- the batch -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    d = tmp_path_factory.mktemp("corpus")
    cases = {name: build(d) for name, build in BUILDERS.items()}
    before = {name: {p: digest(p) for p in c.inputs + c.outputs} for name, c in cases.items()}
    listing = snapshot([d, *{p.parent for c in cases.values() for p in c.inputs}])
    outs = run_batch([c.argv for c in cases.values()], cwd=d)
    return {name: (c, r, before[name], listing) for (name, c), r in zip(cases.items(), outs)}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_damaged_image_is_refused(results: dict[str, tuple], name: str) -> None:
    case_, result, before, listing = results[name]
    check_refused(case_, result, before, listing)


def test_corpus_is_large_enough() -> None:
    assert len(BUILDERS) >= 60
