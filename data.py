"""Tokenizers, corpora prepared once into uint16 token files, batches sampled from them, and the task suite.

tokenizers  gpt2   tiktoken r50k_base, the GPT-2 BPE (50257 ids, eot 50256)
            bytes  UTF-8 bytes (256 ids) plus one end-of-text id 256; needs nothing
corpora     stdlib       the Python standard library's .py files (tests excluded); no download, the default
            text:PATH    any UTF-8 text file or folder of them
            shakespeare  tiny Shakespeare (1.1 MB), downloaded with urllib the first time
            fineweb[:N]  GPT-2 token shards (256×int32 header, then uint16), val shard + N train shards
            mqar[:pairs=N,keys=K]   multi-query associative recall (Zoology, arXiv 2312.04927), generated batch
                         by batch from the run's generator: N key-value pairs, then each key once as a query; the
                         loss is on the N answers only. No files, no download (MQAR, answer_accuracy)
task suite  builtin      six generated tasks of {"prompt", "answer"} records (sentiment ... reverse), from a seed
            DIR          TRACE's layout: DIR/<task>/{train,test}.json (or .jsonl); `python data.py --write_tasks=DIR`

prepare() writes data/<name>-<tokenizer>/{train.bin, val.bin, meta.json} once and returns the folder; training
reads the .bin files through np.memmap (load_split) and samples nanoGPT-style random windows (get_batch).

Design choices:
- Documents are joined with the eot id; stdlib splits train/val by a hash of each file's path (stable across
  machines and Python patch releases that add files), the other text corpora by position (first 90% train).
- Files are written under temporary names and renamed, meta.json last: a folder with meta.json is finished.
- text:PATH is keyed by its content: meta.json keeps an md5 of every file's relative path, size and mtime_ns
  (source_key), and prepare() prepares the folder again when the files changed; bytes that are not UTF-8 are
  read as U+FFFD with one warning line that counts them.
- meta.json keeps the byte counts behind each split, so losses can be reported in bits per byte (comparable across
  tokenizers), and `unigram_bpb`, the add-one-smoothed unigram model's val bits per byte: the floor to beat.
- Everything is computed from token histograms, so a multi-GB FineWeb split streams shard by shard.
- User mistakes (unknown names, empty corpus, no network, wrong tokenizer) raise DataError: one line, no traceback.
"""

import difflib
import hashlib
import json
import math
import os
import random
import shutil
import sysconfig
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from plumbing import DataError, cli

TOKENIZERS = ("gpt2", "bytes")
DATASETS = "stdlib, text:PATH, shakespeare, fineweb[:N], mqar[:pairs=N,keys=K]"
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages"}
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
FINEWEB_URL = "https://huggingface.co/datasets/kjj0/fineweb10B-gpt2/resolve/main/"
SHARD_MAGIC, SHARD_VERSION = 20240520, 1  # llm.c's GPT-2 token shard header


# ----------------------------------------------------------------------------- tokenizers


class Tokenizer:
    """Text <-> token ids. `enc` is the tiktoken encoding for gpt2, None for bytes."""

    def __init__(self, name, n_vocab, eot, enc=None):
        self.name, self.n_vocab, self.eot, self.enc = name, n_vocab, eot, enc

    def encode(self, text):
        return self.enc.encode_ordinary(text) if self.enc else list(text.encode("utf-8"))

    def encode_batch(self, texts):
        if self.enc:
            return self.enc.encode_ordinary_batch(
                list(texts)
            )  # tiktoken spreads the batch over threads
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids):
        ids = (
            ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]
        )  # numpy / torch / list
        if self.enc:
            return self.enc.decode(ids)
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def get_tokenizer(name: str) -> Tokenizer:
    if name == "bytes":
        return Tokenizer("bytes", 257, 256)
    if name != "gpt2":
        raise DataError(f"--tokenizer={name} is not one of {', '.join(TOKENIZERS)}")
    try:
        import tiktoken

        enc = tiktoken.get_encoding(
            "r50k_base"
        )  # downloads the ranks once, then reads TIKTOKEN_CACHE_DIR
    except Exception:  # tiktoken raises whatever its HTTP client raises; the fix is the same
        raise DataError(
            "could not load the GPT-2 BPE ranks for tiktoken (no network?); set TIKTOKEN_CACHE_DIR "
            "to a folder holding them, or pass --tokenizer=bytes"
        ) from None
    return Tokenizer("gpt2", enc.n_vocab, enc.eot_token, enc)


