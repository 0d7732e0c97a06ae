#!/usr/bin/env python3
"""Peers of the quality benchmark (issue 10), on the splits of scripts/fetch-bench-data.sh.

For each (set, N per class, seed) and method it trains on bench-data/<set>/train-<N>pc-s<seed>
and scores accuracy and macro-F1 on bench-data/<set>/test.csv:

  no_pretraining  TF-IDF + LR (text) / pixel LR on 32x32 RGB (images); C by CV as below
  probe           multinomial LR on frozen features (mean-pooled MiniLM-L6 / EfficientNet-Lite0
                  pooled), standardised, C in {1e-3, ..., 1e3} by stratified k-fold CV
                  (k = 5, or the smallest class size if smaller), accuracy scoring
  finetune        two-phase: 5 head epochs (body frozen), then 10 epochs of everything at body
                  lr 3e-5 (text) / 1e-4 (images), head lr 1e-3; batch 16, AdamW wd 0.01,
                  constant rates, no augmentation, no early stopping
  setfit          SetFit on the same MiniLM body: 20 iterations of pairs, 1 epoch, LR head

The backbones are the service's own files in ./models (scripts/fetch-backbones.sh); the
EfficientNet-Lite0 port below is checked against shared/reference before any image row runs.
Results are merged into benches/peer/quality-results.json as each row finishes (a file lock
lets several of these processes run at once), so a partial run keeps what it computed.

    .venv-peer/bin/python benches/peer/quality.py --methods probe,no_pretraining
    .venv-peer/bin/python benches/peer/quality.py --rows tweets8,r864 --methods finetune --seeds 0
"""

import argparse
import csv
import datetime
import fcntl
import hashlib
import io
import json
import math
import os
import platform
import time
import zipfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "benches", "peer", "quality-results.json")
TEXT_SETS = ("tweets", "r8", "spam")
IMAGE_SETS = ("stamps", "animals", "digits")
SIZES = {"text": (8, 64), "image": (10, 50)}
METHODS = ("no_pretraining", "probe", "finetune", "setfit")
C_GRID = [10.0**k for k in range(-3, 4)]
MAX_TOKENS = 256  # the service's max_length for minilm-l6
RES = 224

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "1")))


