"""``ir-planner devices``."""

from __future__ import annotations

import json
import subprocess
import sys

from ir_planner.cli import main


def test_devices_table_subprocess() -> None:
    proc = subprocess.run([sys.executable, "-m", "ir_planner", "devices"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    out = proc.stdout
    for needle in ("neuwave-pr", "65W-10min", "47 x 35 mm", "cryo-17g", "rf-ic-2cm",
                   "biopsy-18g", "[mathy2024]", "doi:10.3390/cancers16071279"):
        assert needle in out


def test_devices_json_and_kind(capsys) -> None:
    assert main(["devices", "--json", "--kind", "cryo"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["id"] for d in data] == ["cryo-17g"]
    zone = data[0]["settings"][0]["zone"]
    assert zone["isotherm_radii_mm"] == {"-40": 10.0, "0": 20.0}
    assert "pmc4850244" in data[0]["references"]