def _tokenize(tok, texts):
    """Texts -> one uint16 array, documents joined by eot (bytes goes through numpy, not 12M Python ints)."""
    if tok.enc:
        docs = [np.array(ids, dtype=np.uint16) for ids in tok.encode_batch(texts)]
    else:
        docs = [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.uint16) for t in texts]
    eot = np.array([tok.eot], dtype=np.uint16)
    parts = [p for doc in docs for p in (eot, doc)][
        1:
    ]  # eot between documents, not before the first
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def _token_bytes(tok):
    """UTF-8 length of every token id (eot: 0), so a token histogram gives the bytes behind it."""
    if not tok.enc:
        return np.array([1] * 256 + [0])
    lengths = [
        len(tok.enc.decode_single_token_bytes(i)) if i != tok.eot else 0 for i in range(tok.n_vocab)
    ]
    return np.array(lengths)


# ----------------------------------------------------------------------------- corpora


def stdlib_files() -> list[str]:
    """Sorted paths (relative to the stdlib root, '/'-separated) of the standard library's .py files, no tests."""
    root = Path(sysconfig.get_paths()["stdlib"])
    rels = (p.relative_to(root) for p in root.rglob("*.py"))
    return sorted(r.as_posix() for r in rels if not SKIP_DIRS & set(r.parts))


def is_val_file(rel: str) -> bool:
    return (
        hashlib.md5(rel.encode()).digest()[0] % 10 == 0
    )  # ~10% of files, the same on every machine


def _text_files(path):
    """text:PATH -> the files it names: PATH itself, or every non-hidden file below the folder, sorted."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"text:{path}: no such file or folder")
    hidden = lambda f: any(
        part.startswith(".") for part in f.relative_to(p).parts
    )  # .git, .DS_Store, ...
    return [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and not hidden(f))


def source_key(dataset):
    """text:PATH -> md5 of every file's relative path, size and mtime_ns: a prepared copy is stale when it changes.
    None for the other corpora (fixed downloads and the installed stdlib) and for a PATH that is gone."""
    kind, _, arg = dataset.partition(":")
    if kind != "text" or not Path(arg).exists():
        return None
    base = Path(arg) if Path(arg).is_dir() else Path(arg).parent
    stats = []
    for f in _text_files(arg):
        st = f.stat()
        stats.append((f.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns))
    return hashlib.md5(json.dumps(stats).encode()).hexdigest()


def _decode_utf8(raw):
    """bytes -> (text with U+FFFD where bytes are not UTF-8, how many bytes those are)."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        kept = len(raw.decode("utf-8", errors="ignore").encode("utf-8"))  # the valid bytes, exactly
        return raw.decode("utf-8", errors="replace"), len(raw) - kept


def _read_text_files(path):
    """text:PATH -> list of document texts; bytes that are not UTF-8 are read as U+FFFD, with one warning line."""
    docs, bad = [], []
    for f in _text_files(path):
        text, n_bad = _decode_utf8(f.read_bytes())
        docs.append(text)
        bad.append(n_bad)
    if sum(bad):
        n_files = sum(1 for b in bad if b)
        what = (
            f"{sum(bad)} bytes that are not UTF-8" if sum(bad) > 1 else "1 byte that is not UTF-8"
        )
        print(
            f"warning: text:{path} has {what} (in {n_files} file{'s' if n_files > 1 else ''}); "
            "they were read as U+FFFD",
            flush=True,
        )
    if not any(docs):
        raise DataError(f"text:{path} is empty (no text to train on)")
    return docs


def _download(url, dest, what, hint):
    tmp = _tmp(dest)
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:  # URLError, timeouts and refused connections are all OSErrors
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download {what} from {url} (no network? {e}); {hint}") from None
    os.replace(tmp, dest)


def _fineweb_shards(folder, n):
    """The val shard and n train shards in `folder`, downloading only the ones not already there."""
    names = ["fineweb_val_000000.bin"] + [f"fineweb_train_{i:06d}.bin" for i in range(1, n + 1)]
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (folder / name).exists():
            print(f"downloading {FINEWEB_URL}{name} ...", flush=True)
            _download(
                FINEWEB_URL + name,
                folder / name,
                "a FineWeb shard",
                f"you can place the shard files in {folder} by hand",
            )
    return [folder / name for name in names]


def read_fineweb_shard(path) -> np.ndarray:
    """One llm.c token shard -> uint16 tokens. Header: 256 int32, [0] magic, [1] version, [2] token count."""
    header = np.fromfile(path, dtype="<i4", count=256)
    if len(header) < 256:
        raise DataError(
            f"{path}: {os.path.getsize(path)} bytes, shorter than the 1024-byte shard header"
        )
    if header[0] != SHARD_MAGIC:
        raise DataError(
            f"{path}: magic number {header[0]}, expected {SHARD_MAGIC}; not a GPT-2 token shard"
        )
    if header[1] != SHARD_VERSION:
        raise DataError(f"{path}: version {header[1]}, expected {SHARD_VERSION}")
    n, size = int(header[2]), os.path.getsize(path)
    if size != 1024 + 2 * n:
        raise DataError(
            f"{path}: header says {n} tokens ({1024 + 2 * n} bytes) but the file has {size} bytes; "
            "delete it and download it again"
        )
    return np.fromfile(path, dtype="<u2", offset=1024).astype(np.uint16, copy=False)


