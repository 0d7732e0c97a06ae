#!/usr/bin/env bash
# The web UI's browser test (tests/browser/run.mjs): the real server with the real MiniLM
# backbone, driven through the page by headless Debian chromium via playwright-core.
# Screenshots and the server log go to target/browser-artifacts/ (or $BROWSER_ARTIFACTS).
# Needs node >= 18, npm and chromium: with CI=true a missing one fails the run, otherwise
# the test is skipped with a notice.
set -euo pipefail
cd "$(dirname "$0")/.."
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export CHROMIUM
export BROWSER_ARTIFACTS="${BROWSER_ARTIFACTS:-$PWD/target/browser-artifacts}"

missing=()
command -v node >/dev/null || missing+=(node)
command -v npm >/dev/null || missing+=(npm)
[ -x "$CHROMIUM" ] || missing+=("chromium at $CHROMIUM")
if [ ${#missing[@]} -eq 0 ] && ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)'; then
  missing+=("node >= 18 (found $(node --version))")
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${CI:-}" = true ]; then
    echo "browser test: FAILED: missing ${missing[*]} (.ci/run installs them with apt-get)" >&2
    exit 1
  fi
  echo "browser test: SKIPPED: missing ${missing[*]}; install with: apt-get install -y chromium nodejs npm"
  exit 0
fi

# playwright-core from the npm registry, pinned by the lock file (no browser download).
if [ ! -f tests/browser/node_modules/.package-lock.json ] ||
  [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

scripts/fetch-backbones.sh "${WARMSTART_MODELS_DIR:-./models}"
# The binary `cargo test --release` just built is used as is (`cargo build` would rebuild it:
# dev-dependencies unify features differently); it is built only when missing or older than
# the sources.
bin=target/release/warmstart
if [ ! -x "$bin" ] || [ -n "$(find src migrations Cargo.toml Cargo.lock -newer "$bin" -print -quit)" ]; then
  cargo build --release --bin warmstart
fi

start=$(date +%s)
timeout 900 node tests/browser/run.mjs
echo "browser test: $(($(date +%s) - start)) s; screenshots in $BROWSER_ARTIFACTS"
