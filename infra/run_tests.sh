#!/usr/bin/env bash
# Runs pytest with the services the suite needs. PostgreSQL is the machine's; the tests start
# moto, Label Studio and the rest themselves (fixtures), and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
bash infra/postgres/ensure_running.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
# pytest's 5 means "no test collected" (e.g. an empty marker selection): not a failure of the suite.
if [ $rc -eq 5 ]; then echo "no tests selected"; exit 0; fi
exit $rc
