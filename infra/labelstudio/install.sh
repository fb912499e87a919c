#!/usr/bin/env bash
# Installs the Label Studio SERVER in its own venv (infra/labelstudio/.venv): its pins
# (python-json-logger==2.0.4, ...) clash with Prefect's, so it never shares the project venv.
# The project venv only has label-studio-sdk. Safe to re-run: skips when the server already runs.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
LS_VERSION=${LS_VERSION:-1.23.2}
LS_VENV=${LS_VENV:-$HERE/.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

say() { printf '\033[1m[labelstudio]\033[0m %s\n' "$*"; }

# NB: `label-studio --version` is not used as the check: it migrates a default data dir under
# ~/.local/share first (~70 s). The installed distribution's version + an import is enough.
installed_version() {
  "$LS_VENV/bin/python" -c 'import importlib.metadata as m, label_studio; print(m.version("label-studio"))' 2>/dev/null
}
if [ -x "$LS_VENV/bin/label-studio" ] && have=$(installed_version) && [ "$have" = "$LS_VERSION" ]; then
  say "label-studio $have already installed in $LS_VENV"
  bash "$HERE/make_template.sh" >/dev/null
  exit 0
fi

if [ ! -x "$LS_VENV/bin/python" ]; then
  say "creating $LS_VENV"
  "$PYTHON" -m venv "$LS_VENV"
fi
say "installing label-studio==$LS_VERSION (a few minutes)"
# (grep: drop pip's warnings about absent local index folders on these machines)
quiet_pip() { "$LS_VENV/bin/pip" install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }
quiet_pip --upgrade pip wheel setuptools
quiet_pip "label-studio==$LS_VERSION"
[ "$(installed_version)" = "$LS_VERSION" ] || {
  echo "[labelstudio] ERROR: label-studio $LS_VERSION did not install into $LS_VENV" >&2
  exit 1
}
say "installed label-studio $LS_VERSION in $LS_VENV"
# The migrated template data dir (once, ~1-2 min): every later server starts from a copy in seconds.
bash "$HERE/make_template.sh" >/dev/null
