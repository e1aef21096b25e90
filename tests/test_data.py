"""data.py: tokenizers, prepare() on small corpora written here, shard reading, batching
(load_dataset). No network: the GPT-2 tests read the ranks from TIKTOKEN_CACHE_DIR (conftest.py)
and are skipped when they are not there."""

import json
import math
import os

import numpy as np
import pytest
import torch

import data
from data import DataError

PARAGRAPH = (
    "The quick brown fox jumps over the lazy dog. A small model learns the shape of words before "
    "their meaning: first the spaces, then the common endings, then whole words that come back "
    "often. "
)


def write_corpus(folder):
    """Three small English-ish files (one in a subfolder, one hidden that must be skipped)."""
    texts = [PARAGRAPH * 20 + f"Chapter {i}: café, naïve, 東京.\n" for i in range(3)]
    (folder / "sub").mkdir(parents=True)
    for path, text in zip(["a.txt", "b.txt", "sub/c.txt"], texts):
        (folder / path).write_text(text, encoding="utf-8")
    (folder / ".hidden").write_text("not part of the corpus")
    return texts  # sorted file order: a.txt, b.txt, sub/c.txt


def split_on(ids, eot):
    docs = []
    cur = []
    for i in ids:
        if i == eot:
            docs.append(cur)
            cur = []
        else:
            cur.append(i)
    return docs + [cur]


# ----------------------------------------------------------------------------- tokenizers


def test_bytes_tokenizer_round_trips_non_ascii():
    tok = data.get_tokenizer("bytes")
    assert (tok.n_vocab, tok.eot) == (257, 256)
    text = "naïve café — 東京 🙂"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < 256
    assert tok.decode(ids + [tok.eot]) == text  # eot is dropped
    assert tok.encode_batch([text, "a"]) == [ids, [97]]


@pytest.mark.requires_gpt2
def test_gpt2_tokenizer_matches_gpt2_ids():
    tok = data.get_tokenizer("gpt2")
    assert (tok.n_vocab, tok.eot) == (50257, 50256)
    assert tok.encode("hello world") == [31373, 995]
    assert tok.encode_batch(["hello world", "hello"]) == [[31373, 995], [31373]]
    assert tok.decode(np.array([31373, 995], dtype=np.uint16)) == "hello world"


def test_unknown_tokenizer_names_the_choices(tmp_path):
    with pytest.raises(DataError, match="gpt2, bytes"):
        data.get_tokenizer("bpe")
    with pytest.raises(DataError, match="gpt2, bytes"):
        data.prepare("stdlib", "bpe", data_dir=tmp_path)


# ----------------------------------------------------------------------------- prepare on text


@pytest.mark.parametrize(
    "tokenizer", ["bytes", pytest.param("gpt2", marks=pytest.mark.requires_gpt2)]
)
def test_prepare_text_folder(tmp_path, tokenizer):
    texts = write_corpus(tmp_path / "corpus")
    folder = data.prepare(f"text:{tmp_path / 'corpus'}", tokenizer, data_dir=tmp_path / "data")
    assert folder.parent == tmp_path / "data" and folder.name.startswith("text-corpus-")
    assert folder.name.endswith(f"-{tokenizer}")
    meta = data.load_meta(folder)
    train, val = data.load_split(folder, "train"), data.load_split(folder, "val")
    assert (meta["train_tokens"], meta["val_tokens"]) == (len(train), len(val))
    assert (folder / "train.bin").stat().st_size == 2 * len(train)
    assert abs(len(val) / (len(train) + len(val)) - 0.1) < 0.01  # positional 90/10 split

    tok = data.get_tokenizer(tokenizer)
    ids = np.concatenate([train, val]).tolist()
    # files joined by eot, nothing lost
    assert [tok.decode(d) for d in split_on(ids, tok.eot)] == texts
    assert meta["train_bytes"] + meta["val_bytes"] == sum(len(t.encode()) for t in texts)
    assert 0 < meta["unigram_bpb"] < 8 and math.isfinite(meta["unigram_bpb"])

    # a second call finds meta.json and writes nothing
    stamps = [(folder / f).stat().st_mtime_ns for f in ("train.bin", "val.bin", "meta.json")]
    assert (
        data.prepare(f"text:{tmp_path / 'corpus'}", tokenizer, data_dir=tmp_path / "data") == folder
    )
    assert stamps == [
        (folder / f).stat().st_mtime_ns for f in ("train.bin", "val.bin", "meta.json")
    ]


