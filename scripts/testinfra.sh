#!/usr/bin/env bash
# Test infrastructure: `up` makes every real server the tests need available and writes their
# addresses to .infra/env; `down` stops (or drops) what `up` started. Servers are started with
# their PID recorded and stopped by PID. Under CI=true a server that cannot be had is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
INFRA=.infra
mkdir -p "$INFRA"
PGHOST_ADDR=${FXRAY_TEST_PG_HOST:-127.0.0.1}
PGPORT_NUM=${FXRAY_TEST_PG_PORT:-5432}

fail() { echo "testinfra: $*" >&2; exit 1; }

pg_ready() { pg_isready -q -h "$PGHOST_ADDR" -p "$PGPORT_NUM" 2>/dev/null; }

postgres_up() {
  if [ -n "${FXRAY_TEST_POSTGRES_URL:-}" ]; then
    echo "export FXRAY_TEST_POSTGRES_URL=$FXRAY_TEST_POSTGRES_URL" >> "$INFRA/env"; return
  fi
  if ! pg_ready && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do pg_ready && break; sleep 0.2; done
  fi
  pg_ready || fail "PostgreSQL is not reachable on $PGHOST_ADDR:$PGPORT_NUM"
  local db="fxray_test_$(date +%s)_$$"
  psql -q -h "$PGHOST_ADDR" -p "$PGPORT_NUM" -U postgres -d postgres -c "CREATE DATABASE $db" >/dev/null \
    || fail "cannot create database $db"
  echo "$db" > "$INFRA/pg.db"
  echo "export FXRAY_TEST_POSTGRES_URL=postgresql+psycopg2://postgres@$PGHOST_ADDR:$PGPORT_NUM/$db" >> "$INFRA/env"
  echo "testinfra: PostgreSQL database $db"
}

postgres_down() {
  [ -f "$INFRA/pg.db" ] || return 0
  local db; db=$(cat "$INFRA/pg.db")
  psql -q -h "$PGHOST_ADDR" -p "$PGPORT_NUM" -U postgres -d postgres \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -f "$INFRA/pg.db"
}

ray_tmp_up() {
  # Ray's Unix socket paths must stay short; its session folders are never cleaned.
  local dir; dir=$(mktemp -d /tmp/fxr.XXXXXX)
  echo "$dir" > "$INFRA/ray.tmp"
  echo "export RAY_TMPDIR=$dir" >> "$INFRA/env"
}

ray_tmp_down() {
  [ -f "$INFRA/ray.tmp" ] || return 0
  rm -rf "$(cat "$INFRA/ray.tmp")"; rm -f "$INFRA/ray.tmp"
}

case "${1:-}" in
  up)
    : > "$INFRA/env"
    [ "${CI:-}" = "true" ] && echo "export FXRAY_REQUIRE_SERVERS=1" >> "$INFRA/env"
    postgres_up
    ray_tmp_up
    ;;
  down)
    postgres_down
    ray_tmp_down
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