def log(msg):
    print(f"[{datetime.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------- data


def modality(name):
    return "text" if name in TEXT_SETS else "image"


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_split(data, name, n, seed):
    """(train_x, train_y, test_x, test_y): texts, or PNG bytes for images."""
    d = os.path.join(data, name)
    if modality(name) == "text":
        train = read_csv(os.path.join(d, f"train-{n}pc-s{seed}.csv"))
        test = read_csv(os.path.join(d, "test.csv"))
        return [r["text"] for r in train], [r["label"] for r in train], [r["text"] for r in test], [r["label"] for r in test]
    xs, ys = [], []
    with zipfile.ZipFile(os.path.join(d, f"train-{n}pc-s{seed}.zip")) as z:
        for info in sorted(z.infolist(), key=lambda i: i.filename):
            if info.is_dir():
                continue
            label, _ = info.filename.split("/", 1)
            xs.append(z.read(info))
            ys.append(label)
    test = read_csv(os.path.join(d, "test.csv"))
    tx = []
    for r in test:
        with open(os.path.join(d, r["file"]), "rb") as f:
            tx.append(f.read())
    return xs, ys, tx, [r["label"] for r in test]


def image_tensor(png, res=RES):
    """Decode, RGB, resize the shorter side to `res` (PIL bilinear), centre-crop, (p-127)/128."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = res, max(res, int(round(h * res / w)))
    else:
        nw, nh = max(res, int(round(w * res / h))), res
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - res) / 2.0)), int(round((nh - res) / 2.0))
    img = img.crop((left, top, left + res, top + res))
    a = np.asarray(img, dtype=np.float32)
    return torch.from_numpy((a - 127.0) / 128.0).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------- EfficientNet-Lite


def same_pad(x, k, s):
    """TensorFlow SAME padding (extra on bottom/right)."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
    pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class ConvBn(nn.Module):
    def __init__(self, cin, cout, k, s=1, groups=1):
        super().__init__()
        self.k, self.s = k, s
        self.conv = nn.Conv2d(cin, cout, k, s, padding=0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x, act=True):
        x = self.bn(self.conv(same_pad(x, self.k, self.s) if self.k > 1 else x))
        return F.relu6(x) if act else x


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, s, expand):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBn(cin, mid, 1) if expand != 1 else None
        self.dw = ConvBn(mid, mid, k, s, groups=mid)
        self.project = ConvBn(mid, cout, 1)
        self.residual = s == 1 and cin == cout

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y), act=False)
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
    FEATURES = 1280

    def __init__(self):
        super().__init__()
        self.stem = ConvBn(3, 32, 3, 2)
        blocks, cin = [], 32
        for reps, k, s, e, cout in self.STAGES:
            for r in range(reps):
                blocks.append(MBConv(cin, cout, k, s if r == 0 else 1, e))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBn(cin, self.FEATURES, 1)
        self.fc = nn.Linear(self.FEATURES, 1000)

    def features(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x).mean(dim=(2, 3))

    def forward(self, x):
        return self.fc(self.features(x))

    @classmethod
    def load(cls, path):
        sd = torch.load(path, map_location="cpu", weights_only=True)
        m = cls()
        mapped = {}

        used = set()

        def take(key):
            used.add(key)
            return sd[key]

        def conv_bn(dst, conv, bn):
            mapped[f"{dst}.conv.weight"] = take(f"{conv}.weight")
            for p in ("weight", "bias", "running_mean", "running_var"):
                mapped[f"{dst}.bn.{p}"] = take(f"{bn}.{p}")
            if f"{bn}.num_batches_tracked" in sd:
                mapped[f"{dst}.bn.num_batches_tracked"] = take(f"{bn}.num_batches_tracked")

        conv_bn("stem", "_conv_stem", "_bn0")
        for i, b in enumerate(m.blocks):
            p = f"_blocks.{i}"
            if b.expand is not None:
                conv_bn(f"blocks.{i}.expand", f"{p}._expand_conv", f"{p}._bn0")
            conv_bn(f"blocks.{i}.dw", f"{p}._depthwise_conv", f"{p}._bn1")
            conv_bn(f"blocks.{i}.project", f"{p}._project_conv", f"{p}._bn2")
        conv_bn("head", "_conv_head", "_bn1")
        mapped["fc.weight"], mapped["fc.bias"] = take("_fc.weight"), take("_fc.bias")
        unused = set(sd) - used
        missing, unexpected = m.load_state_dict(mapped, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected or unused:
            raise RuntimeError(f"weights do not fit: missing {missing}, unexpected {unexpected}, unused {sorted(unused)[:5]}")
        return m.eval()


_effnet_checked = False


def effnet(models):
    """The service's EfficientNet-Lite0 weights, checked against the PyTorch reference."""
    global _effnet_checked
    m = EfficientNetLite0.load(os.path.join(models, "efficientnet-lite0", "weights.pth"))
    if not _effnet_checked:
        ref = json.load(open(os.path.join(ROOT, "..", "shared", "reference", "efficientnet_lite0_reference.json")))
        c, h, w = torch.meshgrid(torch.arange(3), torch.arange(224), torch.arange(224), indexing="ij")
        x = (((c * 7 + h * 3 + w * 5) % 17).float() / 8 - 1).unsqueeze(0)
        with torch.no_grad():
            feats = m.features(x)[0]
            logits = m.fc(feats)
        err = max(
            (feats[:8] - torch.tensor(ref["pooled_features_first8"])).abs().max().item(),
            (logits[:8] - torch.tensor(ref["logits_first8"])).abs().max().item(),
            abs(feats.sum().item() - ref["pooled_features_sum"]) / max(1.0, abs(ref["pooled_features_sum"])),
        )
        top5 = logits.topk(5).indices.tolist()
        if err > 2e-3 or top5 != ref["logits_top5_index"]:
            raise SystemExit(f"EfficientNet-Lite0 port disagrees with the reference (max err {err:.2e}, top5 {top5})")
        log(f"EfficientNet-Lite0 matches shared/reference (max abs err {err:.1e}, top-5 {top5})")
        _effnet_checked = True
    return m


def check_effnet_natural(models, images_dir):
    """Optional: the reference's natural images, if a folder holding them is given."""
    ref = json.load(open(os.path.join(ROOT, "..", "shared", "reference", "efficientnet_lite0_reference.json")))
    m = effnet(models)
    for name, r in ref["natural_images"]["results"].items():
        p = os.path.join(images_dir, name)
        if not os.path.exists(p):
            continue
        with torch.no_grad():
            prob = m(image_tensor(open(p, "rb").read()).unsqueeze(0)).softmax(-1)[0]
        top = prob.topk(3)
        log(f"{name}: top3 {top.indices.tolist()} {[round(v, 4) for v in top.values.tolist()]} (reference {r['top3_index']} {r['top3_prob']})")


# --------------------------------------------------------------------------------- MiniLM


def minilm(models):
    from transformers import AutoModel, PreTrainedTokenizerFast

    d = os.path.join(models, "minilm-l6")
    tok = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(d, "tokenizer.json"),
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
        model_max_length=MAX_TOKENS,
    )
    model = AutoModel.from_pretrained(d).eval()
    return tok, model


