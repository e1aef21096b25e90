"""GPT-2's weights, offline: a safetensors writer of our own writes small GPT-2 files with random
weights in both key layouts; the loaded GPT's logits match a GPT-2 forward written here from the
architecture; the download runs against http.server on 127.0.0.1; hostile files are one line."""

import functools
import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import one_line_error

import gpt2
from model import GPT, GPTConfig
from plumbing import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DT = {torch.float32: "F32", torch.float16: "F16"}


# ------------------------------------------------------------------------------------------------
# a GPT-2 file, written and run by hand


def write_safetensors(path, tensors):
    """The format: u64 little-endian header length, JSON header, raw little-endian bytes."""
    header = {}
    offset = 0
    blobs = []
    for name, t in tensors.items():
        raw = t.contiguous().numpy().tobytes()
        header[name] = {
            "dtype": DT[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the library writes it
    Path(path).write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def gpt2_tensors(n_layer=2, n_embd=32, vocab=50, block=16, seed=0, layout="hub"):
    """Random GPT-2 weights under GPT-2's names: Conv1D weights (in, out), the hub's mask buffers;
    layout "pretrained" (save_pretrained): transformer. prefix and a tied lm_head, "headless": no
    lm_head."""
    g = torch.Generator().manual_seed(seed)
    C = n_embd

    def r(*shape, std=0.2):
        return torch.randn(*shape, generator=g) * std

    t = {"wte.weight": r(vocab, C), "wpe.weight": r(block, C)}
    for i in range(n_layer):
        h = f"h.{i}."
        t |= {h + "ln_1.weight": 1 + r(C), h + "ln_1.bias": r(C)}
        t |= {h + "attn.c_attn.weight": r(C, 3 * C), h + "attn.c_attn.bias": r(3 * C)}
        t |= {h + "attn.c_proj.weight": r(C, C), h + "attn.c_proj.bias": r(C)}
        t |= {h + "ln_2.weight": 1 + r(C), h + "ln_2.bias": r(C)}
        t |= {h + "mlp.c_fc.weight": r(C, 4 * C), h + "mlp.c_fc.bias": r(4 * C)}
        t |= {h + "mlp.c_proj.weight": r(4 * C, C), h + "mlp.c_proj.bias": r(C)}
        if layout == "hub":  # the causal mask and -1e4 that old transformers saved as buffers
            t[h + "attn.bias"] = torch.tril(torch.ones(block, block)).view(1, 1, block, block)
            t[h + "attn.masked_bias"] = torch.tensor(-1e4)
    t |= {"ln_f.weight": 1 + r(C), "ln_f.bias": r(C)}
    if layout == "hub":
        return t
    t = {f"transformer.{k}": v for k, v in t.items()}
    if layout == "pretrained":
        t["lm_head.weight"] = t["transformer.wte.weight"].clone()
    return t


def gpt2_file(folder, n_head=None, **kw):
    """folder/model.safetensors (and config.json with n_head, when given) -> its path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors", gpt2_tensors(**kw))
    if n_head:
        (folder / "config.json").write_text(json.dumps({"n_head": n_head, "n_layer": 2}))
    return folder / "model.safetensors"


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gpt2_forward(t, idx, n_head):
    """GPT-2 from its architecture, on GPT-2's own tensors (Conv1D: x @ W + b), float64, heads and
    query rows in loops: -> logits (T, vocab) of one sequence idx (T,)."""
    t = {k.removeprefix("transformer."): v.double() for k, v in t.items()}
    T = len(idx)
    x = t["wte.weight"][idx] + t["wpe.weight"][:T]  # (T, C)
    C = x.size(1)
    d = C // n_head
    n_layer = len({k.split(".")[1] for k in t if k.startswith("h.")})
    for i in range(n_layer):
        p = {k.removeprefix(f"h.{i}."): v for k, v in t.items() if k.startswith(f"h.{i}.")}
        h = layer_norm(x, p["ln_1.weight"], p["ln_1.bias"])
        q, k, v = (h @ p["attn.c_attn.weight"] + p["attn.c_attn.bias"]).split(C, dim=1)
        y = torch.zeros(T, C, dtype=x.dtype)
        for head in range(n_head):
            s = slice(head * d, (head + 1) * d)
            for row in range(T):
                scores = k[: row + 1, s] @ q[row, s] / math.sqrt(d)  # keys 0..row only
                y[row, s] = torch.softmax(scores, 0) @ v[: row + 1, s]
        x = x + y @ p["attn.c_proj.weight"] + p["attn.c_proj.bias"]
        h = layer_norm(x, p["ln_2.weight"], p["ln_2.bias"])
        m = gelu_tanh(h @ p["mlp.c_fc.weight"] + p["mlp.c_fc.bias"])
        x = x + m @ p["mlp.c_proj.weight"] + p["mlp.c_proj.bias"]
    return layer_norm(x, t["ln_f.weight"], t["ln_f.bias"]) @ t["wte.weight"].T


def loaded(path):
    ckpt = gpt2.load_checkpoint(path)
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_weights(ckpt["model"], path)
    return model.eval(), ckpt


# ------------------------------------------------------------------------------------------------
# the model


@pytest.mark.parametrize("layout", ["hub", "pretrained", "headless"])
def test_loaded_gpt2_matches_an_independent_forward(tmp_path, layout):
    """Both key layouts (lm_head tied or absent), n_head from config.json (4, not 32 / 64)."""
    path = gpt2_file(tmp_path / "w", n_head=4, layout=layout)
    model, ckpt = loaded(tmp_path / "w")  # the folder: model.safetensors + config.json
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size) == (2, 4, 32, 16)
    assert (c.vocab_size, c.n_vocab, c.gelu, c.pos, c.bias) == (64, 50, "tanh", "learned", True)
    idx = torch.randint(0, 50, (16,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(idx[None])[0][0]
    want = gpt2_forward(gpt2_tensors(layout=layout), idx, n_head=4)
    assert (logits[:, :50].double() - want).abs().max() < 1e-5
    assert (logits[:, 50:] == torch.finfo(torch.float32).min).all()  # the padding: masked
    assert ckpt["config"]["weights"] == str(path)


def test_n_head_is_n_embd_over_64_without_config_json(tmp_path):
    gpt2_file(tmp_path, n_embd=128)
    model, _ = loaded(tmp_path / "model.safetensors")
    assert model.config.n_head == 2
    idx = torch.arange(8)
    with torch.no_grad():
        logits = model(idx[None])[0][0, :, :50].double()
    assert (logits - gpt2_forward(gpt2_tensors(n_embd=128), idx, n_head=2)).abs().max() < 1e-5


def test_padded_ids_are_never_sampled_and_never_scored(tmp_path):
    gpt2_file(tmp_path)
    model, _ = loaded(tmp_path)
    torch.manual_seed(0)
    out = model.generate(torch.zeros(64, 1, dtype=torch.long), 8, temperature=50.0)
    assert out.max() < 50  # 512 draws nearly uniform over 64 ids, none of the 14 padded
    x = torch.randint(0, 50, (2, 9))
    logits, loss = model(x[:, :-1], x[:, 1:])
    scored = F.cross_entropy(logits[..., :50].reshape(-1, 50), x[:, 1:].reshape(-1))
    assert torch.allclose(loss, scored)  # the padding adds nothing to the softmax's sum
    loss.backward()
    assert model.transformer.wte.weight.grad[50:].abs().max() == 0  # and learns nothing


def test_defaults_keep_todays_model():
    """gelu=none is the exact GELU and n_vocab=0 masks nothing: today's models are unchanged."""
    c = GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16)
    assert (c.gelu, c.n_vocab) == ("none", 0)
    torch.manual_seed(0)
    model = GPT(c)
    x = torch.randn(2, 8, 16)
    assert torch.equal(model.logits(x), model.lm_head(x))
    h = model.transformer.h[0].mlp
    assert torch.equal(h(x), h.c_proj(F.gelu(h.c_fc(x))))


def test_a_run_config_masks_only_the_tokenizers_own_padding():
    from model import model_config

    run = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, n_vocab=50257)
    assert model_config(run, 50257).vocab_size == 50304
    with pytest.raises(ConfigError, match="--n_vocab=50257 is not the tokenizer's 256 ids"):
        model_config(run, 256)


