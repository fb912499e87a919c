#!/usr/bin/env bash
# Stops the Label Studio server whose PID start.sh wrote: SIGTERM to its process group, then
# SIGKILL after a grace period. Safe to run when it is not running.
#   stop.sh --pid-file F [--timeout S]     (or LS_PID_FILE / LS_DATA_DIR: pid file DATA_DIR/labelstudio.pid)
set -euo pipefail
source "$(dirname "$0")/_common.sh"
PID_FILE=${LS_PID_FILE:-}
[ -z "$PID_FILE" ] && [ -n "${LS_DATA_DIR:-}" ] && PID_FILE="$LS_DATA_DIR/labelstudio.pid"
TIMEOUT=15
while [ $# -gt 0 ]; do
  case "$1" in
    --pid-file) PID_FILE=$2; shift 2 ;;
    --data-dir) PID_FILE="$2/labelstudio.pid"; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    *) ls_die "unknown argument: $1" ;;
  esac
done
[ -n "$PID_FILE" ] || ls_die "--pid-file is required"
if ! ls_pid_alive "$PID_FILE"; then
  rm -f "$PID_FILE"
  ls_say "not running"
  exit 0
fi
pid=$(cat "$PID_FILE")
# The server leads its own process group (setsid in start.sh): end the group, not just the pid.
target=$pid
[ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ] && target=-$pid
kill -TERM -- "$target" 2>/dev/null || true
for _ in $(seq 1 $((TIMEOUT * 4))); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.25
done
if kill -0 "$pid" 2>/dev/null; then
  ls_say "pid $pid did not stop within ${TIMEOUT}s; sending SIGKILL"
  kill -KILL -- "$target" 2>/dev/null || true
fi
rm -f "$PID_FILE"
ls_say "stopped (pid $pid)"
