"""GPT-2's weights into this project's GPT: `--init_from=gpt2` (train.py), `--ckpt=gpt2` (eval.py).

The file, top to bottom:
NAMES             the hub's four GPT-2 repositories, and is_gpt2: whether a --init_from / --ckpt
                  names one of them, a .safetensors file or a folder holding model.safetensors
load_checkpoint   plumbing.load_checkpoint, but for GPT-2's weights: the same dict (model,
                  model_config, config) that train.py writes, so every script takes them alike
download          a hub repository's model.safetensors and config.json, once, into the cache
                  folder (atomic: tmp + rename), with a progress line
read_safetensors  the format by hand: 8-byte little-endian header length n, n bytes of JSON
                  ({name: {dtype, shape, data_offsets}}), then the tensors' raw little-endian bytes
gpt2_state        either key layout -> this project's state dict and shape

GPT-2 exactly, as GPTConfig options (their defaults keep every other model as it was): learned
positions, biases, LayerNorm eps 1e-5 (today's), GELU with the tanh approximation (gelu=tanh),
tied embeddings; the 50,257-id vocabulary padded to 50,304 with zero rows whose logits are masked
(n_vocab: never sampled, never scored). HF's Conv1D stores its weight as (in, out), nn.Linear as
(out, in): those four matrices per block are transposed.
"""

import http.client
import json
import os
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import torch

from model import GPTConfig
from plumbing import ConfigError, alive
from plumbing import load_checkpoint as load_project_checkpoint

NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")  # 124M, 350M, 774M, 1558M parameters
FILES = ("config.json", "model.safetensors")  # config.json first: it is small
HUB = os.environ.get("ATTNLAB_HUB", "https://huggingface.co")  # <HUB>/<name>/resolve/main/<file>
CACHE = Path(os.environ.get("ATTNLAB_CACHE", Path.home() / ".cache" / "attnlab"))
MAX_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header (bytes)
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
BUFFERS = ("attn.bias", "attn.masked_bias")  # HF's causal-mask buffers: not weights
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def is_gpt2(path):
    """Whether --init_from / --ckpt names GPT-2's weights rather than a checkpoint of this project
    (a folder holding ckpt.pt stays a run folder)."""
    p = Path(path)
    if (str(path) in NAMES and not p.exists()) or p.suffix == ".safetensors":
        return True
    return p.is_dir() and (p / "model.safetensors").is_file() and not (p / "ckpt.pt").exists()


def load_checkpoint(path, device="cpu"):
    """-> {model, model_config, config}, as plumbing.load_checkpoint returns for a ckpt.pt: from a
    hub name (downloaded once), a model.safetensors, or a folder holding one (with config.json).
    GPT-2's tensors stay on the CPU: load_state_dict copies them to the model's device."""
    if not is_gpt2(path):
        return load_project_checkpoint(path, device)
    file = Path(path)
    if str(path) in NAMES and not file.exists():
        file = download(str(path)) / "model.safetensors"
    elif file.suffix != ".safetensors":
        file = file / "model.safetensors"
    if not file.is_file():
        raise ConfigError(f"no GPT-2 weights at {file}")
    t0 = time.time()
    state, shape = gpt2_state(read_safetensors(file), file)
    config = gpt2_config(shape, read_hub_config(file.parent / "config.json"), file)
    print(f"read {file} in {time.time() - t0:.1f} s: {shape['n_layer']} layers x {shape['n_embd']}")
    run = {k: v for k, v in asdict(config).items() if k != "vocab_size"}  # vocab: the tokenizer's
    # the corpus continual learning measures general ability on: every Python install has it
    run |= dict(tokenizer="gpt2", dataset="stdlib", data_dir="data", mode="gpt2", weights=str(file))
    return {"model": state, "model_config": asdict(config), "config": run}


# ------------------------------------------------------------------------------------------------
# download


def download(name):
    """The cache folder holding name's config.json and model.safetensors, each downloaded once."""
    folder = CACHE / name
    folder.mkdir(parents=True, exist_ok=True)
    for file in FILES:
        if not (folder / file).is_file():
            fetch(f"{HUB}/{name}/resolve/main/{file}", folder / file, name)
    return folder


