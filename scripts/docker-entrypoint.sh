#!/bin/sh
# Container start: fetch the pinned backbones into $WARMSTART_MODELS_DIR only when they are
# missing (an image built with BAKE_BACKBONES=true has them, so it starts without registry
# access), then run the service with the given arguments (default: `serve`).
set -eu
if [ "${WARMSTART_SKIP_FETCH:-false}" != "true" ]; then
  /app/scripts/fetch-backbones.sh "${WARMSTART_MODELS_DIR:-/models}"
fi
exec warmstart "$@"