def mean_pool(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def encode(tok, texts):
    return tok(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")


_minilm_checked = False


def check_minilm(tok, model):
    global _minilm_checked
    if _minilm_checked:
        return
    ref = json.load(open(os.path.join(ROOT, "..", "shared", "reference", "minilm_reference.json")))
    b = encode(tok, ref["sentences"])
    ids0 = b["input_ids"][0][b["attention_mask"][0].bool()].tolist()
    with torch.no_grad():
        e = F.normalize(mean_pool(model(**b).last_hidden_state, b["attention_mask"]), dim=-1)
    err = (e[:, :8] - torch.tensor(ref["embedding_first8"])).abs().max().item()
    cos = (e[0] @ e[1]).item()
    if ids0 != ref["input_ids_0"] or err > 2e-3 or abs(cos - ref["cosine_0_1"]) > 2e-3:
        raise SystemExit(f"MiniLM disagrees with the reference (ids {ids0}, max err {err:.2e}, cos {cos:.4f})")
    log(f"MiniLM-L6 matches shared/reference (max abs err {err:.1e})")
    _minilm_checked = True


# --------------------------------------------------------------------------------- features (cached)


class FeatureCache:
    """Frozen features per example (keyed by the sha256 of its content), on disk per set."""

    def __init__(self, cache_dir, name):
        os.makedirs(cache_dir, exist_ok=True)
        self.path = os.path.join(cache_dir, f"{name}-features.npz")
        self.feats = {}
        if os.path.exists(self.path):
            z = np.load(self.path)
            self.feats = dict(zip(z["keys"].tolist(), z["values"]))

    @staticmethod
    def key(x):
        return hashlib.sha256(x.encode() if isinstance(x, str) else x).hexdigest()

    def get(self, xs, compute, batch):
        keys = [self.key(x) for x in xs]
        todo = sorted({k: x for k, x in zip(keys, xs) if k not in self.feats}.items())
        if todo:
            log(f"computing {len(todo)} feature vectors")
            for i in range(0, len(todo), batch):
                chunk = todo[i : i + batch]
                vals = compute([x for _, x in chunk])
                for (k, _), v in zip(chunk, vals):
                    self.feats[k] = v
            tmp = self.path + ".tmp.npz"
            np.savez(tmp, keys=np.array(list(self.feats)), values=np.stack(list(self.feats.values())))
            os.replace(tmp, self.path)
        return np.stack([self.feats[k] for k in keys])


def frozen_features(args, name, xs):
    cache = FeatureCache(os.path.join(args.cache), name)
    if modality(name) == "text":
        tok, model = args.minilm()

        def compute(batch):
            b = encode(tok, batch)
            with torch.no_grad():
                e = mean_pool(model(**b).last_hidden_state, b["attention_mask"])
            return F.normalize(e, dim=-1).numpy()

        return cache.get(xs, compute, 32)
    m = args.effnet()

    def compute(batch):
        with torch.no_grad():
            return m.features(torch.stack([image_tensor(x) for x in batch])).numpy()

    return cache.get(xs, compute, 32)


# --------------------------------------------------------------------------------- methods


def cv_lr(x, y, seed, scale=True):
    """Multinomial LR with C chosen by stratified k-fold CV (accuracy)."""
    counts = {c: y.count(c) for c in set(y)}
    k = min(5, min(counts.values()))
    steps = [StandardScaler()] if scale else []
    pipe = make_pipeline(*steps, LogisticRegression(max_iter=5000))
    if k < 2:
        pipe.set_params(logisticregression__C=1.0).fit(x, y)
        return pipe, {"C": 1.0, "folds": 0}
    grid = GridSearchCV(
        pipe,
        {"logisticregression__C": C_GRID},
        cv=StratifiedKFold(n_splits=k, shuffle=True, random_state=seed),
        scoring="accuracy",
        n_jobs=1,
    )
    grid.fit(x, y)
    return grid.best_estimator_, {"C": grid.best_params_["logisticregression__C"], "folds": k, "cv_accuracy": round(grid.best_score_, 4)}


def run_probe(args, name, n, seed, tx, ty, sx, sy):
    ftr = frozen_features(args, name, tx)
    fte = frozen_features(args, name, sx)
    model, info = cv_lr(ftr, ty, seed)
    return model.predict(fte).tolist(), info


def pixels(png, res=32):
    img = Image.open(io.BytesIO(png)).convert("RGB")
    w, h = img.size
    s = res / min(w, h)
    nw, nh = max(res, int(round(w * s))), max(res, int(round(h * s)))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - res) // 2, (nh - res) // 2
    return np.asarray(img.crop((left, top, left + res, top + res)), dtype=np.float32).reshape(-1) / 255.0


def run_no_pretraining(args, name, n, seed, tx, ty, sx, sy):
    if modality(name) == "text":
        from sklearn.pipeline import Pipeline

        counts = {c: ty.count(c) for c in set(ty)}
        k = min(5, min(counts.values()))
        pipe = Pipeline([("tfidf", TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)), ("logisticregression", LogisticRegression(max_iter=5000))])
        grid = GridSearchCV(pipe, {"logisticregression__C": C_GRID}, cv=StratifiedKFold(n_splits=k, shuffle=True, random_state=seed), scoring="accuracy", n_jobs=1)
        grid.fit(tx, ty)
        info = {"C": grid.best_params_["logisticregression__C"], "folds": k, "cv_accuracy": round(grid.best_score_, 4)}
        return grid.best_estimator_.predict(sx).tolist(), info
    xtr = np.stack([pixels(x) for x in tx])
    xte = np.stack([pixels(x) for x in sx])
    model, info = cv_lr(xtr, ty, seed)
    return model.predict(xte).tolist(), info


