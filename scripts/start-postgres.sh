#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: Debian's `postgresql` (installed if missing),
# a cluster in a temp folder owned by the `postgres` user when run as root, listening on
# 127.0.0.1 only, with trust authentication and fsync off (test data, never kept).
# Prints the URL to export as WARMSTART_TEST_POSTGRES_URL. Idempotent: a server already
# answering on the port is reused. Stop it with: scripts/start-postgres.sh stop
set -euo pipefail
PORT="${WARMSTART_PG_PORT:-55432}"
DIR="${WARMSTART_PG_DIR:-/tmp/warmstart-pg-$PORT}"
URL="postgres://warmstart@127.0.0.1:$PORT/warmstart"

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bin)" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
BIN="$(pg_bin)"
# initdb refuses to run as root: the cluster belongs to `postgres` then.
as_owner() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

if [ "${1:-}" = stop ]; then
  as_owner "'$BIN/pg_ctl' -D '$DIR' -m fast stop" >/dev/null || true
  exit 0
fi
if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  echo "$URL"
  exit 0
fi
mkdir -p "$DIR"
if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; fi
chmod 700 "$DIR"
if [ ! -f "$DIR/PG_VERSION" ]; then
  as_owner "'$BIN/initdb' -D '$DIR' -A trust -U warmstart --no-sync" >"$DIR.initdb.log" 2>&1 \
    || { cat "$DIR.initdb.log" >&2; exit 1; }
fi
as_owner "'$BIN/pg_ctl' -D '$DIR' -l '$DIR/server.log' -w -t 60 \
  -o \"-k '$DIR' -p $PORT -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300\" start" \
  >/dev/null || { cat "$DIR/server.log" >&2; exit 1; }
"$BIN/psql" -q -h 127.0.0.1 -p "$PORT" -U warmstart -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = 'warmstart'" | grep -q 1 \
  || "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U warmstart warmstart
echo "$URL"
