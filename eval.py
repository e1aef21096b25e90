"""Evaluate a checkpoint: `python eval.py --ckpt=PATH [--mode=loss|sample|outliers] [--key=value ...]`.

loss      val loss, perplexity and bits per byte over non-overlapping windows of the split (default: the
          checkpoint's dataset, windows of its block_size, at most max_tokens tokens)
sample    text generated from --prompt (default: from the end-of-text token)
outliers  the Diff Transformer paper's outlier statistics on the first --batches batches of those windows: the
          largest attention logit (q·k/√d before softmax) and the largest hidden activation |x| of the residual stream
compare   no checkpoint: `--runs=out/a,out/b --png=FILE` overlays the val loss curves of runs from their log.jsonl

Design choices: flags are parsed from EvalConfig exactly as train.py parses its Config; the model is rebuilt from
the GPTConfig stored in the checkpoint, so eval needs nothing from the run folder but ckpt.pt. Bits per byte use
the split's bytes-per-token ratio from meta.json, which makes byte and BPE runs comparable.
"""

import math
import sys
from dataclasses import dataclass

import torch

from attention import ConfigError, apply_rope, rope_cos_sin
from data import DataError, check_block, get_tokenizer, load_meta, load_split, prepare
from model import GPT, GPTConfig
from train import load_checkpoint, parse_flags, read_log, setup_device


@dataclass
class EvalConfig:
    ckpt: str = ""  # a ckpt.pt or a run folder
    mode: str = "loss"
    # loss
    dataset: str = ""  # default: the checkpoint's
    data_dir: str = "data"
    split: str = "val"
    eval_len: int = 0  # window length; default the checkpoint's block_size
    max_tokens: int = 1 << 20
    batch_size: int = 8
    # outliers
    batches: int = 4
    # compare
    runs: str = ""  # comma-separated run folders
    png: str = "compare.png"
    # sample
    prompt: str = ""
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 200
    num_samples: int = 1
    seed: int = 1337
    # system
    device: str = "auto"
    dtype: str = "auto"


CHOICES = dict(mode=("loss", "sample", "outliers", "compare"), split=("train", "val"), device=("auto", "cpu", "cuda", "mps"),
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


def attention_logits(attn, x, config):
    """q·k/√d of every query/key (sub-)head of one layer, recomputed from the layer's input x (B, T, C), future
    entries −inf: (B, n_head, T, T). Standard and diff layers both cut q and k from c_attn into config.n_head pieces
    of size n_embd / n_head (diff: its 2h sub-heads) and rotate each with RoPE; position biases are not included."""
    B, T, C = x.shape
    n, d = config.n_head, C // config.n_head
    q, k, _ = attn.c_attn(x).split(C, dim=2)
    q, k = (t.view(B, T, n, d).transpose(1, 2) for t in (q, k))
    if config.pos == "rope":
        cos, sin = rope_cos_sin(T, d, config.rope_base, x.device)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(d)  # (B, n_head, T, T)
    return att.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))


