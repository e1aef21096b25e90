"""Tokenizers, corpora prepared once into uint16 token files, and batches sampled from them.

tokenizers  gpt2   tiktoken r50k_base, the GPT-2 BPE (50257 ids, eot 50256)
            bytes  UTF-8 bytes (256 ids) plus one end-of-text id 256; needs nothing
corpora     stdlib       the Python standard library's .py files (tests excluded); the default
            text:PATH    any UTF-8 text file or folder of them
            shakespeare  tiny Shakespeare (1.1 MB), downloaded the first time
            fineweb[:N]  GPT-2 token shards (256×int32 header, then uint16): val + N train shards
            mqar[:pairs=N,keys=K]  multi-query associative recall (Zoology, arXiv 2312.04927),
                         generated batch by batch; nothing on disk (MQAR, answer_accuracy)
batches     load_dataset() -> Dataset(.train, .val): one .batch(batch_size, block_size, generator,
            rows) for a prepared corpus (TokenSplit, nanoGPT's random windows) and for MQAR

prepare() writes data/<name>-<tokenizer>/{train.bin, val.bin, meta.json} once, returns the folder.
The continual-learning task suite and the TRACE loader live in tasks.py.

Design choices:
- Documents are joined with the eot id; stdlib splits train/val by a hash of each file's path (the
  same on every machine), the other text corpora by position (first 90% train).
- Files are written under temporary names and renamed, meta.json last: it marks a finished folder.
- text:PATH is keyed by its content (source_key: md5 of each file's path, size and mtime_ns) and
  prepared again when it changes; bytes that are not UTF-8 are read as U+FFFD, with one warning.
- meta.json keeps each split's byte count (losses in bits per byte, comparable across tokenizers)
  and `unigram_bpb`, the add-one-smoothed unigram model's val bits per byte: the floor to beat.
- Counts come from token histograms, so a multi-GB FineWeb split streams shard by shard.
- User mistakes (unknown names, empty corpus, no network, wrong tokenizer) raise DataError, and
  so do damaged prepared files (a split not the size meta.json says, an unreadable meta.json, ids
  beyond the vocabulary in a batch): delete meta.json and the next run prepares the folder again.
"""

import hashlib
import json
import math
import os
import shutil
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from plumbing import DataError

TOKENIZERS = ("gpt2", "bytes")
# the ids each tokenizer makes: all a benchmark on random tokens needs (no ranks to load offline)
N_VOCAB = dict(gpt2=50257, bytes=257)
DATASETS = "stdlib, text:PATH, shakespeare, fineweb[:N], mqar[:pairs=N,keys=K]"
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages"}
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
FINEWEB_URL = "https://huggingface.co/datasets/kjj0/fineweb10B-gpt2/resolve/main/"
SHARD_MAGIC = 20240520  # llm.c's GPT-2 token shard header: magic, then version
SHARD_VERSION = 1


# ----------------------------------------------------------------------------- tokenizers


class Tokenizer:
    """Text <-> token ids. `enc` is the tiktoken encoding for gpt2, None for bytes."""

    def __init__(self, name, n_vocab, eot, enc=None):
        self.name = name
        self.n_vocab = n_vocab
        self.eot = eot
        self.enc = enc

    def encode(self, text):
        return self.enc.encode_ordinary(text) if self.enc else list(text.encode("utf-8"))

    def encode_batch(self, texts):
        if self.enc:  # tiktoken spreads the batch over threads
            return self.enc.encode_ordinary_batch(list(texts))
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids):
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]  # numpy, torch
        if self.enc:
            return self.enc.decode(ids)
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def get_tokenizer(name: str) -> Tokenizer:
    if name == "bytes":
        return Tokenizer("bytes", N_VOCAB["bytes"], 256)
    if name != "gpt2":
        raise DataError(f"--tokenizer={name} is not one of {', '.join(TOKENIZERS)}")
    try:
        import tiktoken

        # downloads the ranks once, then reads TIKTOKEN_CACHE_DIR
        enc = tiktoken.get_encoding("r50k_base")
    except Exception:  # tiktoken raises whatever its HTTP client raises; the fix is the same
        raise DataError(
            "could not load the GPT-2 BPE ranks for tiktoken (no network?); set TIKTOKEN_CACHE_DIR "
            "to a folder holding them, or pass --tokenizer=bytes"
        ) from None
    return Tokenizer("gpt2", enc.n_vocab, enc.eot_token, enc)