class TextClassifier(nn.Module):
    def __init__(self, body, classes):
        super().__init__()
        self.body = body
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(body.config.hidden_size, classes)

    def forward(self, batch):
        h = self.body(**batch).last_hidden_state
        return self.head(self.dropout(mean_pool(h, batch["attention_mask"])))


class ImageClassifier(nn.Module):
    def __init__(self, body, classes):
        super().__init__()
        self.body = body
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(EfficientNetLite0.FEATURES, classes)

    def forward(self, x):
        return self.head(self.dropout(self.body.features(x)))


def run_finetune(args, name, n, seed, tx, ty, sx, sy):
    torch.manual_seed(seed)
    labels = sorted(set(ty))
    y = torch.tensor([labels.index(v) for v in ty])
    text = modality(name) == "text"
    if text:
        tok, body = minilm(args.models)
        check_minilm(tok, body)
        model = TextClassifier(body, len(labels))
        body_lr = 3e-5
        make_batch = lambda idx: encode(tok, [tx[i] for i in idx])  # noqa: E731
        make_test = lambda xs: encode(tok, xs)  # noqa: E731
    else:
        body = effnet(args.models)
        model = ImageClassifier(body, len(labels))
        body_lr = 1e-4
        images = [image_tensor(x) for x in tx]
        make_batch = lambda idx: torch.stack([images[i] for i in idx])  # noqa: E731
        make_test = lambda xs: torch.stack([image_tensor(x) for x in xs])  # noqa: E731
    gen = torch.Generator().manual_seed(seed)

    def epochs(count, opt, train_body):
        for ep in range(count):
            model.train()
            if not train_body:
                model.body.eval()  # frozen: batch-norm / dropout of the body as at inference
            order = torch.randperm(len(y), generator=gen).tolist()
            total = 0.0
            for i in range(0, len(order), 16):
                idx = order[i : i + 16]
                loss = F.cross_entropy(model(make_batch(idx)), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            log(f"  {'full' if train_body else 'head'} epoch {ep + 1}/{count}: loss {total / len(y):.4f}")

    for p in model.body.parameters():
        p.requires_grad_(False)
    epochs(5, torch.optim.AdamW(model.head.parameters(), lr=1e-3, weight_decay=0.01), False)
    for p in model.body.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(
        [{"params": model.body.parameters(), "lr": body_lr}, {"params": model.head.parameters(), "lr": 1e-3}],
        weight_decay=0.01,
    )
    epochs(10, opt, True)
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(sx), 32):
            preds += model(make_test(sx[i : i + 32])).argmax(-1).tolist()
    return [labels[p] for p in preds], {"head_epochs": 5, "finetune_epochs": 10, "body_lr": body_lr, "head_lr": 1e-3}


