#!/usr/bin/env bash
# Stops the mongod whose PID start.sh recorded: SIGTERM (a clean shutdown), SIGKILL after a grace
# period. Safe to run when it is not running.
#   stop.sh --pid-file F [--timeout S]     (or --db-dir DIR: pid file DIR/../mongod.pid)
set -euo pipefail
source "$(dirname "$0")/_common.sh"
PID_FILE=${FO_DB_PID_FILE:-}
TIMEOUT=20
while [ $# -gt 0 ]; do
  case "$1" in
    --pid-file) PID_FILE=$2; shift 2 ;;
    --db-dir) PID_FILE="$(dirname "$2")/mongod.pid"; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    *) fo_die "unknown argument: $1" ;;
  esac
done
[ -n "$PID_FILE" ] || fo_die "--pid-file is required"
if ! fo_pid_alive "$PID_FILE"; then
  rm -f "$PID_FILE"
  fo_say "not running"
  exit 0
fi
pid=$(cat "$PID_FILE")
comm=$(ps -o comm= -p "$pid" 2>/dev/null || true)
[ "$comm" = mongod ] || fo_die "pid $pid from $PID_FILE is '$comm', not mongod; not stopping it (remove the stale pid file)"
kill -TERM "$pid" 2>/dev/null || true
for _ in $(seq 1 $((TIMEOUT * 5))); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if kill -0 "$pid" 2>/dev/null; then
  fo_say "pid $pid did not stop within ${TIMEOUT}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$PID_FILE"
fo_say "stopped (pid $pid)"
