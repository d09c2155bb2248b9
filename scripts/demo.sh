#!/usr/bin/env bash
# Set up and run the main job on the bundled synthetic sample case.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh run
exec .venv/bin/ir-planner demo --out demo_output "$@"
