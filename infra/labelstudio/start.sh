#!/usr/bin/env bash
# Starts a headless Label Studio server on 127.0.0.1 and waits until it answers.
#
#   LS_USERNAME=... LS_PASSWORD=... LS_TOKEN=<40 hex> \
#   start.sh --port 8089 --data-dir DIR --media-root DIR [--pid-file F] [--log-file F] [--timeout S]
#
# The admin user and its legacy API token come from the environment of the caller (never from the
# command line, never printed). An empty data dir is first filled from the migrated template
# (make_template.sh), so a fresh server is up in seconds. Exits non-zero with the log tail when the
# server does not answer within the timeout. Options may also be given as LS_PORT, LS_DATA_DIR,
# LS_MEDIA_ROOT, LS_PID_FILE, LS_LOG_FILE, LS_START_TIMEOUT.
set -euo pipefail
source "$(dirname "$0")/_common.sh"

PORT=${LS_PORT:-8089}
DATA_DIR=${LS_DATA_DIR:-}
MEDIA_ROOT=${LS_MEDIA_ROOT:-}
PID_FILE=${LS_PID_FILE:-}
LOG_FILE=${LS_LOG_FILE:-}
TIMEOUT=${LS_START_TIMEOUT:-180}
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT=$2; shift 2 ;;
    --data-dir) DATA_DIR=$2; shift 2 ;;
    --media-root) MEDIA_ROOT=$2; shift 2 ;;
    --pid-file) PID_FILE=$2; shift 2 ;;
    --log-file) LOG_FILE=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    *) ls_die "unknown argument: $1" ;;
  esac
done
[ -n "$DATA_DIR" ] || ls_die "--data-dir is required"
[ -n "${LS_USERNAME:-}" ] || ls_die "LS_USERNAME (admin e-mail) must be set in the environment"
[ -n "${LS_PASSWORD:-}" ] || ls_die "LS_PASSWORD must be set in the environment"
[ -n "${LS_TOKEN:-}" ] || ls_die "LS_TOKEN (legacy API token, 40 hex) must be set in the environment"
[[ "$LS_TOKEN" =~ ^[0-9a-fA-F]{40}$ ]] || ls_die "LS_TOKEN must be 40 hexadecimal characters"
[[ "$PORT" =~ ^[0-9]+$ ]] || ls_die "--port must be a number"
ls_require_venv

mkdir -p "$DATA_DIR"
DATA_DIR=$(cd "$DATA_DIR" && pwd)
MEDIA_ROOT=${MEDIA_ROOT:-$DATA_DIR/media-root}
mkdir -p "$MEDIA_ROOT"
MEDIA_ROOT=$(cd "$MEDIA_ROOT" && pwd)
PID_FILE=${PID_FILE:-$DATA_DIR/labelstudio.pid}
LOG_FILE=${LOG_FILE:-$DATA_DIR/labelstudio.log}
URL="http://127.0.0.1:$PORT"

if ls_pid_alive "$PID_FILE"; then
  if [ "$(ls_http_code "$URL/health")" = 200 ]; then
    ls_say "already running (pid $(cat "$PID_FILE")) at $URL"
    exit 0
  fi
  ls_die "a process from $PID_FILE (pid $(cat "$PID_FILE")) is alive but $URL/health does not answer; run stop.sh first"
fi
# Label Studio silently moves to PORT+1 when PORT is taken: refuse instead.
if ls_port_in_use "$PORT"; then
  ls_die "port $PORT on 127.0.0.1 is already in use; choose another --port"
fi

if [ ! -f "$DATA_DIR/label_studio.sqlite3" ]; then
  template=$(bash "$HERE/make_template.sh" | tail -n1)
  cp -a "$template/." "$DATA_DIR/"
  rm -f "$DATA_DIR/.dataengine-template-ok"
fi

ls_export_common_env
export LABEL_STUDIO_BASE_DATA_DIR="$DATA_DIR"
export LABEL_STUDIO_USERNAME="$LS_USERNAME" LABEL_STUDIO_PASSWORD="$LS_PASSWORD" LABEL_STUDIO_USER_TOKEN="$LS_TOKEN"
export LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="$MEDIA_ROOT"
# The server listens on loopback only; webhooks and the ML backend live on loopback too.
if [ "${LS_ALLOW_LOOPBACK_CALLBACKS:-1}" = 1 ]; then
  export SSRF_PROTECTION_ENABLED=false LABEL_STUDIO_SSRF_PROTECTION_ENABLED=false ML_BLOCK_LOCAL_IP=false
fi
: >"$LOG_FILE"
# setsid: the server leads its own process group, so stop.sh can end it (and only it) by PID.
setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PID_FILE" \
  "$LS_BIN" start --no-browser --internal-host 127.0.0.1 --port "$PORT" --data-dir "$DATA_DIR" \
  </dev/null >>"$LOG_FILE" 2>&1 &
unset LABEL_STUDIO_PASSWORD LABEL_STUDIO_USER_TOKEN

redacted_tail() {
  local line
  tail -n "${1:-40}" "$LOG_FILE" | while IFS= read -r line; do
    line=${line//"$LS_PASSWORD"/***}; line=${line//"$LS_TOKEN"/***}; printf '%s\n' "$line"
  done
}

deadline=$((SECONDS + TIMEOUT))
while :; do
  code=$(ls_http_code "$URL/health")
  [ "$code" = 200 ] && break
  if ! ls_pid_alive "$PID_FILE"; then
    redacted_tail >&2
    ls_die "Label Studio exited during start-up (log: $LOG_FILE, tail above)"
  fi
  if [ $SECONDS -ge $deadline ]; then
    redacted_tail >&2
    ls_die "Label Studio did not answer $URL/health within ${TIMEOUT}s (log: $LOG_FILE, tail above); it is still running as pid $(cat "$PID_FILE"), stop it with stop.sh"
  fi
  sleep 0.5
done
if grep -q "Trying to start at" "$LOG_FILE"; then
  bash "$HERE/stop.sh" --pid-file "$PID_FILE" >/dev/null 2>&1 || true
  ls_die "port $PORT was taken while starting; Label Studio moved to another port and was stopped"
fi
# The token must work: a data dir that already had this user with another token would not.
code=$(LS_URL="$URL" "$LS_VENV/bin/python" - <<'PY'
import os, urllib.request, urllib.error
req = urllib.request.Request(os.environ["LS_URL"] + "/api/current-user/whoami",
                             headers={"Authorization": "Token " + os.environ["LS_TOKEN"]})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
)
if [ "$code" != 200 ]; then
  ls_die "server is up at $URL but the API token from LS_TOKEN is refused (HTTP $code): the data dir $DATA_DIR has this user with another token; use a fresh data dir"
fi
ls_say "running (pid $(cat "$PID_FILE")) at $URL, data $DATA_DIR, media root $MEDIA_ROOT, log $LOG_FILE"