def test_unigram_bpb_matches_naive_formula(tmp_path):
    (tmp_path / "t.txt").write_text(PARAGRAPH * 10)
    folder = data.prepare(f"text:{tmp_path / 't.txt'}", "bytes", data_dir=tmp_path / "data")
    train, val = (
        np.array(data.load_split(folder, "train")),
        np.array(data.load_split(folder, "val")),
    )
    counts = np.bincount(train, minlength=257) + 1  # add-one smoothing over the 257 ids
    bits = -sum(math.log2(counts[t] / counts.sum()) for t in val)
    assert data.load_meta(folder)["unigram_bpb"] == pytest.approx(bits / len(val), abs=1e-4)


def test_tokenizer_mismatch_is_one_line_with_the_fix(tmp_path):
    (tmp_path / "t.txt").write_text(PARAGRAPH * 5)
    folder = data.prepare(f"text:{tmp_path / 't.txt'}", "bytes", data_dir=tmp_path / "data")
    meta = data.load_meta(folder)
    (folder / "meta.json").write_text(json.dumps({**meta, "tokenizer": "gpt2"}))
    with pytest.raises(
        DataError, match="prepared with tokenizer 'gpt2' but this run uses 'bytes'"
    ) as e:
        data.prepare(f"text:{tmp_path / 't.txt'}", "bytes", data_dir=tmp_path / "data")
    assert "--tokenizer=gpt2" in str(e.value) and "\n" not in str(e.value)


def test_missing_and_empty_text(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        data.prepare(f"text:{tmp_path / 'nope.txt'}", "bytes", data_dir=tmp_path / "data")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        data.prepare(f"text:{tmp_path / 'empty.txt'}", "bytes", data_dir=tmp_path / "data")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="is empty"):
        data.prepare(f"text:{tmp_path / 'empty_dir'}", "bytes", data_dir=tmp_path / "data")
    (tmp_path / "one.txt").write_text("x")  # one token: nothing left for train after the 90/10 cut
    with pytest.raises(DataError, match="train split is empty"):
        data.prepare(f"text:{tmp_path / 'one.txt'}", "bytes", data_dir=tmp_path / "data")
    assert not list((tmp_path / "data").glob("*/meta.json"))  # no failed prepare looks finished


def test_unknown_dataset_names_the_choices(tmp_path):
    with pytest.raises(DataError, match="stdlib, text:PATH, shakespeare, fineweb"):
        data.prepare("wikipedia", "bytes", data_dir=tmp_path)
    with pytest.raises(DataError, match="gpt2"):
        data.prepare("fineweb", "bytes", data_dir=tmp_path)
    with pytest.raises(DataError, match="fineweb:N"):
        data.prepare("fineweb:0", "gpt2", data_dir=tmp_path)


# -------------------------------------------------------------------- text corpora keyed by content


def prepared_text(folder):
    """The bytes tokenizer's tokens of a prepared folder, train then val, as text."""
    tokens = np.concatenate([data.load_split(folder, "train"), data.load_split(folder, "val")])
    return data.get_tokenizer("bytes").decode(tokens)


def stamps(folder):
    return [(folder / f).stat().st_mtime_ns for f in ("train.bin", "val.bin", "meta.json")]


