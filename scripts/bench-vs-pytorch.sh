#!/usr/bin/env bash
# One command, both sides (issue 12): Warmstart's `cargo bench --bench throughput` and
# PyTorch's benches/peer/throughput.py on the same inputs and the same number of threads,
# then one table of ratios (PyTorch time ÷ Warmstart time: above 1 is Warmstart faster).
#
#   scripts/bench-vs-pytorch.sh            # every row, 2 threads
#   THREADS=2 ROWS=minilm_fwd,lite0_fwd scripts/bench-vs-pytorch.sh
#
# Inputs: 1,000 short texts (election tweets), 500 long news posts (Reuters R8), 1,000
# 28×28 PNG digits, from the quality benchmark's data (scripts/fetch-bench-data.sh, pinned
# packages). The peer runs in .venv-peer (PyPI; never a dependency of the service).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
ROWS="${ROWS:-}"
DATA="${BENCH_DATA:-bench-data}"
INPUTS="${BENCH_INPUTS:-target/bench-inputs}"
VENV="${PEER_VENV:-.venv-peer}"
LOGS="${BENCH_LOGS:-bench-logs}"
die() { echo "bench-vs-pytorch: error: $*" >&2; exit 1; }

scripts/fetch-backbones.sh >/dev/null
[ -f "$DATA/tweets/test.csv" ] && [ -f "$DATA/r8/test.csv" ] && [ -d "$DATA/digits/test" ] \
  || scripts/fetch-bench-data.sh "$DATA"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r benches/peer/requirements.txt
fi
mkdir -p "$INPUTS/images" "$LOGS"
"$VENV/bin/python" - "$DATA" "$INPUTS" <<'PY'
import csv, os, shutil, sys
data, out = sys.argv[1], sys.argv[2]
def texts(name, n):
    with open(os.path.join(data, name, "test.csv"), newline="") as f:
        rows = [" ".join(r["text"].split()) for r in csv.DictReader(f)]
    with open(os.path.join(out, "short.txt" if name == "tweets" else "long.txt"), "w") as f:
        f.write("\n".join(rows[:n]) + "\n")
texts("tweets", 1000)
texts("r8", 500)
src = os.path.join(data, "digits", "test")
for name in sorted(os.listdir(src))[:1000]:
    shutil.copyfile(os.path.join(src, name), os.path.join(out, "images", name))
PY

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$LOGS/throughput-$stamp.jsonl"
echo "bench-vs-pytorch: $THREADS threads, results in $out" >&2
CANDLE_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS" BENCH_INPUTS="$INPUTS" ROWS="$ROWS" OUT="$out" \
  cargo bench -q --bench throughput
OMP_NUM_THREADS="$THREADS" "$VENV/bin/python" benches/peer/throughput.py \
  --inputs "$INPUTS" --models "${WARMSTART_MODELS_DIR:-models}" --threads "$THREADS" --rows "$ROWS" --out "$out"

"$VENV/bin/python" - "$out" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["row"], {})[r["side"]] = r
print(f"| row | Warmstart | PyTorch | PyTorch ÷ Warmstart | peak RSS MB (W / P) |")
print("|---|---|---|---|---|")
for name, sides in rows.items():
    w, p = sides.get("warmstart"), sides.get("pytorch")
    unit = (w or p)["unit"]
    fmt = lambda r: "–" if r is None else (f"{r['seconds'] * 1000:.1f} ms" if r["seconds"] < 1 else f"{r['seconds']:.2f} s")
    ratio = f"{p['seconds'] / w['seconds']:.2f}" if w and p else "–"
    mem = " / ".join("–" if r is None else f"{r['peak_rss_mb']:.0f}" for r in (w, p))
    print(f"| {name} ({unit}) | {fmt(w)} | {fmt(p)} | {ratio} | {mem} |")
PY
