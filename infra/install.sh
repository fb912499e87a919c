#!/usr/bin/env bash
# Creates the project venv (and the service venvs later issues add). Safe to re-run: every step
# checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

say() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

# System packages: ffmpeg (video metadata for FiftyOne, mp4 tools); chromium + driver (browser tests).
need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing system packages: ${need_apt[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null) \
      || say "WARNING: apt-get could not install ${need_apt[*]}; video probing or browser tests may fail"
  else
    say "WARNING: missing system packages ${need_apt[*]} and not root: install them with your package manager"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip wheel setuptools
# torch first: the pinned pair whose torchvision imports beside it (see docs/platform.md).
"$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null || {
  say "installing torch 2.14.1 + torchvision 0.29.1 (large, a few minutes)"
  "$PIP" install -q torch==2.14.1 torchvision==0.29.1
}
say "installing dataengine with its extras"
SAM2_BUILD_CUDA=0 "$PIP" install -q -e ".[ml,test,loop,curation]"

# Label Studio's server lives in its own venv: its pins clash with Prefect's.
if [ -f infra/labelstudio/install.sh ]; then
  bash infra/labelstudio/install.sh
fi
say "done: $("$VENV/bin/dataengine" --version 2>/dev/null || echo dataengine)"