def test_editing_a_text_file_prepares_it_again(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text(PARAGRAPH * 5)
    folder = data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data")
    key = data.load_meta(folder)["source_key"]
    capsys.readouterr()

    before = stamps(folder)
    # unchanged: nothing written
    assert data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data") == folder
    assert stamps(folder) == before and capsys.readouterr().out == ""

    edited = PARAGRAPH * 4 + "An edited last line.\n"
    path.write_text(edited)
    assert data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data") == folder
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"text:{path} changed since {folder} was prepared; preparing it again"
    assert out[-1].startswith(f"prepared {folder}: ")
    assert prepared_text(folder) == edited  # the new text's tokens, not the old ones
    assert data.load_meta(folder)["source_key"] != key
    # no temp files left
    assert sorted(p.name for p in folder.iterdir()) == [
        "meta.json",
        "train.bin",
        "val.bin",
    ]


def test_a_same_size_edit_is_seen_by_its_mtime(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text("a" * 500)
    folder = data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data")
    st = path.stat()
    path.write_text("b" * 500)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # one nanosecond later, same size
    data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data")
    assert "changed since" in capsys.readouterr().out and prepared_text(folder) == "b" * 500
    before = stamps(folder)
    # the new key is recorded: nothing to do
    data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data")
    assert stamps(folder) == before and capsys.readouterr().out == ""


def test_a_folder_is_keyed_by_the_files_it_reads(tmp_path, capsys):
    texts = write_corpus(tmp_path / "corpus")
    dataset = f"text:{tmp_path / 'corpus'}"
    folder = data.prepare(dataset, "bytes", data_dir=tmp_path / "data")
    before = stamps(folder)
    (tmp_path / "corpus" / ".hidden").write_text(
        "edited, but hidden files are not part of the corpus"
    )
    (tmp_path / "corpus" / ".git").mkdir()
    (tmp_path / "corpus" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    capsys.readouterr()
    data.prepare(dataset, "bytes", data_dir=tmp_path / "data")
    assert stamps(folder) == before and capsys.readouterr().out == ""

    (tmp_path / "corpus" / "sub" / "d.txt").write_text("A fourth file.")  # sorted after sub/c.txt
    data.prepare(dataset, "bytes", data_dir=tmp_path / "data")
    assert capsys.readouterr().out.startswith(f"{dataset} changed since {folder} was prepared")
    # decode drops the eot between files
    assert prepared_text(folder) == "".join(texts) + "A fourth file."


def test_a_folder_prepared_without_a_key_is_prepared_again_once(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text(PARAGRAPH * 5)
    folder = data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data")
    meta = data.load_meta(folder)
    del meta["source_key"]  # as written before content keys were recorded
    (folder / "meta.json").write_text(json.dumps(meta))
    capsys.readouterr()
    data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data")
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{folder} was prepared before content keys were recorded, so text:{path} may have "
        "changed since; preparing it again"
    )
    assert data.load_meta(folder)["source_key"] == data.source_key(f"text:{path}")
    before = stamps(folder)
    data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data")
    assert stamps(folder) == before and capsys.readouterr().out == ""


def test_a_failed_prepare_again_leaves_no_finished_folder(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(PARAGRAPH * 5)
    folder = data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data")
    path.write_text("x")  # one token: the train split is empty
    with pytest.raises(DataError, match="train split is empty"):
        data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data")
    # the old meta.json no longer vouches for the .bin files
    assert not (folder / "meta.json").exists()


def test_a_text_source_that_is_gone_keeps_its_prepared_folder(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text(PARAGRAPH * 5)
    folder = data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data")
    before = stamps(folder)
    path.unlink()
    assert data.source_key(f"text:{path}") is None and data.source_key("stdlib") is None
    assert data.prepare(f"text:{path}", "bytes", data_dir=tmp_path / "data") == folder
    assert stamps(folder) == before


# ------------------------------------------------------------------------- bytes that are not UTF-8


def test_bytes_that_are_not_utf8_are_counted_in_one_warning(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(
        PARAGRAPH.encode() + b"caf\xe9 \xff\xfe " + "東".encode()[:2] + b" end"
    )
    # a real U+FFFD is valid
    (corpus / "b.txt").write_bytes((PARAGRAPH + "valid: café 東京 \ufffd").encode())
    (corpus / "c.txt").write_bytes(PARAGRAPH.encode() + b"\x80\x80\x80")
    # by hand: a.txt \xe9, \xff, \xfe and the two bytes of a cut-off 東 (5); c.txt three
    # continuation bytes (3)
    folder = data.prepare(f"text:{corpus}", "bytes", data_dir=tmp_path / "data")
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert warnings == [
        f"warning: text:{corpus} has 8 bytes that are not UTF-8 (in 2 files); "
        "they were read as U+FFFD"
    ]
    expected = [
        (corpus / f).read_bytes().decode("utf-8", errors="replace")
        for f in ("a.txt", "b.txt", "c.txt")
    ]
    assert prepared_text(folder) == "".join(expected)

    (tmp_path / "one.txt").write_bytes(PARAGRAPH.encode() * 3 + b"\xc3")
    data.prepare(f"text:{tmp_path / 'one.txt'}", "bytes", data_dir=tmp_path / "data")
    assert (
        f"warning: text:{tmp_path / 'one.txt'} has 1 byte that is not UTF-8 (in 1 file); they were "
        "read as U+FFFD" in capsys.readouterr().out.splitlines()
    )


def test_utf8_text_gives_no_warning(tmp_path, capsys):
    write_corpus(tmp_path / "corpus")
    data.prepare(f"text:{tmp_path / 'corpus'}", "bytes", data_dir=tmp_path / "data")
    assert "warning" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- fineweb shards


def write_shard(path, tokens, magic=20240520, version=1, count=None):
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens) if count is None else count
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())


def test_read_fineweb_shard_round_trips_and_rejects_bad_files(tmp_path):
    tokens = np.arange(0, 50257, 97, dtype=np.uint16)
    write_shard(tmp_path / "ok.bin", tokens)
    out = data.read_fineweb_shard(tmp_path / "ok.bin")
    assert out.dtype == np.uint16 and np.array_equal(out, tokens)

    write_shard(tmp_path / "magic.bin", tokens, magic=12345)
    write_shard(tmp_path / "version.bin", tokens, version=2)
    write_shard(tmp_path / "short.bin", tokens, count=len(tokens) + 10)  # a truncated download
    (tmp_path / "tiny.bin").write_bytes(b"\0" * 100)
    for name, what in [
        ("magic", "magic"),
        ("version", "version"),
        ("short", "bytes"),
        ("tiny", "header"),
    ]:
        with pytest.raises(DataError, match=what) as e:
            data.read_fineweb_shard(tmp_path / f"{name}.bin")
        assert f"{name}.bin" in str(e.value) and "delete it and run again" in str(e.value)


@pytest.mark.requires_gpt2
def test_prepare_fineweb_uses_shards_already_in_the_folder(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("prepare tried to download a shard that was already there")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)
    tok = data.get_tokenizer("gpt2")
    folder = tmp_path / "data" / "fineweb2-gpt2"
    folder.mkdir(parents=True)
    shards = {
        name: np.array(tok.encode(PARAGRAPH * k), dtype=np.uint16)
        for name, k in [
            ("fineweb_val_000000.bin", 2),
            ("fineweb_train_000001.bin", 5),
            ("fineweb_train_000002.bin", 3),
        ]
    }
    for name, tokens in shards.items():
        write_shard(folder / name, tokens)

    assert data.prepare("fineweb:2", "gpt2", data_dir=tmp_path / "data") == folder
    train, val = data.load_split(folder, "train"), data.load_split(folder, "val")
    assert np.array_equal(val, shards["fineweb_val_000000.bin"])
    assert np.array_equal(
        train,
        np.concatenate([shards["fineweb_train_000001.bin"], shards["fineweb_train_000002.bin"]]),
    )
    meta = data.load_meta(folder)
    assert meta["val_bytes"] == len((PARAGRAPH * 2).encode()) and meta["train_bytes"] == len(
        (PARAGRAPH * 8).encode()
    )
    assert meta["n_vocab"] == 50257 and 0 < meta["unigram_bpb"] < 8
    assert "source_key" not in meta  # fixed downloads are not keyed by content


def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise data.urllib.error.URLError("offline")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)


@pytest.mark.requires_gpt2  # prepare loads the tokenizer before it looks for shards
def test_fineweb_download_without_network_fails_in_one_line(tmp_path, monkeypatch):
    offline(monkeypatch)
    with pytest.raises(DataError, match="fineweb_val_000000.bin.*by hand"):
        data.prepare("fineweb", "gpt2", data_dir=tmp_path / "data")
    assert not list((tmp_path / "data").rglob("*.bin"))


def test_shakespeare_download_without_network_fails_in_one_line(tmp_path, monkeypatch):
    offline(monkeypatch)
    with pytest.raises(DataError, match="tiny Shakespeare.*--dataset=text:PATH"):
        data.prepare("shakespeare", "bytes", data_dir=tmp_path / "data")
    assert not list((tmp_path / "data").rglob("*.bin")) and not list(
        (tmp_path / "data").rglob("*.txt")
    )


# ----------------------------------------------------------------------------- stdlib selection


def test_stdlib_files_skip_tests_and_split_stably():
    files = data.stdlib_files()
    assert files == sorted(files) and len(files) > 100 and "os.py" in files
    for rel in files:
        assert rel.endswith(".py") and not data.SKIP_DIRS & set(rel.split("/")), rel
    val = {f for f in files if data.is_val_file(f)}
    assert val == {f for f in data.stdlib_files() if data.is_val_file(f)}
    assert 0.05 < len(val) / len(files) < 0.15


# ----------------------------------------------------------------------------- batching


def test_get_batch_shapes_shift_and_determinism():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = data.get_batch(tokens, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    # arange: next token = this one + 1
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y, x + 1)
    x2, y2 = data.get_batch(tokens, 4, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_check_block_rejects_a_short_split(tmp_path):
    data.check_block(np.zeros(100, dtype=np.uint16), 64, "val", tmp_path)
    with pytest.raises(DataError, match="val.bin has 20 tokens.*--block_size"):
        data.check_block(np.zeros(20, dtype=np.uint16), 64, "val", tmp_path)


def test_load_dataset_gives_one_batch_interface_for_text_and_mqar(tmp_path):
    """Dataset.train / .val .batch(...) are get_batch on the prepared splits and MQAR.batch, bit for
    bit, rows and generator state included; meta, folder and task say which kind it is."""
    write_corpus(tmp_path / "corpus")
    ds = data.load_dataset(f"text:{tmp_path / 'corpus'}", "bytes", tmp_path / "data", 16)
    assert ds.tokenizer.name == "bytes" and ds.task is None
    assert ds.meta == data.load_meta(ds.folder) and ds.folder.parent == tmp_path / "data"
    for split in ("train", "val"):
        tokens = data.load_split(ds.folder, split)
        gen_a = torch.Generator().manual_seed(1)
        gen_b = torch.Generator().manual_seed(1)
        got = getattr(ds, split).batch(8, 16, gen_a, slice(2, 6))
        want = data.get_batch(tokens, 8, 16, gen_b, slice(2, 6))
        assert all(torch.equal(g, w) and g.dtype == torch.int64 for g, w in zip(got, want))
        assert torch.equal(gen_a.get_state(), gen_b.get_state())
    mqar = data.load_dataset("mqar:pairs=4,keys=16", "bytes", tmp_path / "unused", 32)
    assert mqar.train is mqar.val is mqar.task and mqar.meta is None and mqar.folder is None
    got = mqar.train.batch(8, 32, torch.Generator().manual_seed(2))
    want = data.MQAR(4, 16).batch(8, 32, torch.Generator().manual_seed(2))
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert not (tmp_path / "unused").exists()  # mqar writes nothing


def test_load_dataset_refuses_a_block_longer_than_a_split(tmp_path):
    write_corpus(tmp_path / "corpus")
    with pytest.raises(DataError, match=r"val.bin has \d+ tokens, fewer than one block of 5000"):
        data.load_dataset(f"text:{tmp_path / 'corpus'}", "bytes", tmp_path / "data", 5000)


# ----------------------------------------------------------------------------- damaged files


def cut(path):
    """A half-written copy: the first half of the bytes, minus one (odd: not even whole ids)."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2 - 1])


DAMAGE = {  # a prepared file, damaged as a cut copy, a full disk or a bad sector leaves it
    "train.bin cut": lambda f: cut(f / "train.bin"),
    "val.bin cut": lambda f: cut(f / "val.bin"),
    "train.bin gone": lambda f: (f / "train.bin").unlink(),
    "train.bin ids beyond the vocabulary": lambda f: (f / "train.bin").write_bytes(
        b"\xff" * (f / "train.bin").stat().st_size
    ),
    "meta.json cut": lambda f: cut(f / "meta.json"),
    "meta.json not an object": lambda f: (f / "meta.json").write_text("[]"),
    "meta.json without its counts": lambda f: (f / "meta.json").write_text(
        '{"tokenizer": "bytes"}'
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_prepared_folder_is_one_line_saying_how_to_prepare_it_again(tmp_path, damage):
    """Loading it (and drawing a batch) is one DataError naming the folder and the fix; the fix
    (delete meta.json, run again) prepares it anew."""
    write_corpus(tmp_path / "corpus")
    dataset = f"text:{tmp_path / 'corpus'}"
    folder = data.prepare(dataset, "bytes", data_dir=tmp_path / "data")
    DAMAGE[damage](folder)
    with pytest.raises(DataError) as e:
        ds = data.load_dataset(dataset, "bytes", tmp_path / "data", 16)
        ds.train.batch(8, 16, torch.Generator().manual_seed(0))
    assert f"delete {folder}/meta.json and run again" in str(e.value) and "\n" not in str(e.value)
    (folder / "meta.json").unlink(missing_ok=True)
    ds = data.load_dataset(dataset, "bytes", tmp_path / "data", 16)
    assert int(ds.train.batch(64, 16, torch.Generator().manual_seed(0))[0].max()) < 257


def test_get_batch_is_the_loop_of_slices_as_one_gather():
    """One fancy-index gather builds exactly nanoGPT's loop of 2·B slices, a rank's rows too."""

    def loop(tokens, B, T, gen, rows=None):
        ix = torch.randint(len(tokens) - T, (B,), generator=gen)
        ix = ix if rows is None else ix[rows]
        x = torch.stack([torch.from_numpy(tokens[i : i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(tokens[i + 1 : i + 1 + T].astype(np.int64)) for i in ix])
        return x, y

    tokens = np.random.default_rng(0).integers(0, 50257, 5000).astype(np.uint16)
    for rows in (None, slice(2, 6)):
        gen_a = torch.Generator().manual_seed(1)
        gen_b = torch.Generator().manual_seed(1)
        want = loop(tokens, 8, 64, gen_a, rows)
        got = data.get_batch(tokens, 8, 64, gen_b, rows)
        for g, w in zip(got, want):
            assert g.dtype == torch.int64 and g.is_contiguous() and torch.equal(g, w)
        assert torch.equal(gen_a.get_state(), gen_b.get_state())


@pytest.mark.parametrize("name", data.TOKENIZERS)
def test_n_vocab_is_each_tokenizers_own(name):
    """data.N_VOCAB (what bench.py reads, no ranks to load) is each tokenizer's n_vocab."""
    assert data.N_VOCAB[name] == data.get_tokenizer(name).n_vocab
