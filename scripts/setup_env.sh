#!/usr/bin/env bash
# Create/refresh the project's virtual environment in .venv.
#   scripts/setup_env.sh          runtime only
#   scripts/setup_env.sh test     runtime + test tools + system packages for the test suite
set -euo pipefail
cd "$(dirname "$0")/.."
want="${1:-run}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ "$want" = test ] && command -v apt-get >/dev/null; then
  # Xvfb + Qt xcb libraries (GUI tests), GL/EGL for VTK, DICOM peers (dcmtk, orthanc).
  pkgs="xvfb xauth libgl1 libegl1 libglu1-mesa libxrender1 libxkbcommon-x11-0 libxcb-icccm4
        libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
        libxcb-xfixes0 libxcb-shape0 libxcb-xkb1 libdbus-1-3 libfontconfig1 dcmtk orthanc"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "Installing system packages:$missing"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null; then
  echo "error: $PY not found; install Python >= 3.11 (Debian: apt-get install python3 python3-venv)" >&2
  exit 2
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: IR Planner needs Python >= 3.11; $PY is $("$PY" -V 2>&1). Set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Debian's python3 ships venv/ensurepip separately
    rm -rf .venv
    if command -v apt-get >/dev/null; then
      as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
    fi
    "$PY" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "$want" = test ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
  # first-party plugins, installed like any third-party plugin (docs/plugins.md); the
  # tests use them through the real entry-point machinery
  .venv/bin/python -m pip install -q -e plugins/totalsegmentator -e plugins/site-devices \
    -e plugins/intercostal
else
  .venv/bin/python -m pip install -q -e .
fi
