#!/usr/bin/env bash
# The whole test suite: fetch the real backbones (and the test images) if missing, then run
# every test in release mode (candle is 10-50x slower unoptimised; one optimised build
# serves both the service and the tests). Tests that need the real backbones fail instead
# of skipping when CI=true. Without arguments, the web UI's browser test runs after them
# (scripts/browser-test.sh), then schemathesis against the live server from its OpenAPI
# document (scripts/schemathesis.sh); arguments are passed to cargo test and skip both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-backbones.sh "${WARMSTART_MODELS_DIR:-./models}"
if [ -x scripts/fetch-test-data.sh ]; then scripts/fetch-test-data.sh; fi
# Small machines: candle's element-wise pool spin-waits against the test threads (see
# config::tune_thread_pools, which the service applies itself).
export CANDLE_NUM_THREADS="${CANDLE_NUM_THREADS:-1}"
# The store and multi-host tests also run against PostgreSQL (scripts/start-postgres.sh: a
# throwaway local server); with CI=true they fail rather than skip without one.
if [ -z "${WARMSTART_TEST_POSTGRES_URL:-}" ]; then
  if url="$(scripts/start-postgres.sh)"; then
    export WARMSTART_TEST_POSTGRES_URL="$url"
  elif [ "${CI:-}" = true ]; then
    echo "could not start PostgreSQL for the tests" >&2
    exit 1
  fi
fi
cargo test --release "$@"
if [ $# -eq 0 ]; then
  scripts/browser-test.sh
  scripts/schemathesis.sh
fi
