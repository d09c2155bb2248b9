"""Run many ``ir-planner`` command lines in one subprocess under an address-space limit.

Starting the CLI costs seconds (imports), so a batch of cases shares one worker
process: it imports the CLI once, then calls :func:`ir_planner.cli.main` per
case with stdout/stderr captured. The worker runs under ``RLIMIT_AS`` (set in
``preexec_fn``): an input that makes a reader allocate without bound kills the
case with a MemoryError instead of the machine, and the test fails.

:func:`check_refused` asserts what the issue asks of every refused case: exit
code 2, exactly one error line naming the input, no traceback, inputs untouched,
no partial or temporary output.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Address-space limit of the worker (the CLI with numpy/SimpleITK/numba needs < 1.5 GiB).
LIMIT_BYTES = 3 * 2**30

_WORKER = r"""
import contextlib, io, json, sys, traceback
cases = json.loads(sys.stdin.read())
from ir_planner.cli import main
results = []
for argv in cases:
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        code = -1
        err.write(traceback.format_exc())
    results.append({"code": code, "stderr": err.getvalue(), "stdout": out.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


def _limit() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


@dataclass
class Case:
    """One command line and what it must (not) do.

    Attributes
    ----------
    name : str
        Test id.
    argv : list of str
        Arguments after ``ir-planner`` (``-q`` is added).
    names : str
        Text the error line must contain (the file or argument at fault).
    inputs : list of Path
        Files that must be byte-identical afterwards.
    outputs : list of Path
        Files that must not exist afterwards (unless they existed before).
    code : int
        Expected exit code.
    """

    name: str
    argv: list[str]
    names: str
    inputs: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    code: int = 2


def run_batch(argvs: Sequence[Sequence[str]], *, cwd: Path, timeout: float = 600) -> list[dict]:
    """Run each command line in one worker process under :data:`LIMIT_BYTES`."""
    env = dict(os.environ, MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("IR_PLANNER_MEMORY_BUDGET_MB", None)
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER], input=json.dumps([["-q", *a] for a in argvs]),
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, preexec_fn=_limit,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"fuzz worker died ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def digest(path: Path) -> str:
    """SHA-256 of a file ("" if it does not exist)."""
    if not path.is_file():
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folders: Sequence[Path]) -> dict[Path, set[str]]:
    """The file names in each folder."""
    return {f: set(os.listdir(f)) for f in folders if f.is_dir()}


def check_refused(case: Case, result: dict, before: dict[Path, str],
                  listing_before: dict[Path, set[str]]) -> None:
    """Assert the issue-15 contract for one refused case."""
    err = result["stderr"]
    assert "Traceback" not in err, f"{case.name}: traceback\n{err}"
    assert result["code"] == case.code, f"{case.name}: exit {result['code']}\n{err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == 1, f"{case.name}: expected one error line, got\n{err}"
    assert case.names in errors[0], f"{case.name}: error does not name {case.names!r}: {errors[0]}"
    assert "out of memory" not in errors[0], f"{case.name}: unbounded allocation: {errors[0]}"
    for path, sha in before.items():
        assert digest(path) == sha, f"{case.name}: input {path} was modified"
    for out in case.outputs:
        if before.get(out, "") == "":
            assert not out.exists(), f"{case.name}: output {out} was written"
    for folder, names in snapshot(list(listing_before)).items():
        new = names - listing_before[folder]
        assert not new, f"{case.name}: new files in {folder}: {sorted(new)}"
