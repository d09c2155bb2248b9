#!/usr/bin/env bash
# Install everything the tests need (system packages included) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check ir_planner tests bench sample_data plugins
echo "== import-linter"; lint-imports
echo "== pytest"
exec python -m pytest -n 2 --dist loadfile -q "$@"
