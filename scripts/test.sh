#!/usr/bin/env bash
# The test command: installs what the tests need (Debian's QGIS, Xvfb, the Python stack in .venv),
# lints, and runs the whole suite with pytest. Extra arguments go to pytest (e.g. -k detect).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-qgis
export QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg
.venv/bin/ruff check trainer camp_plugin esri_toolbox tests bench
.venv/bin/python -m pytest "$@"