def test_a_smaller_block_size_crops_learned_positions(tmp_path):
    ckpt = gpt2.load_checkpoint(gpt2_file(tmp_path))
    model = GPT(GPTConfig(**{**ckpt["model_config"], "block_size": 8}))
    model.load_weights(ckpt["model"], "gpt2")
    assert torch.equal(model.transformer.wpe.weight, ckpt["model"]["transformer.wpe.weight"][:8])


# ------------------------------------------------------------------------------------------------
# the download


class Hub(http.server.SimpleHTTPRequestHandler):
    """Serves `directory` and counts the GETs of each path; `cut` sends half of model.safetensors
    under its full Content-Length and closes; `slow` sends it in pieces, 0.2 s apart."""

    gets = None
    mode = "ok"

    def do_GET(self):
        self.gets[self.path] = self.gets.get(self.path, 0) + 1
        if self.mode == "ok" or not self.path.endswith(".safetensors"):
            return super().do_GET()
        body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.mode == "cut":
            self.wfile.write(body[: len(body) // 2])
            return
        for i in range(0, len(body), 4096):
            self.wfile.write(body[i : i + 4096])
            time.sleep(0.2)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(tmp_path):
    """A hub on 127.0.0.1 serving gpt2/resolve/main/{config.json, model.safetensors} -> (its URL,
    the handler class: gets, mode)."""
    files = tmp_path / "hub" / "gpt2" / "resolve" / "main"
    gpt2_file(files, n_head=4)
    handler = type("H", (Hub,), {"gets": {}})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(tmp_path / "hub"))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()


def test_download_once_into_the_cache(tmp_path, hub, monkeypatch, capsys):
    url, handler = hub
    monkeypatch.setattr(gpt2, "HUB", url)
    monkeypatch.setattr(gpt2, "CACHE", tmp_path / "cache")
    model, _ = loaded("gpt2")
    assert model.config.n_head == 4
    progress = capsys.readouterr().err
    assert "model.safetensors: " in progress and " MB/s" in progress
    loaded("gpt2")  # from the cache
    assert handler.gets == {
        "/gpt2/resolve/main/config.json": 1,
        "/gpt2/resolve/main/model.safetensors": 1,
    }
    assert sorted(p.name for p in (tmp_path / "cache" / "gpt2").iterdir()) == sorted(gpt2.FILES)


def test_a_cut_download_leaves_no_file(tmp_path, hub, monkeypatch):
    url, handler = hub
    handler.mode = "cut"
    monkeypatch.setattr(gpt2, "HUB", url)
    monkeypatch.setattr(gpt2, "CACHE", tmp_path / "cache")
    with pytest.raises(ConfigError, match="could not download .* into .*cache/gpt2"):
        gpt2.download("gpt2")
    assert sorted(p.name for p in (tmp_path / "cache" / "gpt2").iterdir()) == ["config.json"]


def test_a_killed_download_leaves_nothing_complete_and_the_next_one_finishes(tmp_path, hub):
    url, handler = hub
    handler.mode = "slow"
    env = {**os.environ, "ATTNLAB_HUB": url, "ATTNLAB_CACHE": str(tmp_path / "cache")}
    code = "import gpt2; gpt2.download('gpt2')"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    folder = tmp_path / "cache" / "gpt2"
    deadline = time.time() + 60
    part = []
    while not (part and part[0].stat().st_size) and time.time() < deadline:
        time.sleep(0.05)
        part = list(folder.glob("model.safetensors.part*"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert part[0].exists()  # the dead process's bytes, never renamed
    assert not (folder / "model.safetensors").exists()
    handler.mode = "ok"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
    assert sorted(p.name for p in folder.iterdir()) == sorted(gpt2.FILES)  # stale part removed


def test_offline_names_the_folder_in_one_line(tmp_path):
    env = {"ATTNLAB_HUB": "http://127.0.0.1:9", "ATTNLAB_CACHE": str(tmp_path)}  # nothing listens
    proc = run_eval(["--ckpt=gpt2-medium", "--mode=sample"], tmp_path, env)
    one_line_error(proc, "could not download", str(tmp_path / "gpt2-medium"), "model.safetensors")


# ------------------------------------------------------------------------------------------------
# hostile files: one line, exit 2


def run_eval(args, cwd, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def truncated(path):
    path.write_bytes(path.read_bytes()[:-100])


def not_gpt2(path):
    write_safetensors(path, {"encoder.weight": torch.zeros(4, 4)})


def contradicting(path):
    (path.parent / "config.json").write_text(json.dumps({"n_layer": 3, "n_head": 4}))


def past_the_end(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["wte.weight"]["data_offsets"][1] += 1 << 20
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])


def wrong_size(path):
    """A header whose shape disagrees with its offsets: an inconsistent file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["wpe.weight"]["shape"] = [8, 32]
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])


def huge_header(path):
    raw = path.read_bytes()
    path.write_bytes((1 << 40).to_bytes(8, "little") + raw[8:])


@pytest.mark.parametrize(
    "damage, needle",
    [
        (truncated, "is not a readable safetensors file"),
        (not_gpt2, "does not hold GPT-2's weights (no wte.weight)"),
        (contradicting, "says n_layer=3, but model.safetensors holds 2"),
        (past_the_end, "wte.weight points at bytes"),
        (huge_header, "its header claims 1,099,511,627,776 bytes"),
        (wrong_size, "wpe.weight is [8, 32] F32 but holds 2048 bytes"),
    ],
)
def test_hostile_files_end_in_one_line(tmp_path, damage, needle):
    path = gpt2_file(tmp_path / "w", n_head=4)
    damage(path)
    one_line_error(run_eval([f"--ckpt={tmp_path / 'w'}", "--mode=sample"], tmp_path), needle)


# ------------------------------------------------------------------------------------------------
# train.py and eval.py on GPT-2's weights (the GPT-2 vocabulary: the tokenizer's ranks)


@pytest.fixture(scope="module")
def gpt2_vocab_file(tmp_path_factory):
    """A GPT-2 file with the real vocabulary (50,257 x 32) and 64 positions, and a small corpus."""
    import argparse

    tmp = tmp_path_factory.mktemp("gpt2")
    gpt2_file(tmp / "w", n_head=4, vocab=50257, block=64)
    (tmp / "corpus.txt").write_text(Path(argparse.__file__).read_text())
    return tmp


def train_gpt2(tmp, out, *extra):
    args = [str(ROOT / "train.py"), f"--init_from={tmp / 'w'}", f"--out_dir={out}"]
    args += [f"--dataset=text:{tmp / 'corpus.txt'}", f"--data_dir={tmp / 'data'}"]
    block = [] if any(a.startswith("--block_size") for a in extra) else ["--block_size=32"]
    args += ["--batch_size=2", *block, "--schedule=constant", "--lr=1e-4"]
    args += ["--warmup_iters=0", "--eval_interval=2", "--eval_iters=1", "--sample_tokens=4"]
    proc = subprocess.run(
        [sys.executable, *args, *extra], cwd=tmp, capture_output=True, text=True, timeout=300
    )
    return proc


@pytest.mark.requires_gpt2
def test_init_from_a_gpt2_file_finetunes_resumes_and_loads_again(gpt2_vocab_file, tmp_path):
    """--init_from a GPT-2 folder: GPT-2's tokenizer, positions cropped to --block_size=32; the
    checkpoint holds the GPT-2 options and eval.py loads it; --resume continues it bit-exactly."""
    tmp = gpt2_vocab_file
    straight = train_gpt2(tmp, tmp_path / "a", "--max_iters=4")
    assert straight.returncode == 0, straight.stderr
    assert "sample:" in straight.stdout
    ckpt = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)
    c = ckpt["model_config"]
    assert (c["gelu"], c["n_vocab"], c["block_size"], c["n_head"]) == ("tanh", 50257, 32, 4)
    assert ckpt["config"]["tokenizer"] == "gpt2"
    half = train_gpt2(tmp, tmp_path / "b", "--max_iters=2")
    assert half.returncode == 0, half.stderr
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"--out_dir={tmp_path / 'b'}", "--resume"]
        + ["--max_iters=4", "--sample_tokens=0"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    again = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(again[k], v) for k, v in ckpt["model"].items())
    sample = run_eval([f"--ckpt={tmp_path / 'b'}", "--mode=sample", "--max_new_tokens=4"], tmp)
    assert sample.returncode == 0, sample.stderr


@pytest.mark.requires_gpt2
def test_init_from_gpt2_refuses_byte_tokens_and_longer_blocks(gpt2_vocab_file, tmp_path):
    tmp = gpt2_vocab_file
    one_line_error(
        train_gpt2(tmp, tmp_path / "a", "--tokenizer=bytes"),
        "holds a model with tokenizer=gpt2, but this run asks for --tokenizer=bytes",
    )
    one_line_error(
        train_gpt2(tmp, tmp_path / "b", "--block_size=128"),
        "block_size=64 (its learned positions fix it), but this run asks for --block_size=128",
    )


@pytest.mark.requires_gpt2
def test_eval_modes_on_a_gpt2_file(gpt2_vocab_file, tmp_path):
    """loss (bits per byte of a GPT-2-token corpus), maps of a repeated random sequence,
    outliers: each runs on GPT-2's weights."""
    w = f"--ckpt={gpt2_vocab_file / 'w'}"
    corpus = [f"--dataset=text:{gpt2_vocab_file / 'corpus.txt'}", "--eval_len=32"]
    corpus += [f"--data_dir={gpt2_vocab_file / 'data'}"]
    loss = run_eval([w, "--mode=loss", "--max_tokens=256", *corpus], tmp_path)
    assert loss.returncode == 0 and "bits/byte" in loss.stdout, loss.stderr
    png = tmp_path / "maps.png"
    maps = run_eval([w, "--mode=maps", "--prompt=repeat:8", f"--out={png}"], tmp_path)
    assert maps.returncode == 0 and png.exists(), maps.stderr
    outliers = run_eval([w, "--mode=outliers", "--batches=1", "--batch_size=1", *corpus], tmp_path)
    assert outliers.returncode == 0 and "top attention logit" in outliers.stdout, outliers.stderr


def test_repeat_prompt_is_a_random_sequence_twice():
    import data
    import eval as evaluate

    tok = data.get_tokenizer("bytes")
    ids = evaluate.prompt_ids("repeat:12", tok, seed=3)
    assert len(ids) == 24 and ids[:12] == ids[12:] and len(set(ids)) > 6
    assert ids == evaluate.prompt_ids("repeat:12", tok, seed=3)  # seeded
    with pytest.raises(ConfigError, match="repeat: takes a count"):
        evaluate.prompt_ids("repeat:x", tok, seed=3)
