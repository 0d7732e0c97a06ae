#!/usr/bin/env bash
# Property-based API test: schemathesis (PyPI, pinned, in a venv under target/) generates
# requests from the server's own /openapi.json and fails the run on any 5xx answer, any
# status, content type or body that the document does not allow. The server is the real
# binary on 127.0.0.1 (a free port) with the real backbones in ./models and a temporary
# data folder holding an API key, one dataset and one trained model, so lists and records
# are not all empty. Bounded: a few hundred cases, about a minute.
#
# Usage: scripts/schemathesis.sh [extra schemathesis options]
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.32.5
VENV=target/schemathesis-venv
BIN=target/release/warmstart
MODELS="${WARMSTART_MODELS_DIR:-./models}"

if [ ! -x "$VENV/bin/st" ] || [ "$("$VENV/bin/st" --version 2>/dev/null)" != "st, version $VERSION" ]; then
  python3 -m venv "$VENV" || { echo "schemathesis: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi
if [ ! -x "$BIN" ] || [ -n "$(find src migrations static/docs Cargo.toml Cargo.lock -newer "$BIN" -print -quit)" ]; then
  cargo build --release --bin warmstart
fi
scripts/fetch-backbones.sh "$MODELS" >/dev/null

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# With a key, as a deployed server runs (a keyless one refuses made-up keys, which the
# generated requests would otherwise send).
key="$("$BIN" keys create --name schemathesis --data-dir="$work/data" | head -1)"
auth="Authorization: Bearer $key"
# Upload rate limits off: the generated uploads would otherwise mostly meet 429s.
RUST_LOG=warmstart=info NO_COLOR=1 "$BIN" serve --listen=127.0.0.1:0 --upload-rate=0 \
  --data-dir="$work/data" --models-dir="$MODELS" >"$work/server.log" 2>&1 &
server=$!
base=""
for _ in $(seq 1 600); do
  base="$(grep -o 'listening on http://[0-9.:]*' "$work/server.log" | head -1 | sed 's/listening on //')" || true
  [ -n "$base" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; echo "schemathesis: the server did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$base" ] || { cat "$work/server.log" >&2; echo "schemathesis: the server did not listen" >&2; exit 1; }

# One dataset and one model (head only: seconds), so the lists hold real records.
csv="$work/seed.csv"
{
  echo "text,label"
  for i in 1 2 3 4 5 6 7 8; do
    echo "the invoice $i was charged twice,billing"
    echo "the app crashes when I open screen $i,bug"
  done
} >"$csv"
dataset="$(curl -sf -H "$auth" -F "file=@$csv" "$base/v1/datasets" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')"
job="$(curl -sf -H "$auth" -H 'Content-Type: application/json' \
  -d "{\"dataset_id\":\"$dataset\",\"hyperparameters\":{\"finetune_epochs\":0}}" "$base/v1/jobs" |
  python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')"
for _ in $(seq 1 300); do
  status="$(curl -sf -H "$auth" "$base/v1/jobs/$job" | python3 -c 'import json,sys;print(json.load(sys.stdin)["status"])')"
  case "$status" in succeeded) break ;; failed|cancelled) echo "schemathesis: seed job $status" >&2; exit 1 ;; esac
  sleep 1
done
[ "$status" = succeeded ] || { echo "schemathesis: the seed job did not finish" >&2; exit 1; }
WS_DATASET="$dataset" WS_JOB="$job" \
  WS_MODEL="$(curl -sf -H "$auth" "$base/v1/jobs/$job" | python3 -c 'import json,sys;print(json.load(sys.stdin)["model_id"])')"
export WS_DATASET WS_JOB WS_MODEL

start=$(date +%s)
set +e
"$VENV/bin/st" --config-file scripts/schemathesis.toml run "$base/openapi.json" --url "$base" -H "$auth" \
  --phases examples,coverage,fuzzing \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-25}" --workers 2 --seed 1 \
  --request-timeout 30 --no-color "$@" 2>&1 | tee "$work/st.log"
rc=${PIPESTATUS[0]}
set -e
echo "schemathesis: $(($(date +%s) - start)) s, exit $rc"
if [ "$rc" -ne 0 ]; then
  echo "schemathesis: FAILED; the server's log:" >&2
  tail -50 "$work/server.log" >&2
fi
exit "$rc"
