# Sourced by the Label Studio scripts. Never prints a password or a token.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LS_VERSION=${LS_VERSION:-1.23.2}
LS_VENV=${LS_VENV:-$HERE/.venv}
LS_BIN="$LS_VENV/bin/label-studio"
LS_TEMPLATE_DIR=${LS_TEMPLATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dataengine/labelstudio-template-$LS_VERSION}

ls_say() { printf '[labelstudio] %s\n' "$*"; }
ls_die() { printf '[labelstudio] ERROR: %s\n' "$*" >&2; exit 1; }

ls_require_venv() {
  [ -x "$LS_BIN" ] || ls_die "Label Studio is not installed ($LS_BIN missing): run 'make install' or 'bash infra/labelstudio/install.sh'"
}

# Environment every Label Studio process of ours runs with (headless, offline, no telemetry).
ls_export_common_env() {
  export LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false
  export LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=true
  export LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true
  export DJANGO_DB=sqlite
  # Label Studio reports errors to its vendor's Sentry by default (backend, and the DSN is put in
  # every page for the browser): off unless an operator names their own (LS_SENTRY_DSN,
  # LS_FRONTEND_SENTRY_DSN), so no task data or stack trace leaves the deployment by surprise.
  export SENTRY_DSN="${LS_SENTRY_DSN:-}" FRONTEND_SENTRY_DSN="${LS_FRONTEND_SENTRY_DSN:-}"
  export PYTHONUNBUFFERED=1
  unset DJANGO_SETTINGS_MODULE
}

ls_port_in_use() {  # 0 when something listens on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ls_pid_alive() {  # $1: pid file
  [ -f "$1" ] || return 1
  local pid; pid=$(cat "$1" 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

ls_http_code() {  # $1: url -> prints the HTTP status (000 when nothing answers)
  "$LS_VENV/bin/python" - "$1" <<'PY' 2>/dev/null || echo 000
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
}
