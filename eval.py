"""Evaluate a checkpoint: `python eval.py --ckpt=PATH [--mode=loss|sample|extrapolate] [--key=value ...]`.

loss         val loss, perplexity and bits per byte over non-overlapping windows of the split (default: the
             checkpoint's dataset, windows of its block_size, at most max_tokens tokens)
sample       text generated from --prompt (default: from the end-of-text token)
extrapolate  DAPE's length-extrapolation protocol for one or more checkpoints (--ckpt=A,B,...): at each of
             --lengths the whole window is fed and perplexity is scored on its last --tail (256) tokens, over
             --windows fixed val windows that end at the same places for every length (so every length scores
             the same text, with more or less context before it). Prints a table, writes extrapolation.json and
             extrapolation.png (redrawn from the json by plot_extrapolation) into the first run's folder or --out.
             No autograd graph is kept, only the tail's logits are computed, and DAPE runs --q_chunk query rows at
             a time, so memory stays small at 8K tokens.

Design choices: flags are parsed from EvalConfig exactly as train.py parses its Config; the model is rebuilt from
the GPTConfig stored in the checkpoint, so eval needs nothing from the run folder but ckpt.pt. Bits per byte use
the split's bytes-per-token ratio from meta.json, which makes byte and BPE runs comparable.
"""

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attention import ConfigError
from data import DataError, check_block, get_tokenizer, load_meta, load_split, prepare
from model import GPT, GPTConfig
from train import checkpoint_path, load_checkpoint, parse_flags, setup_device


@dataclass
class EvalConfig:
    ckpt: str = ""  # a ckpt.pt or a run folder; extrapolate takes several, comma-separated
    mode: str = "loss"
    # loss
    dataset: str = ""  # default: the checkpoint's
    data_dir: str = "data"
    split: str = "val"
    eval_len: int = 0  # window length; default the checkpoint's block_size
    max_tokens: int = 1 << 20
    batch_size: int = 8
    # sample
    prompt: str = ""
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 200
    num_samples: int = 1
    seed: int = 1337
    # extrapolate
    lengths: str = ""  # comma-separated; default: the first run's block_size × 1, 2, 4, ... 32, up to 8192
    windows: int = 8  # val windows per length, the same ones at every length
    tail: int = 256  # tokens scored at the end of each window
    q_chunk: int = 128  # DAPE query rows per chunk; 0: all at once
    out: str = ""  # folder for extrapolation.{json,png}; default: the first checkpoint's folder
    # system
    device: str = "auto"
    dtype: str = "auto"


CHOICES = dict(mode=("loss", "sample", "extrapolate"), split=("train", "val"), device=("auto", "cpu", "cuda", "mps"),
               dtype=("auto", "float32", "bfloat16", "float16"))


def load_model(path, device):
    """-> (GPT in eval mode on device, the run's training config as a dict)."""
    ckpt = load_checkpoint(path, device)
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt["config"]