def run_setfit(args, name, n, seed, tx, ty, sx, sy):
    if modality(name) != "text":
        return None, None
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, models as st_models
    from setfit import SetFitModel, Trainer, TrainingArguments

    d = os.path.join(args.models, "minilm-l6")
    tok, ref_model = minilm(args.models)
    check_minilm(tok, ref_model)
    del ref_model
    word = st_models.Transformer(d, max_seq_length=MAX_TOKENS, tokenizer_args={"tokenizer_file": os.path.join(d, "tokenizer.json")})
    body = SentenceTransformer(modules=[word, st_models.Pooling(word.get_word_embedding_dimension(), "mean"), st_models.Normalize()], device="cpu")
    model = SetFitModel(model_body=body, model_head=LogisticRegression())
    targs = TrainingArguments(
        batch_size=16,
        num_iterations=20,
        num_epochs=1,
        seed=seed,
        report_to="none",
        save_strategy="no",
        output_dir=os.path.join(args.cache, "..", "setfit-checkpoints"),
    )
    trainer = Trainer(model=model, args=targs, train_dataset=Dataset.from_dict({"text": tx, "label": ty}))
    trainer.train()
    preds = []
    for i in range(0, len(sx), 64):
        preds += [str(p) for p in model.predict(sx[i : i + 64], as_numpy=True).tolist()]
    return preds, {"num_iterations": 20, "num_epochs": 1, "batch_size": 16}


RUNNERS = {"no_pretraining": run_no_pretraining, "probe": run_probe, "finetune": run_finetune, "setfit": run_setfit}


# --------------------------------------------------------------------------------- results file


def versions():
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for p in ("torch", "transformers", "sentence-transformers", "setfit", "scikit-learn", "timm", "numpy", "pillow", "datasets", "tokenizers"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def record(row):
    """Merges one row into RESULTS under an exclusive lock (atomic replace)."""
    with open(RESULTS + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = {"header": {}, "rows": []}
        if os.path.exists(RESULTS):
            with open(RESULTS) as f:
                data = json.load(f)
        key = lambda r: (r["set"], r["n"], r["seed"], r["method"])  # noqa: E731
        rows = [r for r in data["rows"] if key(r) != key(row)] + [row]
        rows.sort(key=lambda r: (list(TEXT_SETS + IMAGE_SETS).index(r["set"]), r["n"], METHODS.index(r["method"]), r["seed"]))
        data["header"] = {
            "description": "Peers of the quality benchmark (issue 10): benches/peer/quality.py on the splits of scripts/fetch-bench-data.sh",
            "updated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "packages": versions(),
            "torch_threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "methods": {
                "no_pretraining": "TF-IDF (1-2 grams, sublinear tf) + LR / pixel LR on 32x32 RGB; C by CV",
                "probe": "multinomial LR on standardised frozen features (mean-pooled L2-normalised MiniLM-L6, max 256 tokens / EfficientNet-Lite0 pooled, 224 px); C in 1e-3..1e3 by stratified k-fold CV (k = min(5, smallest class)), accuracy",
                "finetune": "5 head epochs (body frozen) then 10 full epochs, body lr 3e-5 text / 1e-4 images, head lr 1e-3, batch 16, AdamW wd 0.01, constant lr, no augmentation, no early stopping",
                "setfit": "SetFit, same MiniLM body (mean pooling, normalised), num_iterations 20, 1 epoch, batch 16, LR head",
            },
        }
        data["rows"] = rows
        tmp = RESULTS + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, RESULTS)