def _tokenize(tok, texts):
    """Texts -> one uint16 array, documents joined by eot (bytes: numpy, not 12M Python ints)."""
    if tok.enc:
        docs = [np.array(ids, dtype=np.uint16) for ids in tok.encode_batch(texts)]
    else:
        docs = [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.uint16) for t in texts]
    eot = np.array([tok.eot], dtype=np.uint16)
    parts = [p for doc in docs for p in (eot, doc)][1:]  # eot between documents, not first
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def _token_bytes(tok):
    """UTF-8 length of every token id (eot: 0), so a token histogram gives the bytes behind it."""
    if not tok.enc:
        return np.array([1] * 256 + [0])
    lengths = [
        len(tok.enc.decode_single_token_bytes(i)) if i != tok.eot else 0 for i in range(tok.n_vocab)
    ]
    return np.array(lengths)


# ----------------------------------------------------------------------------- batches


@dataclass
class Dataset:
    """What a run trains on. train and val both have .batch(batch_size, block_size, generator,
    rows=None) -> (x, y), int64 CPU tensors, for a text corpus and for MQAR alike."""

    tokenizer: Tokenizer
    train: object  # TokenSplit of a prepared corpus, or the MQAR task that generates batches
    val: object
    meta: dict | None = None  # the corpus's meta.json (counts, bytes, unigram baseline); None: mqar
    task: object = None  # the MQAR task (train and val are it); None for a text corpus
    folder: Path | None = None  # the prepared corpus; None for mqar


@dataclass
class TokenSplit:
    """One split of a prepared corpus: uint16 tokens on disk (np.memmap), sampled by get_batch."""

    tokens: np.ndarray
    n_vocab: int = 0  # ids at or above it mean a damaged file

    def __len__(self):
        return len(self.tokens)

    def batch(self, batch_size: int, block_size: int, generator: torch.Generator, rows=None):
        return get_batch(self.tokens, batch_size, block_size, generator, rows, self.n_vocab)


def check_dataset(dataset, tokenizer, data_dir, block_size):
    """A run's --dataset, checked before anything is prepared (DataError): MQAR's pairs fit a
    block and its ids the vocabulary; a corpus is a known name (fineweb needs gpt2)."""
    if task := mqar_task(dataset):
        task.check(block_size, get_tokenizer(tokenizer).n_vocab)
    else:
        corpus_folder(dataset, tokenizer, data_dir)


def load_dataset(dataset, tokenizer, data_dir, block_size, master=True) -> Dataset:
    """--dataset, --tokenizer -> Dataset. A corpus is prepared once (the master prepares, the other
    DDP ranks wait for its files) and both splits must hold a block; mqar is generated batch by
    batch (train from the run's generator, val from evaluate()'s), nothing on disk."""
    tok = get_tokenizer(tokenizer)
    task = mqar_task(dataset)
    if task:
        return Dataset(tok, task, task, task=task)
    if master:
        prepare(dataset, tokenizer, data_dir)
    t0 = time.time()
    while not is_prepared(dataset, tokenizer, data_dir):
        time.sleep(1)
        if int(time.time() - t0) % 300 == 0:
            rank = os.environ.get("RANK", "?")  # set by torchrun, the only way to be a non-master
            print(
                f"rank {rank}: waiting for rank 0 to prepare {dataset} ({int(time.time() - t0)} s)"
            )
    folder = prepare(dataset, tokenizer, data_dir)
    train = load_split(folder, "train")
    val = load_split(folder, "val")
    check_block(train, block_size, "train", folder)
    check_block(val, block_size, "val", folder)
    meta = load_meta(folder)
    n = meta["n_vocab"]
    return Dataset(tok, TokenSplit(train, n), TokenSplit(val, n), meta, folder=folder)


