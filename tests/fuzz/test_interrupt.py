"""Ctrl-C at any moment after the interpreter started, start-up imports included:
exit 130, one line, no traceback, no partial output.

The child signals "ready" once the ``ir_planner`` package itself is imported (the
first line of application code installs the start-up handler; a signal during the
interpreter's own initialisation, before any application code, is outside the
application), then runs the command exactly as the ``ir-planner`` script does: the
command's imports (seconds on a loaded machine) are covered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fuzz import corpus

CHILD = (
    "import sys\n"
    "sys.argv = ['ir-planner', *sys.argv[1:]]\n"
    "import ir_planner\n"
    "sys.stderr.write('ready\\n'); sys.stderr.flush()\n"
    "from ir_planner.cli import run\n"
    "run()\n"
)


@pytest.mark.parametrize("delay_s", [0.0, 0.3, 1.0, 3.0])
def test_sigint_exits_130_without_traceback(tmp_path: Path, delay_s: float) -> None:
    image = corpus.write_image(tmp_path / "ct.nii.gz", corpus.small_array((40, 64, 64)))
    out = tmp_path / "o.nrrd"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "convert", str(image), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    assert proc.stderr.readline().strip() == "ready"
    time.sleep(delay_s)  # not a timed assertion: only where the signal lands varies
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    if proc.returncode == 0:  # finished before the signal arrived
        return
    assert proc.returncode == 130, (proc.returncode, err)
    assert [ln for ln in err.splitlines() if ln.strip()][-1].endswith("interrupted")
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "temporary file left"
