#!/usr/bin/env bash
# Creates (once) a MongoDB data dir to copy for every fresh database: mongod initialised (WiredTiger
# files, journal) and FiftyOne's own bookkeeping collections created, so tests and `services up`
# start from a copy instead of initialising. Usage: make_template.sh [--force]
# Prints the template path on its last line.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
force=0; [ "${1:-}" = "--force" ] && force=1
if [ -f "$MONGO_TEMPLATE_DIR/.dataengine-template-ok" ] && [ $force = 0 ]; then
  echo "$MONGO_TEMPLATE_DIR"; exit 0
fi
fo_require_mongod
mkdir -p "$(dirname "$MONGO_TEMPLATE_DIR")"
exec 9>"$MONGO_TEMPLATE_DIR.lock"
flock -w 300 9 || fo_die "could not lock $MONGO_TEMPLATE_DIR.lock within 300 s"
if [ -f "$MONGO_TEMPLATE_DIR/.dataengine-template-ok" ] && [ $force = 0 ]; then
  echo "$MONGO_TEMPLATE_DIR"; exit 0
fi
tmp=$(mktemp -d "$MONGO_TEMPLATE_DIR.build.XXXXXX")
trap 'bash "$HERE/stop.sh" --pid-file "$tmp/mongod.pid" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fo_say "building a template data dir (port $port)" >&2
bash "$HERE/start.sh" --no-template --port "$port" --db-dir "$tmp/db" --pid-file "$tmp/mongod.pid" \
  --log-file "$tmp/mongod.log" >&2
# Let FiftyOne create its bookkeeping (config collection, indexes) in the template.
FIFTYONE_DATABASE_URI="mongodb://127.0.0.1:$port" FIFTYONE_DATABASE_NAME=fiftyone \
FIFTYONE_DO_NOT_TRACK=true FIFTYONE_DATABASE_VALIDATION=false FIFTYONE_DATABASE_ADMIN=true \
  "$VENV/bin/python" -c 'import fiftyone as fo; fo.list_datasets()' >&2
bash "$HERE/stop.sh" --pid-file "$tmp/mongod.pid" >&2
rm -f "$tmp/db/mongod.lock"
touch "$tmp/db/.dataengine-template-ok"
rm -rf "$MONGO_TEMPLATE_DIR"
mv "$tmp/db" "$MONGO_TEMPLATE_DIR"
rm -rf "$tmp"
trap - EXIT
fo_say "template ready" >&2
echo "$MONGO_TEMPLATE_DIR"
