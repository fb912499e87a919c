#!/usr/bin/env bash
# Starts a private MongoDB for FiftyOne on 127.0.0.1 and waits until it answers.
#
#   start.sh --port 27027 --db-dir DIR [--pid-file F] [--log-file F] [--timeout S] [--cache-gb G]
#
# An empty DIR is first filled from the template (make_template.sh: a data dir in which FiftyOne
# has already created its own collections), so a fresh database is ready at once. PID file
# defaults to DIR/../mongod.pid, log to DIR/../mongod.log. Refuses a port that is already taken.
# Options may also come as FO_DB_PORT, FO_DB_DIR, FO_DB_PID_FILE, FO_DB_LOG_FILE.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
PORT=${FO_DB_PORT:-27027}
DB_DIR=${FO_DB_DIR:-}
PID_FILE=${FO_DB_PID_FILE:-}
LOG_FILE=${FO_DB_LOG_FILE:-}
TIMEOUT=${FO_DB_START_TIMEOUT:-60}
CACHE_GB=${FO_DB_CACHE_GB:-0.25}
USE_TEMPLATE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT=$2; shift 2 ;;
    --db-dir) DB_DIR=$2; shift 2 ;;
    --pid-file) PID_FILE=$2; shift 2 ;;
    --log-file) LOG_FILE=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --cache-gb) CACHE_GB=$2; shift 2 ;;
    --no-template) USE_TEMPLATE=0; shift ;;
    *) fo_die "unknown argument: $1" ;;
  esac
done
[ -n "$DB_DIR" ] || fo_die "--db-dir is required"
[[ "$PORT" =~ ^[0-9]+$ ]] || fo_die "--port must be a number"
fo_require_mongod
mkdir -p "$DB_DIR"
DB_DIR=$(cd "$DB_DIR" && pwd)
PID_FILE=${PID_FILE:-$(dirname "$DB_DIR")/mongod.pid}
LOG_FILE=${LOG_FILE:-$(dirname "$DB_DIR")/mongod.log}

if fo_pid_alive "$PID_FILE"; then
  if fo_ping "$PORT"; then
    fo_say "already running (pid $(cat "$PID_FILE")) at mongodb://127.0.0.1:$PORT"
    exit 0
  fi
  fo_die "a process from $PID_FILE (pid $(cat "$PID_FILE")) is alive but does not answer on port $PORT; run stop.sh first"
fi
rm -f "$PID_FILE"
if fo_port_in_use "$PORT"; then
  fo_die "port $PORT on 127.0.0.1 is already in use; choose another --port"
fi
if [ $USE_TEMPLATE = 1 ] && [ -z "$(ls -A "$DB_DIR")" ]; then
  template=$(bash "$HERE/make_template.sh" | tail -n1)
  cp -a "$template/." "$DB_DIR/"
  rm -f "$DB_DIR/.dataengine-template-ok" "$DB_DIR/mongod.lock"
fi
# --fork: mongod returns once it accepts connections and writes its own PID file.
if ! "$MONGOD_BIN" --dbpath "$DB_DIR" --port "$PORT" --bind_ip 127.0.0.1 --nounixsocket \
    --wiredTigerCacheSizeGB "$CACHE_GB" \
    --wiredTigerEngineConfigString "log=(prealloc=false,file_max=10MB)" \
    --setParameter diagnosticDataCollectionEnabled=false \
    --fork --logpath "$LOG_FILE" --logappend --pidfilepath "$PID_FILE" >/dev/null 2>"$LOG_FILE.err"; then
  tail -n 20 "$LOG_FILE" >&2 2>/dev/null || true
  cat "$LOG_FILE.err" >&2 || true
  fo_die "mongod failed to start (log: $LOG_FILE)"
fi
rm -f "$LOG_FILE.err"
deadline=$((SECONDS + TIMEOUT))
until fo_ping "$PORT"; do
  if ! fo_pid_alive "$PID_FILE"; then
    tail -n 20 "$LOG_FILE" >&2 || true
    fo_die "mongod exited during start-up (log: $LOG_FILE)"
  fi
  [ $SECONDS -lt $deadline ] || fo_die "mongod did not answer on port $PORT within ${TIMEOUT}s (log: $LOG_FILE)"
  sleep 0.2
done
fo_say "running (pid $(cat "$PID_FILE")) at mongodb://127.0.0.1:$PORT, data $DB_DIR, log $LOG_FILE"
