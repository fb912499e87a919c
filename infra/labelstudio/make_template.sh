#!/usr/bin/env bash
# Creates (once) a migrated Label Studio data directory to copy for every fresh server: the first
# start of an empty data dir runs ~70 s of Django migrations, a copy of this starts in ~5 s.
# It holds one organisation (legacy API tokens enabled) owned by a template account with a random
# password and token that nobody knows; start.sh adds the caller's admin user to it.
# Usage: make_template.sh [--force]    Prints the template path on its last line.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
ls_require_venv
force=0; [ "${1:-}" = "--force" ] && force=1
if [ -f "$LS_TEMPLATE_DIR/.dataengine-template-ok" ] && [ $force = 0 ]; then
  echo "$LS_TEMPLATE_DIR"; exit 0
fi
mkdir -p "$(dirname "$LS_TEMPLATE_DIR")"
# One builder at a time (tests in parallel, make install): a lock beside the template.
exec 9>"$LS_TEMPLATE_DIR.lock"
flock -w 600 9 || ls_die "could not lock $LS_TEMPLATE_DIR.lock within 600 s"
if [ -f "$LS_TEMPLATE_DIR/.dataengine-template-ok" ] && [ $force = 0 ]; then
  echo "$LS_TEMPLATE_DIR"; exit 0
fi
tmp=$(mktemp -d "$LS_TEMPLATE_DIR.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
ls_say "building a migrated template data dir (Django migrations, ~1-2 min)" >&2
ls_export_common_env
rnd() { "$LS_VENV/bin/python" -c 'import secrets; print(secrets.token_hex(20))'; }
(
  export LABEL_STUDIO_BASE_DATA_DIR="$tmp"
  export LABEL_STUDIO_USERNAME="template-owner@dataengine.local"
  export LABEL_STUDIO_PASSWORD; LABEL_STUDIO_PASSWORD=$(rnd)
  export LABEL_STUDIO_USER_TOKEN; LABEL_STUDIO_USER_TOKEN=$(rnd)
  cd "$tmp"
  "$LS_BIN" init --quiet --no-browser --data-dir "$tmp" --enable-legacy-api-token >"$tmp/init.log" 2>&1
) || { tail -n 30 "$tmp/init.log" >&2; ls_die "label-studio init failed (log above)"; }
rm -f "$tmp/init.log"
touch "$tmp/.dataengine-template-ok"
rm -rf "$LS_TEMPLATE_DIR"
mv "$tmp" "$LS_TEMPLATE_DIR"
trap - EXIT
ls_say "template ready" >&2
echo "$LS_TEMPLATE_DIR"