def fetch(url, dest, name):
    """url -> dest through dest.part<pid> and a rename: a killed or failed download never leaves a
    file named dest (the next run starts it again). A progress line with MB and MB/s."""
    for stale in dest.parent.glob(f"{dest.name}.part*"):  # a killed run's: never complete
        pid = stale.suffix.removeprefix(".part")
        if not (pid.isdigit() and alive(int(pid))):  # a live writer's file is left alone
            stale.unlink(missing_ok=True)
    tmp = dest.with_name(f"{dest.name}.part{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            copy_with_progress(r, f, total, dest.name)
        if total and tmp.stat().st_size != total:
            raise OSError(f"{tmp.stat().st_size} of {total} bytes arrived")
        os.replace(tmp, dest)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, http.client.HTTPException)):  # URLError, IncompleteRead, ...
            raise ConfigError(
                f"could not download {url} ({str(e) or type(e).__name__}); with no network, put "
                f"{' and '.join(FILES)} from https://huggingface.co/{name} into {dest.parent}"
            ) from None
        raise


def copy_with_progress(src, dst, total, what):
    """Copy as the bytes arrive, printing `what: 12.0/548.1 MB, 34.5 MB/s` twice a second."""
    t0 = last = time.time()
    done = 0
    while chunk := src.read1(1 << 20):  # what has arrived, up to 1 MB
        dst.write(chunk)
        done += len(chunk)
        if time.time() - last > 0.5 or done == total:
            last = time.time()
            of = f"/{total / 1e6:.1f}" if total else ""
            rate = done / 1e6 / max(last - t0, 1e-9)
            print(f"\r{what}: {done / 1e6:.1f}{of} MB, {rate:.1f} MB/s", end="", file=sys.stderr)
    print(file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# safetensors, by hand


def read_safetensors(path):
    """{name: tensor} from a .safetensors file: header length (u64, little-endian), JSON header,
    raw bytes. A truncated file, an oversized or inconsistent header is one ConfigError."""
    size = path.stat().st_size

    def bad(why):
        return ConfigError(
            f"{path} is not a readable safetensors file ({why}); download it again, or pass a "
            "model.safetensors that GPT2LMHeadModel.save_pretrained wrote"
        )

    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER or 8 + n > size:
            raise bad(f"its header claims {n:,} bytes, but the file has {size:,}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise bad("its header is not JSON") from None
        if not isinstance(header, dict):
            raise bad("its header is not a JSON object")
        header.pop("__metadata__", None)
        entries = {name: check_entry(name, e, size - 8 - n, bad) for name, e in header.items()}
        tensors = {}
        for name, (dtype, shape, start, end) in entries.items():
            f.seek(8 + n + start)
            buf = bytearray(end - start)
            f.readinto(buf)
            if not buf:  # torch.frombuffer refuses an empty buffer
                tensors[name] = torch.zeros(shape, dtype=dtype)
                continue
            tensors[name] = torch.frombuffer(buf, dtype=dtype).reshape(shape)
    return tensors


def check_entry(name, e, data_bytes, bad):
    """One header entry -> (dtype, shape, start, end), or bad(why) when its dtype is unknown, its
    offsets fall outside the data or do not hold exactly its shape's bytes."""
    try:
        dtype = DTYPES[e["dtype"]]
        shape = [int(d) for d in e["shape"]]
        start, end = (int(o) for o in e["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise bad(
            f"entry {name!r} needs a dtype of {', '.join(DTYPES)}, a shape, 2 offsets"
        ) from None
    numel = 1
    for d in shape:
        numel *= d
    if min(shape, default=0) < 0 or not 0 <= start <= end <= data_bytes:
        raise bad(f"{name} points at bytes {start}..{end}, past the {data_bytes:,} bytes of data")
    if end - start != numel * dtype.itemsize:
        raise bad(f"{name} is {shape} {e['dtype']} but holds {end - start} bytes")
    return dtype, shape, start, end


# ------------------------------------------------------------------------------------------------
# GPT-2's keys -> this project's


def block_keys(i):
    """GPT-2's weight names of block i, the hub's layout (no transformer. prefix)."""
    parts = ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
    return [f"h.{i}.{p}.{w}" for p in parts for w in ("weight", "bias")]


def gpt2_state(tensors, path):
    """Either key layout (the hub's `h.0.attn.c_attn.weight`, or save_pretrained's `transformer.`
    prefix with lm_head tied or absent) -> (this project's state dict in float32, its shape:
    n_layer, n_embd, vocab, block). The wte rows are padded with zeros to a multiple of 64."""
    t = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    t = {k: v for k, v in t.items() if k.split(".", 2)[-1] not in BUFFERS}  # h.<i>.attn.bias
    lm_head = t.pop("lm_head.weight", None)
    n_layer = len({k.split(".")[1] for k in t if k.startswith("h.")})
    expected = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"]
    expected += [k for i in range(n_layer) for k in block_keys(i)]
    missing = [k for k in expected if k not in t]
    extra = sorted(set(t) - set(expected))
    if missing or extra or t["wte.weight"].dim() != 2:
        what = f"no {missing[0]}" if missing else f"an unknown {extra[0]}" if extra else ""
        what = what or "a wte.weight that is not a matrix"
        raise ConfigError(
            f"{path} does not hold GPT-2's weights ({what}); pass the model.safetensors of a "
            "GPT2LMHeadModel (the hub's gpt2, gpt2-medium, gpt2-large, gpt2-xl)"
        )
    vocab, C = t["wte.weight"].shape
    shape = dict(n_layer=n_layer, n_embd=C, vocab=vocab, block=len(t["wpe.weight"]))
    sizes = {"wpe.weight": (shape["block"], C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(n_layer):
        w = dict(zip(block_keys(i)[::2], [(C,), (C, 3 * C), (C, C), (C,), (C, 4 * C), (4 * C, C)]))
        sizes |= w | {k[: -len("weight")] + "bias": (s[-1],) for k, s in w.items()}
    if lm_head is not None and not torch.equal(lm_head, t["wte.weight"]):
        sizes["lm_head.weight"] = "tied to wte.weight"  # this GPT ties them; refused below
    for k, s in sizes.items():
        if s == "tied to wte.weight" or tuple(t[k].shape) != s:
            got = "a different matrix" if k == "lm_head.weight" else f"shape {list(t[k].shape)}"
            raise ConfigError(
                f"{path}: {k} has {got}, but a GPT-2 of {n_layer} layers x {C} needs {s}; "
                "pass an unmodified GPT-2 model.safetensors"
            )
    return to_project(t, vocab), shape


def to_project(t, vocab):
    """GPT-2's tensors (no prefix) -> this project's names, float32, Conv1D weights transposed
    ((in, out) -> nn.Linear's (out, in)), wte padded with zero rows to a multiple of 64."""
    state = {}
    for k, v in t.items():
        v = v.float()
        if k.endswith(CONV1D):
            v = v.t()
        state[f"transformer.{k}"] = v.contiguous()
    wte = state["transformer.wte.weight"]
    padded = torch.zeros((vocab + 63) // 64 * 64, wte.size(1))
    padded[:vocab] = wte
    state["transformer.wte.weight"] = padded
    state["lm_head.weight"] = padded  # tied
    return state


def read_hub_config(path):
    """config.json beside the weights ({} without one): n_head, and the sizes it must agree on."""
    if not path.is_file():
        return {}
    try:
        hub = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{path} is not JSON; delete it (n_head is then n_embd / 64)") from None
    if not isinstance(hub, dict):
        raise ConfigError(f"{path} is not a JSON object; delete it (n_head is then n_embd / 64)")
    return hub


def gpt2_config(shape, hub, path):
    """The GPTConfig of GPT-2's weights: the sizes from the shapes, n_head from config.json (else
    n_embd / 64, every released size); config.json contradicting the shapes is refused."""
    for key, ours in (("n_layer", "n_layer"), ("n_embd", "n_embd"), ("vocab_size", "vocab")):
        if key in hub and hub[key] != shape[ours]:
            raise ConfigError(
                f"{path.parent / 'config.json'} says {key}={hub[key]}, but {path.name} holds "
                f"{shape[ours]}; the two files are of different models: download both again"
            )
    if hub.get("n_positions", shape["block"]) != shape["block"]:
        raise ConfigError(
            f"{path.parent / 'config.json'} says n_positions={hub['n_positions']}, but "
            f"{path.name} has {shape['block']} positions; download both files again"
        )
    n_head = hub.get("n_head", max(1, shape["n_embd"] // 64))
    if not isinstance(n_head, int) or n_head < 1 or shape["n_embd"] % n_head:
        raise ConfigError(
            f"{path.parent / 'config.json'} says n_head={n_head}, which does not divide "
            f"n_embd={shape['n_embd']}; fix or delete it"
        )
    return GPTConfig(
        vocab_size=(shape["vocab"] + 63) // 64 * 64,
        n_vocab=shape["vocab"],
        block_size=shape["block"],
        n_layer=shape["n_layer"],
        n_head=n_head,
        n_embd=shape["n_embd"],
        bias=True,
        pos="learned",
        gelu="tanh",
    )
