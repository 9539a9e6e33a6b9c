#!/usr/bin/env bash
# The background half of `make run`: one Celery worker and one celery beat (the clock that runs
# the reapers of abandoned jobs and evaluations), as two processes that stop together.
#
# Beat used to run inside the worker (-B); a worker killed with SIGKILL left that beat running
# with no parent, and the next `make run` started a second one. Now:
#   - a beat left by an earlier run (its pid in var/celerybeat.pid) is stopped before ours starts,
#     so there is only ever one per checkout;
#   - when either process ends, the other is stopped, and so are both when this script is.
# The web server is not stopped with them: its pages say that no worker is listening.
#
# Environment: FTPORTAL_VAR_DIR (default var), FTPORTAL_WORKER_QUEUES (default all three).
# Arguments are passed on to `celery worker`.
set -uo pipefail
cd "$(dirname "$0")/.."

var=${FTPORTAL_VAR_DIR:-var}
queues=${FTPORTAL_WORKER_QUEUES:-default,training,inference}
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings}
celery=.venv/bin/celery
beat_pidfile=$var/celerybeat.pid
mkdir -p "$var/log"

stop_leftover_beat() {
  [[ -f $beat_pidfile ]] || return 0
  local pid
  pid=$(tr -dc '0-9' <"$beat_pidfile")
  # Only a celery beat: the pid may have been reused by something else since.
  if [[ -n $pid ]] && ps -o args= -p "$pid" 2>/dev/null | grep -q 'celery.* beat'; then
    echo "Stopping the celery beat left running by an earlier run (pid $pid)." >&2
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$beat_pidfile"
}

stop_leftover_beat

worker='' beat=''
stop_both() {
  # No wait for the worker: a warm shutdown finishes its current task, however long.
  [[ -n $worker ]] && kill "$worker" 2>/dev/null
  [[ -n $beat ]] && kill "$beat" 2>/dev/null
  return 0
}
trap stop_both EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

"$celery" -A config worker --pool=solo --concurrency=1 --queues="$queues" --loglevel=INFO "$@" \
  >"$var/log/worker.log" 2>&1 &
worker=$!
"$celery" -A config beat --schedule "$var/celerybeat-schedule" --pidfile "$beat_pidfile" \
  --loglevel=INFO >"$var/log/beat.log" 2>&1 &
beat=$!

wait -n
status=$?
if kill -0 "$worker" 2>/dev/null; then
  echo "celery beat stopped (exit status $status); stopping the worker with it." >&2
else
  echo "The Celery worker stopped (exit status $status); stopping celery beat with it." \
    "The web pages will say that no worker is listening; restart with make run." >&2
fi
exit "$status"
