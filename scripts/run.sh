#!/usr/bin/env bash
# One command from a fresh clone to a running ftportal: install, migrate, load the demo,
# start a Celery worker and the web server. Embedded default: SQLite and a filesystem broker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

PORT=${PORT:-8000}
export DJANGO_SETTINGS_MODULE=ftportal.settings
py=.venv/bin/python
$py manage.py migrate --no-input -v0
$py manage.py load_demo
echo "Preparing the local base model (first run converts the GGUF weights, about 20 s)..."
$py manage.py prepare_models

# The worker and celery beat (the reapers' clock) as two processes that stop together; see
# scripts/workers.sh. Stopping this script stops them.
bash scripts/workers.sh &
workers=$!
trap 'kill $workers 2>/dev/null || true' EXIT INT TERM

cat <<TXT

  ftportal is running at http://127.0.0.1:${PORT}/
  Demo logins (password for all: demo-pass-123):
    lead      ML lead: freeze, train, evaluate, promote, roll back
    reviewer  reviewer: review the pending examples
    manager   manager: reads everything, changes nothing
    admin     admin: everything, plus /admin/
  Worker log: var/log/worker.log, beat log: var/log/beat.log. Stop with Ctrl+C.

TXT
$py manage.py runserver "127.0.0.1:${PORT}" --noreload