# ----------------------------------------------------------------------------- prepare


def _tmp(path):
    return path.with_name(
        f"{path.name}.tmp{os.getpid()}"
    )  # per process: DDP ranks may prepare at once


def _write_split(path, chunks, n_vocab):
    """Stream uint16 chunks into path (atomically) and return the split's token histogram."""
    counts = np.zeros(n_vocab, dtype=np.int64)
    with open(tmp := _tmp(path), "wb") as f:
        for chunk in chunks:
            if len(chunk) and int(chunk.max()) >= n_vocab:
                raise DataError(
                    f"{path}: token id {int(chunk.max())} is outside the vocabulary of {n_vocab}"
                )
            f.write(np.ascontiguousarray(chunk, dtype=np.uint16).tobytes())
            counts += np.bincount(chunk, minlength=n_vocab)
    os.replace(tmp, path)
    return counts


def is_prepared(dataset, tokenizer, data_dir="data") -> bool:
    """Whether prepare() would return at once: the folder is finished and its source has not changed since (DDP
    ranks other than 0 wait on this while rank 0 prepares)."""
    folder = corpus_folder(dataset, tokenizer, data_dir)
    if not (folder / "meta.json").exists():
        return False
    key = source_key(dataset)
    return key is None or load_meta(folder).get("source_key") == key


def prepare(dataset: str, tokenizer: str, data_dir="data") -> Path:
    """Tokenize `dataset` once into data_dir/<name>-<tokenizer>/ and return that folder."""
    folder = corpus_folder(dataset, tokenizer, data_dir)
    key = source_key(
        dataset
    )  # taken before reading: an edit made while preparing shows up next time
    if (folder / "meta.json").exists():  # finished earlier: meta.json is written last
        meta = load_meta(folder)
        if meta["tokenizer"] != tokenizer:
            raise DataError(
                f"{folder} was prepared with tokenizer '{meta['tokenizer']}' but this run uses "
                f"'{tokenizer}'; pass --tokenizer={meta['tokenizer']} or delete the folder"
            )
        if key is None or meta.get("source_key") == key:
            return folder
        if "source_key" in meta:
            print(f"{dataset} changed since {folder} was prepared; preparing it again", flush=True)
        else:
            print(
                f"{folder} was prepared before content keys were recorded, so {dataset} may have changed since; "
                "preparing it again",
                flush=True,
            )
    tok = get_tokenizer(tokenizer)
    t0 = time.time()
    train, val = _corpus_splits(dataset, folder, tok)
    meta = _write_prepared(folder, dataset, tok, train, val, key)
    print(
        f"prepared {folder}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, "
        f"unigram {meta['unigram_bpb']:.3f} bits/byte ({time.time() - t0:.1f} s)",
        flush=True,
    )
    return folder


def corpus_folder(dataset, tokenizer, data_dir):
    """The folder a corpus is prepared into, data_dir/<name>-<tokenizer>; unknown names are refused here."""
    if tokenizer not in TOKENIZERS:
        raise DataError(f"--tokenizer={tokenizer} is not one of {', '.join(TOKENIZERS)}")
    kind, _, arg = dataset.partition(":")
    if dataset in ("stdlib", "shakespeare"):
        name = dataset
    elif kind == "text" and arg:
        name = f"text-{Path(arg).stem}-{hashlib.md5(str(Path(arg).resolve()).encode()).hexdigest()[:8]}"
    elif kind == "fineweb":
        if not (arg == "" or arg.isdigit() and int(arg) >= 1):
            raise DataError(
                f"--dataset={dataset}: N in fineweb:N must be a number of train shards >= 1"
            )
        if tokenizer != "gpt2":
            raise DataError("fineweb shards hold GPT-2 tokens; pass --tokenizer=gpt2")
        n = int(arg or 1)
        name = f"fineweb{n if n > 1 else ''}"
    elif kind == "mqar":
        raise DataError(
            f"--dataset={dataset} is generated batch by batch, not a text corpus prepared on disk, so it "
            "has no text loss (nor a general val loss for --mode=continual); an mqar model is scored "
            "by `python eval.py --mode=recall`"
        )
    else:
        raise DataError(f"--dataset={dataset} is not one of {DATASETS}")
    return Path(data_dir) / f"{name}-{tokenizer}"