def get_batch(tokens, batch_size, block_size, generator, rows=None, n_vocab=0):
    """nanoGPT's sampler: batch_size random windows of tokens; y is x shifted left by one. Int64 CPU
    tensors. rows: the slice of the batch to build (a DDP rank's share); the generator draws the
    whole batch's starts either way, so the ranks together build exactly the one-process batch.
    n_vocab: ids at or above it are a damaged file (one DataError), checked on the batch only."""
    ix = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    ix = ix if rows is None else ix[rows]
    # one fancy-index gather of every window (not 2·B slices: 2.1 ms vs 23.8 ms a gpt2 step)
    at = ix.numpy()[:, None] + np.arange(block_size + 1)  # (B, T + 1) token positions
    window = tokens[at]
    if n_vocab and len(window) and int(window.max()) >= n_vocab:  # a damaged file, not a bug
        folder = Path(getattr(tokens, "filename", None) or "the token file").parent
        raise DataError(
            f"{folder}: token id {int(window.max())} is outside the vocabulary of {n_vocab}; "
            + AGAIN.format(folder=folder)
        )
    window = torch.from_numpy(window.astype(np.int64))
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


# a damaged prepared file: without meta.json the next run prepares the folder again (fineweb from
# the shards already there, no download)
AGAIN = "it is damaged or half-written; delete {folder}/meta.json and run again to prepare it anew"


def load_split(folder, split: str) -> np.memmap:
    """A prepared split's tokens, checked against meta.json's count (a truncated file is one
    DataError saying how to prepare it again)."""
    path = Path(folder) / f"{split}.bin"
    want = load_meta(folder)[f"{split}_tokens"]
    size = path.stat().st_size if path.is_file() else -1
    if size != 2 * want:
        what = f"{size} bytes" if size >= 0 else "missing"
        raise DataError(
            f"{path}: {what}, but meta.json says {want:,} tokens ({2 * want:,} bytes); "
            + AGAIN.format(folder=folder)
        )
    return np.memmap(path, dtype=np.uint16, mode="r")


META_KEYS = "tokenizer n_vocab train_tokens val_tokens train_bytes val_bytes unigram_bpb".split()


def load_meta(folder) -> dict:
    """meta.json of a prepared folder; unreadable or incomplete is one DataError."""
    path = Path(folder) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict) or not set(META_KEYS) <= set(meta):
        raise DataError(f"{path} is not a readable meta.json; " + AGAIN.format(folder=folder))
    return meta


def check_block(tokens, block_size: int, split: str, folder) -> None:
    n = len(tokens)
    if n <= block_size + 1:
        raise DataError(
            f"{folder}/{split}.bin has {n} tokens, fewer than one block of {block_size}+1; "
            "use a larger corpus or a smaller --block_size"
        )


def bits_per_byte(loss, meta, split="val"):
    """Nats per token -> bits per byte of the split's text: comparable across tokenizers."""
    return loss / math.log(2) / (meta[f"{split}_bytes"] / meta[f"{split}_tokens"])


# ----------------------------------------------------------------------------- mqar

MQAR_OPTIONS = dict(pairs=8, keys=64)  # defaults: chance 1/8; 8 values in context, of 64
MQAR_EXAMPLE = "--dataset=mqar:pairs=8,keys=64"


