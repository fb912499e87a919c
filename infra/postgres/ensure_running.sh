#!/usr/bin/env bash
# Starts the machine's PostgreSQL if 127.0.0.1:5432 does not answer (Debian cluster layout).
set -uo pipefail
HOST=${PGHOST_CHECK:-127.0.0.1}
PORT=${PGPORT_CHECK:-5432}
if pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null; then exit 0; fi
echo "[postgres] $HOST:$PORT does not answer; starting the local cluster"
if command -v pg_ctlcluster >/dev/null; then
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  [ -n "$ver" ] && pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
fi
for _ in $(seq 1 30); do
  pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null && exit 0
  sleep 1
done
echo "[postgres] ERROR: PostgreSQL is not reachable on $HOST:$PORT" >&2
exit 1