def _corpus_splits(dataset, folder, tok):
    """(train chunks, val chunks): iterables of uint16 token arrays, read or downloaded, tokenized."""
    kind, _, arg = dataset.partition(":")
    if kind == "fineweb":
        shards = _fineweb_shards(folder, int(arg or 1))
        print(f"preparing {folder}: {len(shards)} shards ...", flush=True)
        train = (
            read_fineweb_shard(p) for p in shards[1:]
        )  # lazily: one 200 MB shard in memory at a time
        val = (read_fineweb_shard(p) for p in shards[:1])
        return train, val
    if dataset == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        rels = stdlib_files()
        docs = [(root / r).read_text(encoding="utf-8", errors="replace") for r in rels]
    elif dataset == "shakespeare":
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "input.txt").exists():
            _download(
                SHAKESPEARE_URL,
                folder / "input.txt",
                "tiny Shakespeare",
                "download it and pass --dataset=text:PATH",
            )
        docs = [(folder / "input.txt").read_text(encoding="utf-8", errors="replace")]
    else:
        docs = _read_text_files(arg)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"preparing {folder}: {len(docs)} files, {mb:.1f} MB ...", flush=True)
    if dataset == "stdlib":
        train = [_tokenize(tok, [d for r, d in zip(rels, docs) if not is_val_file(r)])]
        val = [_tokenize(tok, [d for r, d in zip(rels, docs) if is_val_file(r)])]
        return train, val
    tokens = _tokenize(tok, docs)
    cut = int(0.9 * len(tokens))  # first 90% train, last 10% val
    return [tokens[:cut]], [tokens[cut:]]


def _write_prepared(folder, dataset, tok, train, val, key=None):
    """train.bin, val.bin, then meta.json (counts, bytes, the unigram baseline, the source key; returned), written
    last: it marks a finished folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(
        missing_ok=True
    )  # preparing again: the old meta.json must not vouch for new .bin
    counts = {
        split: _write_split(folder / f"{split}.bin", chunks, tok.n_vocab)
        for split, chunks in (("train", train), ("val", val))
    }
    for split, c in counts.items():
        if c.sum() == 0:
            raise DataError(f"{folder}: the {split} split is empty; use a larger corpus")
    lengths = _token_bytes(tok)
    n_tok = {s: int(c.sum()) for s, c in counts.items()}
    n_bytes = {s: int(c @ lengths) for s, c in counts.items()}
    p = (counts["train"] + 1) / (
        n_tok["train"] + tok.n_vocab
    )  # add-one-smoothed unigram model of train
    val_bits = float(-(counts["val"] * np.log2(p)).sum())  # = cross-entropy in bits × val_tokens
    meta = {
        "dataset": dataset,
        "tokenizer": tok.name,
        "n_vocab": tok.n_vocab,
        "eot": tok.eot,
        "train_tokens": n_tok["train"],
        "val_tokens": n_tok["val"],
        "train_bytes": n_bytes["train"],
        "val_bytes": n_bytes["val"],
        "unigram_bpb": round(val_bits / max(n_bytes["val"], 1), 4),
    }
    if key:
        meta["source_key"] = key  # text:PATH only
    with open(tmp := _tmp(folder / "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, folder / "meta.json")  # last: from now on the folder counts as prepared
    return meta


# ----------------------------------------------------------------------------- reading and batching


def load_split(folder, split: str) -> np.memmap:
    return np.memmap(Path(folder) / f"{split}.bin", dtype=np.uint16, mode="r")


def load_meta(folder) -> dict:
    with open(Path(folder) / "meta.json") as f:
        return json.load(f)


def bits_per_byte(loss, meta, split="val"):
    """Nats per token -> bits per byte of the split's text: comparable across tokenizers (bytes, GPT-2 BPE)."""
    return loss / math.log(2) / (meta[f"{split}_bytes"] / meta[f"{split}_tokens"])


def check_block(tokens, block_size: int, split: str, folder) -> None:
    n = len(tokens)
    if n <= block_size + 1:
        raise DataError(
            f"{folder}/{split}.bin has {n} tokens, fewer than one block of {block_size}+1; "
            "use a larger corpus or a smaller --block_size"
        )


