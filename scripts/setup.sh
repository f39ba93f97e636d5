#!/usr/bin/env bash
# Creates (or updates) .venv with everything the product needs. Idempotent: a second run only
# checks. Usage: scripts/setup.sh [--with-qgis]   (--with-qgis also installs Debian's QGIS,
# which the plugin tests need; run as root or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."
with_qgis=0
[ "${1:-}" = "--with-qgis" ] && with_qgis=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ "$with_qgis" = 1 ] && ! /usr/bin/python3 -c "import qgis.core" 2>/dev/null; then
  echo "[setup] installing Debian's QGIS (python3-qgis, qgis) and Xvfb ..."
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    python3-qgis qgis python3-venv xvfb >/dev/null
fi

# The venv is built on Debian's Python 3.11 when it exists (so that QGIS's Python bindings are
# visible through --system-site-packages); any Python >= 3.10 works for the core alone.
py=/usr/bin/python3
if ! $py -c "import venv, ensurepip" 2>/dev/null; then
  if [ -x /usr/bin/python3 ] && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null 2>&1 || true
  fi
  $py -c "import venv, ensurepip" 2>/dev/null || py=python3
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $py"
  $py -m venv --system-site-packages .venv
fi

stamp=.venv/.camp-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/requirements.txt -nt "$stamp" ]; then
  echo "[setup] installing Python packages into .venv (one pip command: numpy<2 and attrs>=23.2 pinned for Debian's GDAL/QGIS bindings) ..."
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -r scripts/requirements.txt -e ".[test]"
  touch "$stamp"
fi
