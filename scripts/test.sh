#!/usr/bin/env bash
# Runs the whole suite: starts every server the tests need, runs fast unit tests first,
# then the integration tests, and stops what it started (even on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

scripts/testinfra.sh up
trap 'scripts/testinfra.sh down' EXIT
# shellcheck disable=SC1091
source .infra/env

export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled RAY_DEDUP_LOGS=0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0

if [ "$#" -gt 0 ]; then
  "$BIN/pytest" "$@"
  exit
fi
echo "==> unit tests"
"$BIN/pytest" tests/unit -q
echo "==> integration tests"
"$BIN/pytest" tests/integration -q
