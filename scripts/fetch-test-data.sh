#!/usr/bin/env bash
# Fetch the test images (scikit-image's chelsea.png, coffee.png, rocket.jpg,
# motorcycle_left.png for the reference test; brick.png, grass.png, gravel.png textures for the
# image learning test) into DIR (default ./test-data, or $WARMSTART_TEST_DATA). They ship
# inside the scikit-image wheel on PyPI: we download one pinned wheel with
# `pip download --no-deps --only-binary=:all:`, check its sha256 and extract only those files.
# Idempotent: nothing is downloaded when all four are present.
set -euo pipefail

DIR="${1:-${WARMSTART_TEST_DATA:-./test-data}}"
PKG=scikit-image
VERSION=0.25.2
# scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
SHA256=24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641
FILES="chelsea.png coffee.png rocket.jpg motorcycle_left.png brick.png grass.png gravel.png"

die() { echo "fetch-test-data: error: $*" >&2; exit 1; }

missing=0
for f in $FILES; do [ -s "$DIR/$f" ] || missing=1; done
if [ "$missing" = 0 ]; then echo "fetch-test-data: all test images present in $DIR"; exit 0; fi

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

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-test-data: downloading $PKG==$VERSION (cp311 manylinux x86_64 wheel) from PyPI"
# The platform is pinned so every machine fetches the very same wheel (and checksum),
# whatever its own Python version or OS.
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_17_x86_64 \
  --dest "$tmp" "$PKG==$VERSION" \
  || die "pip download of $PKG==$VERSION failed (is PyPI reachable?)"
wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n1)"
[ -n "$wheel" ] || die "pip produced no wheel for $PKG==$VERSION"
got="$(sha256_of "$wheel")"
[ "$got" = "$SHA256" ] || die "checksum mismatch for $(basename "$wheel"): expected $SHA256, got $got; refusing to use it"

mkdir -p "$DIR"
for f in $FILES; do
  "$PYTHON" - "$wheel" "skimage/data/$f" "$DIR/$f.part" <<'PY' || die "could not extract $f from the wheel"
import sys, zipfile, shutil
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  mv "$DIR/$f.part" "$DIR/$f"
done
echo "fetch-test-data: test images installed in $DIR"
