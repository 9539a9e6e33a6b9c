#!/usr/bin/env bash
# One command from a fresh clone to the whole test suite: install, start services, lint, test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/services.sh
.venv/bin/ruff check .
.venv/bin/mypy .
.venv/bin/python -m pytest "$@"
