#!/usr/bin/env bash
# Reports whether the Label Studio server of a PID file runs and answers.
#   status.sh --pid-file F --port P       exit 0: running and healthy, 1: running, not answering, 3: stopped
set -euo pipefail
source "$(dirname "$0")/_common.sh"
PID_FILE=${LS_PID_FILE:-}
[ -z "$PID_FILE" ] && [ -n "${LS_DATA_DIR:-}" ] && PID_FILE="$LS_DATA_DIR/labelstudio.pid"
PORT=${LS_PORT:-8089}
while [ $# -gt 0 ]; do
  case "$1" in
    --pid-file) PID_FILE=$2; shift 2 ;;
    --data-dir) PID_FILE="$2/labelstudio.pid"; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    *) ls_die "unknown argument: $1" ;;
  esac
done
[ -n "$PID_FILE" ] || ls_die "--pid-file is required"
if ! ls_pid_alive "$PID_FILE"; then
  ls_say "stopped"
  exit 3
fi
code=$(ls_http_code "http://127.0.0.1:$PORT/health")
if [ "$code" = 200 ]; then
  ls_say "running (pid $(cat "$PID_FILE")) at http://127.0.0.1:$PORT, healthy"
  exit 0
fi
ls_say "running (pid $(cat "$PID_FILE")) but http://127.0.0.1:$PORT/health answers $code"
exit 1