def done_rows():
    if not os.path.exists(RESULTS):
        return set()
    with open(RESULTS) as f:
        return {(r["set"], r["n"], r["seed"], r["method"]) for r in json.load(f)["rows"]}


# --------------------------------------------------------------------------------- main


def parse_rows(spec):
    """`tweets8,r864,stamps` -> [(set, n or None)]."""
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        for name in TEXT_SETS + IMAGE_SETS:
            if item == name:
                out.append((name, None))
                break
            if item.startswith(name) and item[len(name) :].isdigit():
                n = int(item[len(name) :])
                if n not in SIZES[modality(name)]:
                    raise SystemExit(f"{item}: {name} has sizes {SIZES[modality(name)]}")
                out.append((name, n))
                break
        else:
            raise SystemExit(f"unknown row {item!r}: sets are {TEXT_SETS + IMAGE_SETS}, e.g. tweets8, stamps50")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="", help="e.g. tweets8,r864,stamps (a set alone = all its sizes); default all")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data", default=os.path.join(ROOT, "bench-data"))
    ap.add_argument("--models", default=os.path.join(ROOT, "models"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "bench-logs", "feature-cache"))
    ap.add_argument("--redo", action="store_true", help="recompute rows already in the results file")
    ap.add_argument("--check-only", action="store_true", help="only check both backbones against shared/reference")
    ap.add_argument("--reference-images", default="", help="folder with the reference's natural images (optional check)")
    args = ap.parse_args()

    cached = {}

    def get_minilm():
        if "minilm" not in cached:
            cached["minilm"] = minilm(args.models)
            check_minilm(*cached["minilm"])
        return cached["minilm"]

    def get_effnet():
        if "effnet" not in cached:
            cached["effnet"] = effnet(args.models)
        return cached["effnet"]

    args.minilm, args.effnet = get_minilm, get_effnet
    if args.check_only:
        get_minilm()
        get_effnet()
        if args.reference_images:
            check_effnet_natural(args.models, args.reference_images)
        return

    rows = parse_rows(args.rows) if args.rows else [(s, None) for s in TEXT_SETS + IMAGE_SETS]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}: {METHODS}")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = []
    for method in methods:  # in the order given: cheap methods first
        for name, n in rows:
            if method == "setfit" and modality(name) != "text":
                continue
            for size in [n] if n else SIZES[modality(name)]:
                for seed in seeds:
                    jobs.append((method, name, size, seed))
    done = set() if args.redo else done_rows()
    log(f"{len(jobs)} rows requested, {sum(1 for m, s, n, sd in jobs if (s, n, sd, m) in done)} already in {os.path.relpath(RESULTS, ROOT)}")
    for method, name, n, seed in jobs:
        if (name, n, seed, method) in done:
            continue
        log(f"{method} {name} {n}/class seed {seed}")
        tx, ty, sx, sy = load_split(args.data, name, n, seed)
        t0 = time.time()
        preds, info = RUNNERS[method](args, name, n, seed, tx, ty, sx, sy)
        secs = time.time() - t0
        row = {
            "set": name,
            "n": n,
            "seed": seed,
            "method": method,
            "accuracy": round(accuracy_score(sy, preds), 4),
            "macro_f1": round(f1_score(sy, preds, average="macro"), 4),
            "seconds": round(secs, 1),
            "train_examples": len(ty),
            "test_examples": len(sy),
            "details": info,
            "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        record(row)
        log(f"  -> accuracy {row['accuracy']:.4f}, macro-F1 {row['macro_f1']:.4f}, {secs:.0f} s")


if __name__ == "__main__":
    main()