def get_batch(tokens, batch_size: int, block_size: int, generator: torch.Generator, rows=None):
    """nanoGPT's sampler: batch_size random windows; y is x shifted left by one. Int64 CPU tensors. rows: a slice
    of the batch to build (a DDP rank's share); the generator draws the whole batch's starts either way, so every
    rank stays in step and together they build exactly the one-process batch."""
    if isinstance(
        tokens, MQAR
    ):  # a generated task stands in for the token file, so the loop and evaluate() hold
        return tokens.batch(batch_size, block_size, generator, rows)
    ix = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    ix = ix if rows is None else ix[rows]
    x = torch.stack(
        [torch.from_numpy(tokens[i : i + block_size].astype(np.int64)) for i in ix.tolist()]
    )
    y = torch.stack(
        [torch.from_numpy(tokens[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix.tolist()]
    )
    return x, y


# ----------------------------------------------------------------------------- multi-query associative recall

MQAR_OPTIONS = dict(
    pairs=8, keys=64
)  # defaults: chance 1/8; the 8 values in context are 1/8 of the 64 values
MQAR_EXAMPLE = "--dataset=mqar:pairs=8,keys=64"


class MQAR:
    """Multi-query associative recall (Zoology, arXiv 2312.04927 §3): a sequence holds N key-value pairs
    `k1 v1 ... kN vN` (keys distinct, drawn from K keys; values distinct, drawn from K values), then a query region
    of filler in which each key appears once more, at a random even offset, in random order. The target at a query
    is the value paired with that key; every other target is -1 (ignored by the loss). Ids: 0 filler, keys 1..K,
    values K+1..2K. The offsets are uniform here (Zoology draws them from a power law that favours short gaps),
    and the filler is 0 (Zoology's random_non_queries puts random tokens there)."""

    def __init__(self, pairs: int, keys: int):
        self.pairs, self.keys = pairs, keys

    @property
    def name(self):
        return f"mqar:pairs={self.pairs},keys={self.keys}"

    @property
    def chance(self):
        return (
            1 / self.pairs
        )  # knowing the answer is one of the N values in the context, but not which

    @property
    def min_length(self):
        return 4 * self.pairs  # 2N for the pairs, 2N for N query slots two apart

    def recall_text(self, accuracy: float) -> str:
        return f"recall accuracy {accuracy:.3f} (chance {self.chance:.3f})"

    def check(self, block_size: int, n_vocab: int) -> None:
        """DataError unless a sequence of block_size fits the pairs and their queries, and the ids fit n_vocab."""
        if block_size < self.min_length:
            raise DataError(
                f"--dataset={self.name} needs --block_size >= 4 x pairs = {self.min_length} (the pairs, "
                f"then a query and a filler per pair), but --block_size={block_size}; pass "
                f"--block_size={self.min_length} or fewer pairs, e.g. mqar:pairs={block_size // 4}"
            )
        if 2 * self.keys + 1 > n_vocab:
            raise DataError(
                f"--dataset={self.name} uses ids 0..{2 * self.keys} (filler, {self.keys} keys, "
                f"{self.keys} values), beyond the tokenizer's {n_vocab} ids; pass "
                f"keys<={(n_vocab - 1) // 2}"
            )

    def batch(self, batch_size: int, T: int, generator: torch.Generator, rows=None):
        """(x, y) int64 (batch_size, T) CPU tensors. rows: the slice of the batch to return (a DDP rank's share);
        the whole batch is drawn either way, so every rank stays in step with the one-process batch."""
        N, K = self.pairs, self.keys
        draw = lambda n: torch.rand(batch_size, n, generator=generator).argsort(dim=1)[
            :, :N
        ]  # N of n, no repeats
        keys = draw(K) + 1  # (B, N)
        values = draw(K) + K + 1  # (B, N)
        slots = draw(
            (T - 2 * N + 1) // 2
        )  # (B, N): query k sits at offset 2·slots[k] of the query region
        queries = 2 * N + 2 * slots  # (B, N) positions in the sequence
        x = torch.zeros(batch_size, T, dtype=torch.long)
        x[:, 0 : 2 * N : 2] = keys
        x[:, 1 : 2 * N : 2] = values
        x.scatter_(1, queries, keys)
        y = torch.full((batch_size, T), -1, dtype=torch.long).scatter_(1, queries, values)
        return (x, y) if rows is None else (x[rows], y[rows])


def mqar_task(dataset: str):
    """--dataset=mqar[:pairs=N,keys=K] -> its MQAR (MQAR_OPTIONS fill what is not given); None for a corpus."""
    kind, colon, options = dataset.partition(":")
    if kind != "mqar":
        return None
    values = dict(MQAR_OPTIONS)
    for option in options.split(",") if colon else []:
        key, eq, value = option.partition("=")
        if key not in MQAR_OPTIONS or not eq:
            raise DataError(
                f"--dataset={dataset}: {option!r} is not an mqar option; the options are "
                f"{', '.join(f'{k}=N' for k in MQAR_OPTIONS)}, e.g. {MQAR_EXAMPLE}"
            )
        if not value.isdigit() or int(value) < 1:
            raise DataError(
                f"--dataset={dataset}: {key}={value} must be a whole number >= 1, e.g. {MQAR_EXAMPLE}"
            )
        values[key] = int(value)
    if values["pairs"] > values["keys"]:
        raise DataError(
            f"--dataset={dataset}: pairs={values['pairs']} distinct keys cannot be drawn from "
            f"keys={values['keys']}; pass keys >= pairs, e.g. {MQAR_EXAMPLE}"
        )
    return MQAR(values["pairs"], values["keys"])


def answer_accuracy(logits, targets) -> torch.Tensor:
    """The fraction of answers (targets != -1) whose argmax logit is the target: recall accuracy for mqar, as a
    0-dim tensor on the logits' device, so that an eval loop on a GPU never waits for it."""
    right = logits.argmax(dim=-1) == targets  # never true where the target is -1: argmax is >= 0
    return right.sum() / (targets != -1).sum()


# ----------------------------------------------------------------------------- task suite
# A task is a list of {"prompt": str, "answer": str} records, split into train and test (TRACE's format). Every
# builtin prompt opens with its task's own instruction word and ends with "A: "; answers have no leading space.
# They stay short (prompts <= 80 ASCII characters, answers <= 8) because the CPU model reads bytes, and easy enough
# that the default `python train.py` model learns each to >= 0.6 exact match in 200 fine-tuning steps at lr 1e-3.

BUILTIN_TASKS = (
    "sentiment",
    "arithmetic",
    "python",
    "cipher",
    "extract",
    "reverse",
)  # the builtin order

POSITIVE = (
    "good",
    "great",
    "tasty",
    "fresh",
    "lovely",
    "friendly",
    "superb",
    "pleasant",
    "excellent",
    "charming",
    "delightful",
    "wonderful",
)
NEGATIVE = (
    "bad",
    "awful",
    "bland",
    "cold",
    "rude",
    "dirty",
    "boring",
    "stale",
    "noisy",
    "terrible",
    "dreadful",
    "horrible",
)
REVIEWED = (
    "soup",
    "service",
    "movie",
    "room",
    "staff",
    "book",
    "pizza",
    "hotel",
    "coffee",
    "show",
    "bread",
    "music",
    "waiter",
    "film",
    "garden",
    "concert",
    "salad",
    "train",
    "lesson",
    "album",
)
PEOPLE = (
    "Ann",
    "Bob",
    "Carla",
    "Dev",
    "Eve",
    "Femi",
    "Gus",
    "Hana",
    "Ivan",
    "Jin",
    "Kofi",
    "Lea",
    "Mona",
    "Nils",
    "Omar",
    "Pia",
    "Raj",
    "Sara",
    "Tom",
    "Uma",
    "Vera",
    "Wes",
    "Yuki",
    "Zoe",
)
THINGS = (
    "apples",
    "pens",
    "stamps",
    "coins",
    "books",
    "eggs",
    "cards",
    "shells",
    "marbles",
    "cookies",
    "stickers",
    "plums",
)
CITIES = (
    "Oslo",
    "Lima",
    "Paris",
    "Rome",
    "Cairo",
    "Tokyo",
    "Berlin",
    "Madrid",
    "Dublin",
    "Vienna",
    "Quito",
    "Delhi",
    "Seoul",
    "Athens",
    "Nairobi",
    "Lisbon",
    "Hanoi",
    "Accra",
    "Bogota",
    "Havana",
)
CIPHER = {  # English -> made-up words, fixed for every seed: the cipher task learns this dictionary
    "sun": "vuz",
    "moon": "dov",
    "star": "kab",
    "tree": "fuv",
    "rock": "vil",
    "fish": "vak",
    "bird": "neb",
    "cat": "zop",
    "dog": "pag",
    "king": "rud",
    "red": "vis",
    "blue": "vus",
    "green": "dol",
    "big": "div",
    "small": "miz",
    "old": "tav",
    "new": "gid",
    "hot": "buk",
    "cold": "zin",
    "water": "zep",
    "fire": "ruz",
    "wind": "sig",
    "rain": "rok",
    "house": "lud",
    "road": "dus",
    "boat": "ped",
    "door": "rik",
    "book": "tem",
    "milk": "nef",
    "bread": "rez",
    "salt": "zub",
    "gold": "geb",
    "ship": "sif",
    "horse": "sur",
    "child": "kim",
    "night": "pok",
    "day": "fob",
    "food": "fom",
    "snow": "tod",
    "hill": "nev",
}


def _sentiment(rng):
    """Label of a templated review; a "not" flips the adjective's polarity (classification)."""
    noun, positive = rng.choice(REVIEWED), rng.random() < 0.5
    adj, adj2 = rng.sample(POSITIVE if positive else NEGATIVE, 2)
    form = rng.choice(("plain", "not", "and"))
    review = {
        "plain": f"the {noun} was {adj}.",
        "not": f"the {noun} was not {adj}.",
        "and": f"the {noun} was {adj} and {adj2}.",
    }[form]
    return f"Review: {review} Sentiment? A: ", "positive" if positive != (
        form == "not"
    ) else "negative"


def _arithmetic(rng):
    """A one-step word problem: the sum of two numbers below 10."""
    name, things, a, b = (
        rng.choice(PEOPLE),
        rng.choice(THINGS),
        rng.randint(1, 9),
        rng.randint(1, 9),
    )
    return f"Math: {name} has {a} {things} and gets {b} more. How many? A: ", str(a + b)


def _python(rng):
    """The value printed by a two-statement snippet: a sum or a (non-negative) difference of numbers below 10 (code)."""
    v, op = rng.choice("abcmnpxyz"), rng.choice("+-")
    n1, n2 = rng.randint(1, 9), rng.randint(1, 9)
    if op == "-":
        n1, n2 = max(n1, n2), min(n1, n2)
    return f"Python: {v} = {n1}; print({v} {op} {n2}) Output? A: ", str(
        n1 + n2 if op == "+" else n1 - n2
    )


def _cipher(rng):
    """Word-by-word translation of one or two English words into the CIPHER language (rewriting)."""
    words = rng.sample(
        sorted(CIPHER), 1 if rng.random() < 0.1 else 2
    )  # pairs: 1560 prompts; single words: 40
    return f"Translate: {' '.join(words)} A: ", " ".join(CIPHER[w] for w in words)


def _extract(rng):
    """The name or the city of a three-field record (name and city in random order, then an age) (extraction)."""
    values = {"name": rng.choice(PEOPLE), "city": rng.choice(CITIES)}
    keys = rng.sample(sorted(values), 2)
    record = "; ".join(f"{k}={values[k]}" for k in keys)
    asked = rng.choice(keys)
    return f"Record: {record}; age={rng.randint(18, 89)}. {asked}? A: ", values[asked]


def _reverse(rng):
    """Three digits, reversed."""
    s = "".join(rng.choice("0123456789") for _ in range(3))
    return f"Reverse: {s} A: ", s[::-1]


TASK_GENERATORS = {
    "sentiment": _sentiment,
    "arithmetic": _arithmetic,
    "python": _python,
    "cipher": _cipher,
    "extract": _extract,
    "reverse": _reverse,
}


def _sample_task(name, draw, rng, n_train, n_test):
    """n_test distinct test prompts first, then n_train draws whose prompt is not among them (repeats allowed in
    train: a small prompt space like cipher's has fewer distinct prompts than train records)."""
    train, test, test_prompts = [], [], set()
    for _ in range(
        20 * (n_train + n_test)
    ):  # a bound, so a prompt space too small for n_test fails, not hangs
        prompt, answer = draw(rng)
        if len(test) < n_test:
            if prompt not in test_prompts:
                test_prompts.add(prompt)
                test.append({"prompt": prompt, "answer": answer})
        elif prompt not in test_prompts:
            train.append({"prompt": prompt, "answer": answer})
            if len(train) == n_train:
                return train, test
    raise DataError(
        f"the builtin task {name} has too few distinct prompts for {n_test} test and {n_train} train "
        "records; ask for fewer"
    )


def builtin_tasks(
    seed: int = 0, n_train: int = 2000, n_test: int = 200
) -> list[tuple[str, list[dict], list[dict]]]:
    """[(name, train, test), ...] in BUILTIN_TASKS order; task k draws from random.Random(seed + k) only."""
    if n_train < 1 or n_test < 1:
        raise DataError(
            f"a task needs train and test records (got n_train={n_train}, n_test={n_test})"
        )
    return [
        (name, *_sample_task(name, TASK_GENERATORS[name], random.Random(seed + k), n_train, n_test))
        for k, name in enumerate(BUILTIN_TASKS)
    ]


def _read_records(path):
    """One task file -> [{"prompt", "answer"}]: a JSON list (.json) or one JSON object per line (.jsonl)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8 JSON") from None
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path} line {e.lineno}: not valid JSON ({e.msg}); fix the file or write it as "
                'a JSON list of {"prompt", "answer"} objects'
            ) from None
        if not isinstance(items, list):
            raise DataError(
                f"{path} is not a JSON list; a .json task file holds a list of "
                '{"prompt", "answer"} objects'
            )
        where = [f"record {i} (0-based)" for i in range(len(items))]
    else:
        items, where = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue  # blank lines (a trailing newline, say) are not records
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path} line {lineno}: not valid JSON ({e.msg}); a .jsonl file holds one "
                    '{"prompt", "answer"} object per line'
                ) from None
            where.append(f"record {len(where)} (0-based, line {lineno})")
    for item, place in zip(items, where):
        for key in ("prompt", "answer"):
            if not isinstance(item, dict) or not isinstance(item.get(key), str):
                raise DataError(
                    f'{path}: {place} has no string "{key}"; every record is '
                    '{"prompt": str, "answer": str}'
                )
        if not item[
            "answer"
        ].strip():  # an empty answer would be scored as right whatever the model says
            raise DataError(
                f'{path}: {place} has an empty "answer" ({item["answer"]!r}); give it the expected '
                "output or remove the record"
            )
    if not items:
        raise DataError(
            f"{path} has no records; every task needs at least one train and one test record"
        )
    return [
        {"prompt": item["prompt"], "answer": item["answer"]} for item in items
    ]  # other keys are dropped


def _task_file(folder, split):
    found = [
        folder / f"{split}{ext}"
        for ext in (".json", ".jsonl")
        if (folder / f"{split}{ext}").is_file()
    ]
    if not found:
        raise DataError(
            f"{folder} has no {split}.json or {split}.jsonl; a task folder holds both a train and "
            "a test file"
        )
    if len(found) > 1:
        raise DataError(f"{folder} has both {split}.json and {split}.jsonl; keep one")
    return found[0]


def _pick_order(tasks, order, where):
    """tasks reordered (and possibly narrowed) to the names in order."""
    by_name = {name: (name, train, test) for name, train, test in tasks}
    for name in order:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            raise DataError(
                f"task order names {name!r}, which is not a task in {where} (tasks: "
                f"{', '.join(by_name)})" + (f"; did you mean {close[0]}?" if close else "")
            )
    if len(set(order)) < len(order):
        twice = sorted({name for name in order if order.count(name) > 1})
        raise DataError(f"task order lists {', '.join(twice)} more than once; name each task once")
    return [by_name[name] for name in order]


def load_tasks(
    spec: str, order: list[str] | None = None, seed: int = 0
) -> list[tuple[str, list[dict], list[dict]]]:
    """'builtin' -> builtin_tasks(seed); else a folder in TRACE's layout, DIR/<task>/{train,test}.json[l].
    Order: `order` when given (a subset is fine), else BUILTIN_TASKS order / sorted by folder name."""
    if spec == "builtin":
        tasks = builtin_tasks(seed)
    else:
        root = Path(spec)
        if not root.is_dir():
            raise DataError(
                f"--tasks={spec}: no such folder; pass --tasks=builtin or a folder with one sub-folder "
                "per task holding train.json and test.json"
            )
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DataError(
                f"--tasks={spec} has no task sub-folders; expected {spec}/<task>/train.json and "
                "test.json (python data.py --write_tasks=DIR writes an example)"
            )
        tasks = [
            (f.name, _read_records(_task_file(f, "train")), _read_records(_task_file(f, "test")))
            for f in folders
        ]
    return _pick_order(tasks, order, spec) if order else tasks


def write_tasks(tasks, folder) -> None:
    """[(name, train, test)] -> folder/<name>/{train,test}.json, readable JSON that load_tasks reads back."""
    for name, train, test in tasks:
        (Path(folder) / name).mkdir(parents=True, exist_ok=True)
        for split, records in (("train", train), ("test", test)):
            with open(Path(folder) / name / f"{split}.json", "w", encoding="utf-8") as f:
                json.dump(records, f, indent=1, ensure_ascii=False)
                f.write("\n")


def encode_record(tok, record) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids + [eot]). The answer is encoded on its own, so the prompt/answer split is exact
    (a BPE would otherwise merge across the boundary); the eot teaches the model where the answer stops."""
    return tok.encode(record["prompt"]), tok.encode(record["answer"]) + [tok.eot]


def check_task_lengths(tasks, tok, block_size: int) -> None:
    """DataError naming the first record (task, split, index) longer than block_size as model input: prompt +
    answer tokens (the end token is only a target, never an input)."""
    for name, train, test in tasks:
        for split, records in (("train", train), ("test", test)):
            prompts = tok.encode_batch([r["prompt"] for r in records])
            answers = tok.encode_batch([r["answer"] for r in records])
            for i, (p, a) in enumerate(zip(prompts, answers)):
                if len(p) + len(a) > block_size:
                    raise DataError(
                        f"task {name}: {split} record {i} is {len(p) + len(a)} tokens (prompt + "
                        f"answer), longer than --block_size={block_size}; pass a larger "
                        "--block_size or shorten the prompts"
                    )


# ----------------------------------------------------------------------------- command line

USAGE = "usage: python data.py --write_tasks=DIR [--seed=N]"


def main(argv):
    """python data.py --write_tasks=DIR [--seed=N]: write the builtin tasks in TRACE's layout, one line per task."""
    if "-h" in argv or "--help" in argv:
        print(USAGE + "  (writes the builtin tasks to DIR/<task>/{train,test}.json)")
        return
    flags = {}
    for arg in argv:
        key, eq, value = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not eq or key not in ("write_tasks", "seed"):
            raise DataError(f"unexpected argument {arg!r}; {USAGE}")
        flags[key] = value
    if not flags.get("write_tasks"):
        raise DataError(f"--write_tasks=DIR is required; {USAGE}")
    try:
        seed = int(flags.get("seed", "0"))
    except ValueError:
        raise DataError(f"--seed={flags['seed']} is not an integer; {USAGE}") from None
    tasks = builtin_tasks(seed)
    write_tasks(tasks, flags["write_tasks"])
    for name, train, test in tasks:
        print(
            f"{flags['write_tasks']}/{name}: {len(train)} train, {len(test)} test, e.g. "
            f"{test[0]['prompt']!r} -> {test[0]['answer']!r}"
        )


if __name__ == "__main__":
    cli(main)