class MQAR:
    """Multi-query associative recall (Zoology, arXiv 2312.04927 §3): N key-value pairs
    `k1 v1 ... kN vN` (distinct keys of K, distinct values of K), then a query region of filler in
    which each key appears once more, at a random even offset, in random order. The target at a
    query is that key's value; every other target is -1 (ignored by the loss). Ids: 0 filler,
    keys 1..K, values K+1..2K. Unlike Zoology, offsets are uniform (not power-law) and the filler
    is 0 (not random tokens)."""

    def __init__(self, pairs: int, keys: int):
        self.pairs = pairs
        self.keys = keys

    @property
    def name(self):
        return f"mqar:pairs={self.pairs},keys={self.keys}"

    @property
    def chance(self):
        return 1 / self.pairs  # the answer is one of the N values in context, but which?

    @property
    def min_length(self):
        return 4 * self.pairs  # 2N for the pairs, 2N for N query slots two apart

    def recall_text(self, accuracy: float) -> str:
        return f"recall accuracy {accuracy:.3f} (chance {self.chance:.3f})"

    def check(self, block_size: int, n_vocab: int) -> None:
        """DataError unless block_size fits the pairs and their queries, and the ids fit n_vocab."""
        if block_size < self.min_length:
            raise DataError(
                f"--dataset={self.name} needs --block_size >= 4 x pairs = {self.min_length} (the "
                f"pairs, then a query and a filler per pair), but --block_size={block_size}; pass "
                f"--block_size={self.min_length} or fewer pairs, e.g. mqar:pairs={block_size // 4}"
            )
        if 2 * self.keys + 1 > n_vocab:
            raise DataError(
                f"--dataset={self.name} uses ids 0..{2 * self.keys} (filler, {self.keys} keys, "
                f"{self.keys} values), beyond the tokenizer's {n_vocab} ids; pass "
                f"keys<={(n_vocab - 1) // 2}"
            )

    def batch(self, batch_size: int, T: int, generator: torch.Generator, rows=None):
        """(x, y) int64 (batch_size, T) CPU tensors. rows: the slice to return (a DDP rank's
        share); the whole batch is drawn either way, so the ranks stay in step."""
        N, K = self.pairs, self.keys

        def draw(n):  # (B, N): N of range(n) per row, no repeats
            return torch.rand(batch_size, n, generator=generator).argsort(dim=1)[:, :N]

        keys = draw(K) + 1  # (B, N)
        values = draw(K) + K + 1  # (B, N)
        slots = draw((T - 2 * N + 1) // 2)  # (B, N): query k sits at 2·slots[k] of the query region
        queries = 2 * N + 2 * slots  # (B, N) positions in the sequence
        x = torch.zeros(batch_size, T, dtype=torch.long)
        x[:, 0 : 2 * N : 2] = keys
        x[:, 1 : 2 * N : 2] = values
        x.scatter_(1, queries, keys)
        y = torch.full((batch_size, T), -1, dtype=torch.long).scatter_(1, queries, values)
        return (x, y) if rows is None else (x[rows], y[rows])


def mqar_task(dataset: str):
    """--dataset=mqar[:pairs=N,keys=K] -> its MQAR (MQAR_OPTIONS fill the rest); None otherwise."""
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
                f"--dataset={dataset}: {key}={value} must be a whole number >= 1, "
                f"e.g. {MQAR_EXAMPLE}"
            )
        values[key] = int(value)
    if values["pairs"] > values["keys"]:
        raise DataError(
            f"--dataset={dataset}: pairs={values['pairs']} distinct keys cannot be drawn from "
            f"keys={values['keys']}; pass keys >= pairs, e.g. {MQAR_EXAMPLE}"
        )
    return MQAR(values["pairs"], values["keys"])


def answer_accuracy(logits, targets) -> torch.Tensor:
    """The fraction of answers (targets != -1) whose argmax logit is the target: mqar's recall
    accuracy, a 0-dim tensor on the logits' device (an eval loop on a GPU never waits for it)."""
    right = logits.argmax(dim=-1) == targets  # never true where the target is -1: argmax is >= 0
    return right.sum() / (targets != -1).sum()


# ----------------------------------------------------------------------------- corpora


def stdlib_files() -> list[str]:
    """Sorted '/'-separated paths, relative to the stdlib root, of its .py files (no tests)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    rels = (p.relative_to(root) for p in root.rglob("*.py"))
    return sorted(r.as_posix() for r in rels if not SKIP_DIRS & set(r.parts))


def is_val_file(rel: str) -> bool:
    return hashlib.md5(rel.encode()).digest()[0] % 10 == 0  # ~10% of files, on every machine


def _text_files(path):
    """text:PATH -> PATH itself, or every non-hidden file below the folder, sorted."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"text:{path}: no such file or folder")
    hidden = lambda f: any(part.startswith(".") for part in f.relative_to(p).parts)  # .git, ...
    return [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and not hidden(f))