@torch.no_grad()
def outlier_stats(model, tokens, eval_len, batch_size, batches, device, autocast):
    """The paper's outlier statistics (arXiv 2410.05258 §3.8, Table 6) on the first batches × batch_size windows,
    read through forward hooks: the top attention logit (max q·k/√d over layers, heads, positions) and the top
    hidden activation (max |x| of the residual stream after each block), each with the median of the per-layer
    medians for scale. -> ({"logit"|"hidden": (top, where, median)}, windows used)."""
    seen = {"logit": [], "hidden": []}  # (max, median, where) per layer and batch

    def on_attention(layer):
        def hook(attn, args):
            att = attention_logits(attn, args[0], model.config).float()  # (B, n_head, T, T)
            per_head = att.amax(dim=(0, 2, 3))
            seen["logit"].append((per_head.max().item(), att[att > -math.inf].median().item(),
                                  f"layer {layer}, q/k head {per_head.argmax().item()}"))
        return hook

    def on_block(layer):
        def hook(block, args, out):
            a = out.float().abs()
            seen["hidden"].append((a.max().item(), a.median().item(), f"after block {layer}"))
        return hook

    hooks = [b.attn.register_forward_pre_hook(on_attention(l)) for l, b in enumerate(model.transformer.h)]
    hooks += [b.register_forward_hook(on_block(l)) for l, b in enumerate(model.transformer.h)]
    n_windows = max(1, min(batches * batch_size, (len(tokens) - 1) // eval_len))
    try:
        for start in range(0, n_windows, batch_size):
            rows = range(start, min(start + batch_size, n_windows))
            x = torch.stack([torch.from_numpy(tokens[w * eval_len:(w + 1) * eval_len].astype("int64")) for w in rows])
            with autocast:
                model(x.to(device))
    finally:
        for h in hooks:
            h.remove()
    stats = {}
    for kind, rows in seen.items():
        top, _, where = max(rows)
        medians = sorted(m for _, m, _ in rows)
        stats[kind] = (top, where, medians[len(medians) // 2])
    return stats, n_windows


def plot_val_curves(run_dirs, png):
    """Val loss against tokens of several runs, overlaid, redrawn from each run's log.jsonl and config.json."""
    import json
    from pathlib import Path
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    second = []  # the first eval (random init) would squash the curves; the y axis starts at the second
    for run in run_dirs:
        cfg = json.loads((Path(run) / "config.json").read_text())
        tokens_per_iter = cfg["batch_size"] * cfg["block_size"] * cfg["grad_accum"]
        val = [(r["iter"] * tokens_per_iter / 1e6, r["val_loss"]) for r in read_log(run) if "val_loss" in r]
        if not val:
            raise ConfigError(f"{run}/log.jsonl has no val_loss rows; is it a finished train.py run?")
        ax.plot(*zip(*val), "o-", label=f"{cfg['attention']} ({cfg['pos']}): final {val[-1][1]:.4f}")
        second.append(val[min(1, len(val) - 1)][1])
    lows = [line.get_ydata().min() for line in ax.get_lines()]
    ax.set_ylim(min(lows) - 0.05 * (max(second) - min(lows)), max(second) + 0.1 * (max(second) - min(lows)))
    ax.set_xlabel("tokens (millions)")
    ax.set_ylabel(f"val loss (nats per token, {cfg['tokenizer']} tokenizer)")
    ax.set_title(f"{cfg['preset'] or 'custom'}: {cfg['n_layer']}x{cfg['n_embd']}, {cfg['n_head']} heads, "
                 f"{cfg['dataset']}, {cfg['max_iters']} iters x {tokens_per_iter:,} tokens, seed {cfg['seed']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv):
    cfg = EvalConfig(**parse_flags(argv, EvalConfig, CHOICES))
    if cfg.mode == "compare":
        if not cfg.runs:
            raise ConfigError("--mode=compare needs --runs=out/a,out/b (run folders with log.jsonl)")
        plot_val_curves(cfg.runs.split(","), cfg.png)
        print(f"wrote {cfg.png}")
        return
    if not cfg.ckpt:
        raise ConfigError("--ckpt is required: a ckpt.pt or a run folder, e.g. --ckpt=out/run")
    device, _, autocast = setup_device(cfg.device, cfg.dtype)
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

    elif cfg.mode == "outliers":
        eval_len = cfg.eval_len or block_size  # learned positions refuse longer windows themselves
        folder = prepare(cfg.dataset or run["dataset"], run["tokenizer"], cfg.data_dir)
        tokens = load_split(folder, cfg.split)
        check_block(tokens, eval_len, cfg.split, folder)
        stats, n = outlier_stats(model, tokens, eval_len, cfg.batch_size, cfg.batches, device, autocast)
        (logit, where, median), (act, act_where, act_median) = stats["logit"], stats["hidden"]
        print(f"top attention logit {logit:.2f} ({where}; median {median:.2f}) | q·k/√d before softmax, "
              f"{n} windows of {eval_len} tokens of {folder}/{cfg.split}.bin")
        print(f"top hidden activation {act:.2f} ({act_where}; median |x| {act_median:.3f}) | residual stream, "
              f"{model.config.attention} attention")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
