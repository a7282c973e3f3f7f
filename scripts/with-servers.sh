#!/usr/bin/env bash
# Runs a command with the test servers up (scripts/testinfra.sh), and stops them afterwards:
# `scripts/with-servers.sh .venv/bin/python bench/cluster.py`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/testinfra.sh up
trap 'scripts/testinfra.sh down' EXIT
# shellcheck disable=SC1091
source .infra/env
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled RAY_DEDUP_LOGS=0
"$@"