def source_key(dataset):
    """text:PATH -> md5 of every file's relative path, size and mtime_ns (a prepared copy is stale
    when it changes); None for the other corpora and for a PATH that is gone."""
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
    """text:PATH -> document texts; bytes that are not UTF-8 become U+FFFD, with one warning."""
    docs = []
    bad = []
    for f in _text_files(path):
        text, n_bad = _decode_utf8(f.read_bytes())
        docs.append(text)
        bad.append(n_bad)
    if sum(bad):
        n_files = sum(1 for b in bad if b)
        what = f"{sum(bad)} bytes" if sum(bad) > 1 else "1 byte"
        print(
            f"warning: text:{path} has {what} that {'are' if sum(bad) > 1 else 'is'} not UTF-8 "
            f"(in {n_files} file{'s' if n_files > 1 else ''}); "
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
    """The val shard and n train shards in `folder`, downloading the ones not there yet."""
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
    """One llm.c token shard -> uint16 tokens. Header: 256 int32: magic, version, token count. A
    damaged shard is one DataError: delete it and run again (it is downloaded again)."""
    again = "delete it and run again to download it anew"
    header = np.fromfile(path, dtype="<i4", count=256)
    if len(header) < 256:
        raise DataError(
            f"{path}: {os.path.getsize(path)} bytes, shorter than the 1024-byte shard header; "
            + again
        )
    if header[0] != SHARD_MAGIC:
        raise DataError(
            f"{path}: magic number {header[0]}, expected {SHARD_MAGIC}; not a GPT-2 token shard "
            f"(damaged?): {again}"
        )
    if header[1] != SHARD_VERSION:
        raise DataError(f"{path}: version {header[1]}, expected {SHARD_VERSION}; {again}")
    n = int(header[2])
    size = os.path.getsize(path)
    if size != 1024 + 2 * n:
        raise DataError(
            f"{path}: header says {n} tokens ({1024 + 2 * n} bytes) but the file has {size} bytes; "
            + again
        )
    return np.fromfile(path, dtype="<u2", offset=1024).astype(np.uint16, copy=False)


# ----------------------------------------------------------------------------- prepare


def _tmp(path):
    return path.with_name(f"{path.name}.tmp{os.getpid()}")  # per process: ranks may prepare at once


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
    """Whether prepare() would return at once: the folder is finished and its source unchanged
    (DDP ranks other than 0 wait on this while rank 0 prepares)."""
    folder = corpus_folder(dataset, tokenizer, data_dir)
    if not (folder / "meta.json").exists():
        return False
    key = source_key(dataset)
    return key is None or load_meta(folder).get("source_key") == key


def prepare(dataset: str, tokenizer: str, data_dir="data") -> Path:
    """Tokenize `dataset` once into data_dir/<name>-<tokenizer>/ and return that folder."""
    folder = corpus_folder(dataset, tokenizer, data_dir)
    key = source_key(dataset)  # taken before reading: an edit made meanwhile shows up next time
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
                f"{folder} was prepared before content keys were recorded, so {dataset} may "
                "have changed since; preparing it again",
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
    """The folder a corpus is prepared into, data_dir/<name>-<tokenizer>; refuses unknown names."""
    if tokenizer not in TOKENIZERS:
        raise DataError(f"--tokenizer={tokenizer} is not one of {', '.join(TOKENIZERS)}")
    kind, _, arg = dataset.partition(":")
    if dataset in ("stdlib", "shakespeare"):
        name = dataset
    elif kind == "text" and arg:
        digest = hashlib.md5(str(Path(arg).resolve()).encode()).hexdigest()
        name = f"text-{Path(arg).stem}-{digest[:8]}"
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
            f"--dataset={dataset} is generated batch by batch, not a text corpus prepared on disk, "
            "so it has no text loss (nor a general val loss for --mode=continual); an mqar model "
            "is scored by `python eval.py --mode=recall`"
        )
    else:
        raise DataError(f"--dataset={dataset} is not one of {DATASETS}")
    return Path(data_dir) / f"{name}-{tokenizer}"


def _corpus_splits(dataset, folder, tok):
    """(train chunks, val chunks): iterables of uint16 token arrays, read or downloaded."""
    kind, _, arg = dataset.partition(":")
    if kind == "fineweb":
        shards = _fineweb_shards(folder, int(arg or 1))
        print(f"preparing {folder}: {len(shards)} shards ...", flush=True)
        train = (read_fineweb_shard(p) for p in shards[1:])  # lazily: one 200 MB shard at a time
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
    """train.bin, val.bin, then meta.json (counts, bytes, unigram baseline, source key; returned),
    last: it marks a finished folder."""
    folder.mkdir(parents=True, exist_ok=True)
    # preparing again: the old meta.json must not vouch for the new .bin files
    (folder / "meta.json").unlink(missing_ok=True)
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
    p = (counts["train"] + 1) / (n_tok["train"] + tok.n_vocab)  # add-one-smoothed unigram of train
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
