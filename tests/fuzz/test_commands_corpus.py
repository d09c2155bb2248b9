"""Command lines that must be refused: outputs over inputs, nonsense numbers, bad tables.

Real command lines in a worker under an address-space limit (``harness.py``);
each must exit 2 with one error line naming the file or argument at fault,
leave every input untouched and write nothing (issue 15, classes 2, 3, 5, 7, 8, 9).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import ir_planner
from tests.fuzz import corpus
from tests.fuzz.harness import Case, check_refused, digest, run_batch, snapshot

Builder = Callable[[Path], Case]
BUILDERS: dict[str, Builder] = {}


def case(name: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        BUILDERS[name] = fn
        return fn
    return register


def _image(d: Path) -> Path:
    p = d / "ct.nii.gz"
    if not p.exists():
        corpus.write_image(p)
    return p


def _labels(d: Path) -> Path:
    p = d / "lm" / "seg.nii.gz"
    if not p.exists():
        p.parent.mkdir(exist_ok=True)
        corpus.label_map(p.parent, sidecar={
            "format": "ir-planner-labels", "version": 1, "layers": ["seg.nii.gz"],
            "structures": [{"name": "liver", "label": 1}, {"name": "aorta", "label": 2}]})
    return p


# -- class 2: outputs that are inputs, whatever the spelling -------------------------------

@case("convert-out-is-input")
def _same(d: Path) -> Case:
    img = _image(d)
    return Case("convert-out-is-input", ["convert", str(img), str(img)], "ct.nii.gz",
                inputs=[img])


@case("convert-out-dot-slash")
def _dot(d: Path) -> Case:
    img = _image(d)
    return Case("convert-out-dot-slash", ["convert", str(img), "./ct.nii.gz"], "ct.nii.gz",
                inputs=[img])


@case("convert-out-dotdot")
def _dotdot(d: Path) -> Case:
    img = _image(d)
    (d / "sub").mkdir(exist_ok=True)
    return Case("convert-out-dotdot", ["convert", "ct.nii.gz", "sub/../ct.nii.gz"], "ct.nii.gz",
                inputs=[img])


@case("convert-out-symlink")
def _link(d: Path) -> Case:
    img = _image(d)
    link = d / "link.nii.gz"
    os.symlink(img, link)
    return Case("convert-out-symlink", ["convert", str(img), str(link)], "link.nii.gz",
                inputs=[img])


@case("convert-out-hardlink")
def _hard(d: Path) -> Case:
    img = _image(d)
    hard = d / "hard.nii.gz"
    os.link(img, hard)
    return Case("convert-out-hardlink", ["convert", str(img), str(hard)], "hard.nii.gz",
                inputs=[img])


@case("segment-out-is-image")
def _seg_out(d: Path) -> Case:
    img = _image(d)
    return Case("segment-out-is-image", ["segment", str(img), "--out", str(img)], "ct.nii.gz",
                inputs=[img])


@case("segment-names-out-is-sidecar")
def _seg_names(d: Path) -> Case:
    img = _image(d)
    out = d / "seg_new.nii.gz"
    names = d / "seg_new.labels.json"
    return Case("segment-names-out-is-sidecar",
                ["segment", str(img), "--out", str(out), "--names-out", str(names)],
                "--names-out", inputs=[img], outputs=[out, names])


@case("plan-labels-out-is-image")
def _plan_labels_out(d: Path) -> Case:
    img = _image(d)
    return Case("plan-labels-out-is-image",
                ["plan", str(img), "--target", "0", "0", "0", "--labels-out", str(img)],
                "--labels-out", inputs=[img])


@case("plan-out-is-sidecar")
def _plan_sidecar(d: Path) -> Case:
    img, lm = _image(d), _labels(d)
    side = lm.with_name("seg.labels.json")
    return Case("plan-out-is-sidecar",
                ["plan", str(img), "--labels", str(lm), "--target", "0", "0", "0",
                 "--out", str(side)], "seg.labels.json", inputs=[img, lm, side])


@case("plan-candidates-out-is-labels")
def _plan_cand(d: Path) -> Case:
    img, lm = _image(d), _labels(d)
    return Case("plan-candidates-out-is-labels",
                ["plan", str(img), "--labels", str(lm), "--target", "0", "0", "0", "--auto",
                 "--candidates-out", str(lm)], "--candidates-out", inputs=[img, lm])


@case("plan-out-is-names")
def _plan_names(d: Path) -> Case:
    img, lm = _image(d), _labels(d)
    names = d / "names.json"
    names.write_text(json.dumps({"1": "liver", "2": "aorta"}))
    return Case("plan-out-is-names",
                ["plan", str(img), "--labels", str(lm), "--names", str(names), "--target", "0",
                 "0", "0", "--out", str(names)], "names.json", inputs=[img, lm, names])


# -- class 3 and 9: numbers that would switch safety off; duplicate keys --------------------

def _names_table(content: str, tag: str) -> Builder:
    def build(d: Path) -> Case:
        lm = _labels(d)
        table = d / f"names_{tag}.json"
        table.write_bytes(b"\xff\xfe{" if content == "NOT-UTF8" else content.encode())
        return Case(f"names-{tag}", ["labels", str(lm), "--names", str(table)], table.name,
                    inputs=[lm, table])
    return build


for _tag, _content in {
    "margin-nan": '{"1": {"name": "liver"}, "2": {"name": "aorta", "margin_mm": NaN}}',
    "margin-inf": '{"1": "liver", "2": {"name": "aorta", "margin_mm": Infinity}}',
    "margin-negative": '{"1": "liver", "2": {"name": "aorta", "margin_mm": -3}}',
    "margin-huge": '{"1": "liver", "2": {"name": "aorta", "margin_mm": 1e9}}',
    "margin-text": '{"1": "liver", "2": {"name": "aorta", "margin_mm": "5"}}',
    "forbidden-text": '{"1": "liver", "2": {"name": "aorta", "forbidden": "no"}}',
    "duplicate-key": '{"1": "liver", "2": "aorta", "2": "bowel"}',
    "deep": "[" * 5000 + "]" * 5000,
    "not-utf8": "NOT-UTF8",
}.items():
    case(f"names-{_tag}")(_names_table(_content, _tag))


@case("sidecar-margin-nan")
def _sidecar_nan(d: Path) -> Case:
    sub = d / "side_nan"
    sub.mkdir()
    lm = corpus.label_map(sub)
    side = sub / "seg.labels.json"
    side.write_text('{"format": "ir-planner-labels", "version": 1, "layers": ["seg.nii.gz"], '
                    '"structures": [{"name": "liver", "label": 1}, '
                    '{"name": "aorta", "label": 2, "margin_mm": NaN}]}')
    return Case("sidecar-margin-nan", ["labels", str(lm)], "seg.labels.json", inputs=[lm, side])


def _number_arg(argv_tail: list[str], option: str, tag: str) -> Builder:
    def build(d: Path) -> Case:
        img = _image(d)
        argv = [a.replace("{img}", str(img)) for a in argv_tail]
        return Case(f"number-{tag}", argv, option, inputs=[img])
    return build


for _tag, (_argv, _opt) in {
    "needle-nan": (["plan", "{img}", "--target", "0", "0", "0", "--needle-length", "nan"],
                   "--needle-length"),
    "needle-inf": (["plan", "{img}", "--target", "0", "0", "0", "--needle-length", "inf"],
                   "--needle-length"),
    "needle-negative": (["plan", "{img}", "--target", "0", "0", "0", "--needle-length", "-5"],
                        "--needle-length"),
    "needle-huge": (["plan", "{img}", "--target", "0", "0", "0", "--needle-length", "1e9"],
                    "--needle-length"),
    "lesion-radius-inf": (["plan", "{img}", "--target", "0", "0", "0", "--lesion-radius", "inf"],
                          "--lesion-radius"),
    "target-nan": (["plan", "{img}", "--target", "nan", "0", "0"], "--target"),
    "segment-radius-nan": (["segment", "{img}", "--out", "x.nii.gz", "--lesion", "0", "0", "0",
                            "--radius", "nan"], "--radius"),
    "ablate-calibration-nan": (["ablate", "plan.json", "--device", "x", "--calibration", "nan"],
                               "--calibration"),
    "ablate-margin-inf": (["ablate", "plan.json", "--device", "x", "--margin", "inf"],
                          "--margin"),
}.items():
    case(f"number-{_tag}")(_number_arg(_argv, _opt, _tag))


@case("device-zone-infinity")
def _device(d: Path) -> Case:
    plan = d / "plan_dev.json"
    plan.write_text(json.dumps({"schema_version": 1, "target_structure": "liver"}))
    return Case("device-zone-infinity", ["ablate", str(plan), "--device", "bad-mwa"],
                "bad-mwa", inputs=[plan])


# -- class 5: plan size; class 7/8: messages -----------------------------------------------

@case("plan-file-huge")
def _big_plan(d: Path) -> Case:
    plan = d / "big_plan.json"
    with open(plan, "wb") as fh:
        fh.truncate(40 * 2**20)  # sparse: costs no disk
    return Case("plan-file-huge", ["ablate", str(plan), "--device", "neuwave-pr"], "big_plan.json",
                inputs=[plan])


@case("plan-bad-key-one-line")
def _bad_key(d: Path) -> Case:
    plan = d / "bad_plan.json"
    plan.write_text(json.dumps({"schema_version": 1, "trajectories": [
        {"name": 3, "entry_lps": [0, 0], "target_lps": "x"}], "bogus": 1}))
    return Case("plan-bad-key-one-line", ["ablate", str(plan), "--device", "neuwave-pr"],
                "bad_plan.json", inputs=[plan])


@case("plan-duplicate-key")
def _dup_plan(d: Path) -> Case:
    plan = d / "dup_plan.json"
    plan.write_text('{"schema_version": 1, "target_structure": "a", "target_structure": "b"}')
    return Case("plan-duplicate-key", ["ablate", str(plan), "--device", "neuwave-pr"], "dup_plan.json",
                inputs=[plan])


@case("fifo-input")
def _fifo(d: Path) -> Case:
    fifo = d / "pipe.nii.gz"
    os.mkfifo(fifo)
    return Case("fifo-input", ["convert", str(fifo), str(d / "fifo_out.nrrd")], "pipe.nii.gz",
                outputs=[d / "fifo_out.nrrd"])


@case("dev-zero-input")
def _zero(d: Path) -> Case:
    return Case("dev-zero-input", ["info", "/dev/zero"], "/dev/zero")


@case("fifo-labels")
def _fifo_labels(d: Path) -> Case:
    fifo = d / "pipe_labels.nii.gz"
    os.mkfifo(fifo)
    return Case("fifo-labels", ["labels", str(fifo)], "pipe_labels.nii.gz")


@case("write-error-names-output")
def _write_error(d: Path) -> Case:
    img = _image(d)
    return Case("write-error-names-output", ["convert", str(img), "/proc/irp_out.nrrd"],
                "/proc/irp_out.nrrd", inputs=[img])


@case("complex-nifti-segment")
def _complex(d: Path) -> Case:
    good = corpus.write_image(d / "cplx_src.nii")
    src = corpus.write_nifti(d / "complex.nii", corpus.patch(corpus.nifti_raw(good), "datatype",
                                                             32))
    good.unlink()
    return Case("complex-nifti-segment", ["segment", str(src), "--out", str(d / "c.nii.gz")],
                "complex.nii", inputs=[src], outputs=[d / "c.nii.gz"])


@case("device-override-announced")
def _override(d: Path) -> Case:
    return Case("device-override-announced",
                ["ablate", str(d / "missing_plan.json"), "--device", "neuwave-pr"],
                "missing_plan.json")


# -- the batch -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    d = tmp_path_factory.mktemp("commands")
    devices = d / "devices"
    devices.mkdir()
    (devices / "bad.json").write_text(
        '{"references": {}, "devices": [{"id": "bad-mwa", "kind": "microwave", '
        '"settings": [{"name": "s", "zone": {"length_mm": Infinity, "diameter_mm": 30, '
        '"tip_to_centre_mm": 10}}]}]}')
    builtin = Path(ir_planner.__file__).parent / "data" / "devices" / "neuwave_pr.json"
    (devices / "my_neuwave.json").write_text(builtin.read_text())  # replaces a catalog device
    os.environ["IR_PLANNER_DEVICES_DIR"] = str(devices)
    try:
        cases = {name: build(d) for name, build in BUILDERS.items()}
        before = {name: {p: digest(p) for p in c.inputs + c.outputs}
                  for name, c in cases.items()}
        listing = snapshot([d, d / "lm", *{p.parent for c in cases.values() for p in c.inputs}])
        outs = run_batch([c.argv for c in cases.values()], cwd=d)
    finally:
        del os.environ["IR_PLANNER_DEVICES_DIR"]
    return {name: (c, r, before[name], listing) for (name, c), r in zip(cases.items(), outs)}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_bad_command_is_refused(results: dict[str, tuple], name: str) -> None:
    case_, result, before, listing = results[name]
    check_refused(case_, result, before, listing)


def test_ablate_announces_a_user_device_that_replaces_a_catalog_device(
    results: dict[str, tuple]
) -> None:
    _case, result, _before, _listing = results["device-override-announced"]
    assert "warning: device 'neuwave-pr' from" in result["stderr"]
    assert "my_neuwave.json" in result["stderr"] and "overrides" in result["stderr"]
