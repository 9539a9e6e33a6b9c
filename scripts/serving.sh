#!/usr/bin/env bash
# The serving half of `make run`: the local model server (python -m providers.local.serve: the
# embedded base model loaded once, the adapters of the versions in use, concurrent requests
# batched) and the OpenAI-compatible gateway under uvicorn, which reaches the server through
# FTPORTAL_GATEWAY_LOCAL_SERVER_URL. Two processes that stop together, as in scripts/workers.sh:
# when either ends, the other is stopped, and so are both when this script is.
#
# Environment: GATEWAY_HOST/GATEWAY_PORT (127.0.0.1:8001), MODEL_SERVER_PORT (8002),
# FTPORTAL_VAR_DIR (var), FTPORTAL_MODEL_CACHE and FTPORTAL_ARTIFACTS_DIR (as in settings),
# FTPORTAL_MODEL_SERVER_WINDOW_MS (25) and FTPORTAL_MODEL_SERVER_MAX_BATCH (16).
set -uo pipefail
cd "$(dirname "$0")/.."

var=${FTPORTAL_VAR_DIR:-var}
model_server_port=${MODEL_SERVER_PORT:-8002}
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings}
export FTPORTAL_GATEWAY_LOCAL_SERVER_URL=${FTPORTAL_GATEWAY_LOCAL_SERVER_URL:-http://127.0.0.1:$model_server_port}
mkdir -p "$var/log"

model_server='' gateway=''
stop_both() {
  [[ -n $model_server ]] && kill "$model_server" 2>/dev/null
  [[ -n $gateway ]] && kill "$gateway" 2>/dev/null
  return 0
}
trap stop_both EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# The server reads adapters only from the artifact store, where training writes them.
.venv/bin/python -m providers.local.serve --host 127.0.0.1 --port "$model_server_port" \
  --model-cache "${FTPORTAL_MODEL_CACHE:-$var/models}" \
  --adapter-root "${FTPORTAL_ARTIFACTS_DIR:-$var/artifacts}" \
  --window-ms "${FTPORTAL_MODEL_SERVER_WINDOW_MS:-25}" \
  --max-batch "${FTPORTAL_MODEL_SERVER_MAX_BATCH:-16}" \
  >"$var/log/model_server.log" 2>&1 &
model_server=$!
.venv/bin/uvicorn config.asgi:application --host "${GATEWAY_HOST:-127.0.0.1}" \
  --port "${GATEWAY_PORT:-8001}" >"$var/log/gateway.log" 2>&1 &
gateway=$!

wait -n
status=$?
if kill -0 "$gateway" 2>/dev/null; then
  echo "The local model server stopped (exit status $status); stopping the gateway with it." >&2
else
  echo "The gateway stopped (exit status $status); stopping the local model server with it." >&2
fi
exit "$status"
