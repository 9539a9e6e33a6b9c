#!/usr/bin/env bash
# One command from a fresh clone to a running ftportal: install, migrate, load the demo,
# start a Celery worker and the web server. Embedded default: SQLite and a filesystem broker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

PORT=${PORT:-8000}
export DJANGO_SETTINGS_MODULE=config.settings
py=.venv/bin/python
# DEBUG off, as in production: errors show a plain page, never a traceback or settings. This is
# plain http on one's own machine, so no HTTPS redirect, no Secure-only cookies and no HSTS.
export DJANGO_DEBUG=${DJANGO_DEBUG:-0}
export DJANGO_SECURE_SSL_REDIRECT=${DJANGO_SECURE_SSL_REDIRECT:-0}
export DJANGO_SECURE_COOKIES=${DJANGO_SECURE_COOKIES:-0}
export DJANGO_SECURE_HSTS_SECONDS=${DJANGO_SECURE_HSTS_SECONDS:-0}
# A secret key of this checkout's own, made on the first run and kept in var/ (git-ignored).
if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
  mkdir -p var
  [ -s var/secret_key ] || (umask 077 && $py -c 'import secrets; print(secrets.token_urlsafe(50))' >var/secret_key)
  DJANGO_SECRET_KEY=$(cat var/secret_key)
  export DJANGO_SECRET_KEY
fi
# With DEBUG off, WhiteNoise serves /static/ from the collected files.
$py manage.py collectstatic --no-input -v0
$py manage.py migrate --no-input -v0
# Token prices from the installed price table (beat refreshes them daily; unchanged: nothing added).
$py manage.py prices_import
$py manage.py load_demo
echo "Preparing the local base model (first run converts the GGUF weights, about 20 s)..."
$py manage.py prepare_models
# A production model for the demo to call at /v1/ (the first run trains a short LoRA, tens of
# seconds; later runs find it).
$py manage.py load_demo_model

# The gateway (GATEWAY_PORT, 8001) and the local model server that answers for local versions
# (MODEL_SERVER_PORT, 8002), stopping together; see scripts/serving.sh. The web server below
# gets the same server address, for the gateway routes it also serves.
export FTPORTAL_GATEWAY_LOCAL_SERVER_URL=${FTPORTAL_GATEWAY_LOCAL_SERVER_URL:-http://127.0.0.1:${MODEL_SERVER_PORT:-8002}}
bash scripts/serving.sh &
serving=$!

# The worker and celery beat (the reapers' clock) as two processes that stop together; see
# scripts/workers.sh. Stopping this script stops them.
bash scripts/workers.sh &
workers=$!
trap 'kill $workers $serving 2>/dev/null || true' EXIT INT TERM

cat <<TXT

  ftportal is running at http://127.0.0.1:${PORT}/
  Demo logins (password for all: demo-pass-123):
    lead      ML lead: freeze, train, evaluate, promote, roll back
    reviewer  reviewer: review the pending examples
    manager   manager: reads everything, changes nothing
    admin     admin: everything, plus /admin/
  Gateway (OpenAI-compatible): http://127.0.0.1:${GATEWAY_PORT:-8001}/v1/ (see the README:
    "Calling the demo's production model"); local model server: var/log/model_server.log.
  Worker log: var/log/worker.log, beat log: var/log/beat.log. Stop with Ctrl+C.

TXT
$py manage.py runserver "127.0.0.1:${PORT}" --noreload
