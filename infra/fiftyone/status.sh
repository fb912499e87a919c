#!/usr/bin/env bash
# Reports whether the mongod of a PID file runs and answers.
#   status.sh --pid-file F --port P     exit 0: running and answering, 1: running, not answering, 3: stopped
set -euo pipefail
source "$(dirname "$0")/_common.sh"
PID_FILE=${FO_DB_PID_FILE:-}
PORT=${FO_DB_PORT:-27027}
while [ $# -gt 0 ]; do
  case "$1" in
    --pid-file) PID_FILE=$2; shift 2 ;;
    --db-dir) PID_FILE="$(dirname "$2")/mongod.pid"; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    *) fo_die "unknown argument: $1" ;;
  esac
done
[ -n "$PID_FILE" ] || fo_die "--pid-file is required"
if ! fo_pid_alive "$PID_FILE"; then
  fo_say "stopped"
  exit 3
fi
if fo_ping "$PORT"; then
  fo_say "running (pid $(cat "$PID_FILE")) at mongodb://127.0.0.1:$PORT, answering"
  exit 0
fi
fo_say "running (pid $(cat "$PID_FILE")) but mongodb://127.0.0.1:$PORT does not answer"
exit 1
