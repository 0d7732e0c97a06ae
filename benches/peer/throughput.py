"""The PyTorch side of scripts/bench-vs-pytorch.sh (issue 12): the same rows as
benches/throughput.rs, on the same inputs and thread count, in-process (no HTTP).

    .venv-peer/bin/python benches/peer/throughput.py --inputs target/bench-inputs \
        --models models --threads 2 [--rows a,b] [--out FILE]

MiniLM is the service's own folder loaded with transformers; EfficientNet-Lite0/Lite2 are
timm's `tf_efficientnet_lite0/2` (TensorFlow "same" padding, fixed stem and head like the
service's) with random weights: timing does not depend on the weights' values. Each row
prints one JSON line like the Rust side: median seconds per repetition (forward and step
rows) or the total (rows over a whole input set), and the peak RSS during the row.
"""

import argparse
import json
import os
import statistics
import time

import torch

# quality.py defaults the tokenizer to one thread; keep Hugging Face's default here.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
# The quality peer's MiniLM loader (the service's folder, max 256 tokens), its mean pooling
# and its image preprocessing (the service's resize + centre crop), shared so both peers
# do the same work.
from quality import image_tensor, mean_pool, minilm

HTTP_BATCH = 32


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    return 0.0


def timed(reps, fn):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class Rows:
    def __init__(self, wanted, out):
        self.wanted = wanted
        self.out = open(out, "a") if out else None

    def wants(self, row):
        return self.wanted is None or any(row.startswith(w) for w in self.wanted)

    def wants_group(self, group):
        return self.wanted is None or any(w.startswith(group) or group.startswith(w) for w in self.wanted)

    def record(self, row, seconds, unit):
        line = json.dumps({
            "side": "pytorch", "row": row, "seconds": seconds, "unit": unit,
            "peak_rss_mb": round(peak_rss_mb(), 1), "threads": torch.get_num_threads(),
        })
        print(line, flush=True)
        if self.out:
            self.out.write(line + "\n")
            self.out.flush()


def pooled(model, ids, mask):
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return torch.nn.functional.normalize(mean_pool(hidden, mask), dim=1)


def text_batch(b, l):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (b, l), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return ids, torch.ones(b, l, dtype=torch.long)


def effnet(variant):
    import timm

    m = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, num_classes=0)
    return m.eval()


def step(model, fwd, opt):
    opt.zero_grad(set_to_none=True)
    feats = fwd()
    loss = feats.sum(1).pow(2).mean()
    loss.backward()
    opt.step()


def forward_rows(rows, args):
    if rows.wants_group("minilm_fwd"):
        _, bert = minilm(args.models)
        for b, l, reps in [(1, 16, 30), (32, 64, 5), (16, 128, 5)]:
            row = f"minilm_fwd_{b}x{l}"
            if rows.wants(row):
                ids, mask = text_batch(b, l)
                reset_peak()
                with torch.inference_mode():
                    s = timed(reps, lambda: pooled(bert, ids, mask))
                rows.record(row, s, "s/batch")
    for variant, b, reps, res in [("lite0", 1, 10, 224), ("lite0", 32, 3, 224), ("lite2", 32, 2, 260)]:
        row = f"{variant}_fwd_b{b}"
        if rows.wants(row):
            m = effnet(variant)
            x = torch.rand(b, 3, res, res) * 2 - 1
            reset_peak()
            with torch.inference_mode():
                s = timed(reps, lambda: m(x))
            rows.record(row, s, "s/batch")


def step_rows(rows, args):
    if rows.wants("minilm_step_16x128"):
        reset_peak()
        _, bert = minilm(args.models)
        bert.train()
        ids, mask = text_batch(16, 128)
        opt = torch.optim.AdamW(bert.parameters(), lr=1e-5, weight_decay=0.01)
        s = timed(3, lambda: step(bert, lambda: pooled(bert, ids, mask), opt))
        rows.record("minilm_step_16x128", s, "s/step")
    for row, variant, b, res, reps in [("lite0_step_b8", "lite0", 8, 224, 3), ("lite2_step_b16", "lite2", 16, 260, 2)]:
        if rows.wants(row):
            reset_peak()
            m = effnet(variant).train()
            x = torch.rand(b, 3, res, res) * 2 - 1
            opt = torch.optim.AdamW(m.parameters(), lr=1e-5, weight_decay=0.01)
            s = timed(reps, lambda: step(m, lambda: m(x), opt))
            rows.record(row, s, "s/step")


def read_lines(path):
    with open(path) as f:
        return f.read().splitlines()


def real_text_row(rows, args, name, file, batch, head=None):
    if not rows.wants(name):
        return
    tok, bert = minilm(args.models)
    texts = read_lines(os.path.join(args.inputs, file))
    reset_peak()
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
            feats = pooled(bert, enc["input_ids"], enc["attention_mask"])
            if head is not None:
                head(feats).softmax(-1).tolist()
    rows.record(name, time.perf_counter() - t, "s/total")


def image_predict_row(rows, args):
    row = "http_predict_images_1000"
    if not rows.wants(row):
        return
    m = effnet("lite0")
    head = torch.nn.Linear(1280, 2)
    d = os.path.join(args.inputs, "images")
    pngs = [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))]
    reset_peak()
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(pngs), HTTP_BATCH):
            x = torch.stack([image_tensor(p, 224) for p in pngs[i:i + HTTP_BATCH]])
            head(m(x)).softmax(-1).tolist()
    rows.record(row, time.perf_counter() - t, "s/total")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", default="target/bench-inputs")
    ap.add_argument("--models", default="models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = Rows([r for r in args.rows.split(",") if r] or None, args.out)
    forward_rows(rows, args)
    real_text_row(rows, args, "minilm_real_long_500", "long.txt", 16)
    real_text_row(rows, args, "minilm_real_short_1000", "short.txt", 32)
    step_rows(rows, args)
    # The service's predict rows, in-process on the PyTorch side: tokenise / decode + resize,
    # forward, pool, a linear head's softmax.
    real_text_row(rows, args, "http_predict_texts_1000", "short.txt", HTTP_BATCH, torch.nn.Linear(384, 2))
    image_predict_row(rows, args)


if __name__ == "__main__":
    main()