@torch.no_grad()
def eval_loss(model, tokens, eval_len, batch_size, max_tokens, device, autocast):
    """Mean next-token loss over non-overlapping windows of eval_len tokens -> (loss, tokens scored)."""
    n_windows = max(1, min(len(tokens) - 1, max_tokens) // eval_len)
    total, count = 0.0, 0
    for start in range(0, n_windows, batch_size):
        rows = range(start, min(start + batch_size, n_windows))
        chunk = torch.stack([torch.from_numpy(tokens[w * eval_len: w * eval_len + eval_len + 1].astype("int64"))
                             for w in rows]).to(device)
        with autocast:
            _, loss = model(chunk[:, :-1], chunk[:, 1:])
        total, count = total + loss.item() * chunk[:, 1:].numel(), count + chunk[:, 1:].numel()
    return total / count, count


@torch.no_grad()
def tail_loss(model, tokens, n, ends, tail, device, autocast):
    """Mean loss on the last `tail` tokens of the windows of n + 1 tokens that end at `ends`, each fed whole."""
    total = 0.0
    for end in ends:
        chunk = torch.from_numpy(tokens[end - n - 1: end].astype(np.int64)).to(device)[None]  # (1, n + 1)
        with autocast:
            logits = model.lm_head(model.features(chunk[:, :-1])[:, -tail:])  # only the scored tail: no (n, vocab)
        total += F.cross_entropy(logits[0].float(), chunk[0, -tail:], reduction="sum").item()
    return total / (len(ends) * tail)


def plot_extrapolation(path):
    """extrapolation.png beside extrapolation.json: perplexity against evaluation length, one line per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter
    res = json.loads(Path(path).read_text())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in res["runs"]:
        ax.plot(res["lengths"], r["ppl"], "o-", label=f"{r['label']} ({r['params'] / 1e6:.2f}M)")
    for bs in sorted({r["block_size"] for r in res["runs"]}):
        ax.axvline(bs, color="gray", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis(FormatStrFormatter("%g"))
    ax.set_xticks(res["lengths"], [str(n) for n in res["lengths"]])
    ax.set_xlabel(f"evaluation length in tokens ({res['runs'][0]['tokenizer']} tokenizer; dotted: training length)")
    ax.set_ylabel(f"perplexity of the last {res['tail']} tokens")
    r0 = res["runs"][0]
    ax.set_title(f"{r0['preset'] or 'custom'} {r0['shape']}, {r0['dataset']} ({r0['tokenizer']}), trained on "
                 f"{r0['tokens'] / 1e6:.1f}M tokens, seed {r0['seed']}; {res['windows']} val windows", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(path).with_suffix(".png"), dpi=100)
    plt.close(fig)


def extrapolate(cfg, paths, device, autocast):
    """The sweep over checkpoints and lengths: a progress line per point, a markdown table at the end,
    extrapolation.json and extrapolation.png on disk."""
    loaded = [load_model(p, device) for p in paths]
    first_block = loaded[0][0].config.block_size
    lengths = ([int(n) for n in cfg.lengths.split(",")] if cfg.lengths else
               [first_block * 2 ** i for i in range(6) if first_block * 2 ** i <= max(8192, first_block)])
    for path, (model, _) in zip(paths, loaded):
        if model.config.pos == "learned" and max(lengths) > model.config.block_size:
            raise ConfigError(f"{path} uses learned positions, which stop at block_size={model.config.block_size}; "
                              f"drop it or keep --lengths <= {model.config.block_size}")
    tail = min(cfg.tail, min(lengths))
    if tail < cfg.tail:
        print(f"note: the shortest length is {min(lengths)}, so every length scores its last {tail} tokens")
    runs = []
    for path, (model, run) in zip(paths, loaded):
        for m in model.modules():
            if hasattr(m, "q_chunk"):
                m.q_chunk = cfg.q_chunk
        folder = prepare(run["dataset"], run["tokenizer"], cfg.data_dir)
        tokens = load_split(folder, "val")
        check_block(tokens, max(lengths) + cfg.windows, "val", folder)
        ends = np.linspace(max(lengths) + 1, len(tokens), cfg.windows).astype(np.int64)  # same text at every length
        r = dict(ckpt=str(path), attention=run["attention"], pos=model.config.pos, block_size=model.config.block_size,
                 params=model.num_params(), preset=run["preset"], shape=f"{run['n_layer']}x{run['n_embd']}",
                 dataset=run["dataset"], tokenizer=run["tokenizer"], seed=run["seed"],
                 tokens=run["max_iters"] * run["batch_size"] * run["block_size"] * run["grad_accum"],
                 ppl=[], seconds=[])
        for n in lengths:
            t0 = time.perf_counter()
            r["ppl"].append(math.exp(tail_loss(model, tokens, n, ends, tail, device, autocast)))
            r["seconds"].append(time.perf_counter() - t0)
            print(f"{path} ({r['attention']}/{r['pos']}, trained at {r['block_size']}): length {n}: "
                  f"perplexity {r['ppl'][-1]:.3f} ({r['seconds'][-1]:.1f} s)", flush=True)
        runs.append(r)
    names = [f"{r['attention']}/{r['pos']}" for r in runs]
    for r, name in zip(runs, names):  # the run folder's name where two runs would share a label
        r["label"] = name if names.count(name) == 1 else checkpoint_path(r["ckpt"]).parent.name

    print(f"\nperplexity of the last {tail} tokens, {cfg.windows} val windows ({device}):\n")
    print("| length | " + " | ".join(f"{r['label']} ({r['block_size']})" for r in runs) + " |")
    print("| ---: | " + " | ".join("---:" for _ in runs) + " |")
    for i, n in enumerate(lengths):
        print(f"| {n} | " + " | ".join(f"{r['ppl'][i]:.3f}" for r in runs) + " |")
    out = Path(cfg.out) if cfg.out else checkpoint_path(paths[0]).parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "extrapolation.json").write_text(json.dumps(
        dict(lengths=lengths, tail=tail, windows=cfg.windows, q_chunk=cfg.q_chunk, device=str(device), runs=runs),
        indent=2))
    plot_extrapolation(out / "extrapolation.json")
    print(f"\nwrote {out}/extrapolation.json and {out}/extrapolation.png")


def main(argv):
    ckpts = [a.partition("=")[2] for a in argv if a.startswith("--ckpt=")]  # --ckpt may be repeated: join them
    argv = [a for a in argv if not a.startswith("--ckpt=")] + ([f"--ckpt={','.join(ckpts)}"] if ckpts else [])
    cfg = EvalConfig(**parse_flags(argv, EvalConfig, CHOICES))
    if not cfg.ckpt:
        raise ConfigError("--ckpt is required: a ckpt.pt or a run folder, e.g. --ckpt=out/run")
    device, _, autocast = setup_device(cfg.device, cfg.dtype)
    paths = [p for p in cfg.ckpt.split(",") if p]
    if cfg.mode == "extrapolate":
        return extrapolate(cfg, paths, device, autocast)
    if len(paths) > 1:
        raise ConfigError(f"--mode={cfg.mode} evaluates one checkpoint; several are for --mode=extrapolate")
    model, run = load_model(cfg.ckpt, device)
    tokenizer = get_tokenizer(run["tokenizer"])
    block_size, learned = model.config.block_size, model.config.pos == "learned"

    if cfg.mode == "loss":
        eval_len = cfg.eval_len or block_size
        if learned and eval_len > block_size:
            raise ConfigError(f"--eval_len={eval_len} is longer than block_size={block_size}, the limit of learned "
                              "positions; use --eval_len<={block_size}")
        folder = prepare(cfg.dataset or run["dataset"], run["tokenizer"], cfg.data_dir)
        tokens, meta = load_split(folder, cfg.split), load_meta(folder)
        check_block(tokens, eval_len, cfg.split, folder)
        loss, n = eval_loss(model, tokens, eval_len, cfg.batch_size, cfg.max_tokens, device, autocast)
        bpb = loss / math.log(2) * meta[f"{cfg.split}_tokens"] / meta[f"{cfg.split}_bytes"]
        print(f"{cfg.split}_loss {loss:.4f} | perplexity {math.exp(loss):.3f} | {bpb:.4f} bits/byte | "
              f"{n:,} tokens of {folder}/{cfg.split}.bin in windows of {eval_len}")

    elif cfg.mode == "sample":
        ids = tokenizer.encode(cfg.prompt) if cfg.prompt else [tokenizer.eot]
        if learned and len(ids) > block_size:
            raise ConfigError(f"the prompt is {len(ids)} tokens, longer than block_size={block_size}, the limit of "
                              "learned positions; shorten --prompt")
        torch.manual_seed(cfg.seed)
        x = torch.tensor([ids] * cfg.num_samples, device=device)
        with autocast:
            out = model.generate(x, cfg.max_new_tokens, cfg.temperature, cfg.top_k or None)
        for row in out.tolist():
            text = tokenizer.decode([t for t in row if t < tokenizer.n_vocab and t != tokenizer.eot])
            print(text + "\n" + "-" * 40)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
