"""Evaluate a checkpoint: `python eval.py --ckpt=PATH [--mode=loss|sample] [--key=value ...]`.

loss    val loss, perplexity and bits per byte over non-overlapping windows of the split (default: the
        checkpoint's dataset, windows of its block_size, at most max_tokens tokens)
sample  text generated from --prompt (default: from the end-of-text token)
schedules  for several run folders (--run=DIR --run=DIR2 ...): every finished model's val loss against the compute
        spent to get it (tokens, decay branches included), as a table and schedules_compare.png with a second panel
        of the train-loss curves, where each decay's drop shows

Design choices: flags are parsed from EvalConfig exactly as train.py parses its Config; the model is rebuilt from
the GPTConfig stored in the checkpoint, so eval needs nothing from the run folder but ckpt.pt. Bits per byte use
the split's bytes-per-token ratio from meta.json, which makes byte and BPE runs comparable.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attention import ConfigError
from data import check_block, get_tokenizer, load_meta, load_split, prepare
from model import GPT, GPTConfig
from train import cli, load_checkpoint, parse_flags, read_log, setup_device


@dataclass
class EvalConfig:
    ckpt: str = ""  # a ckpt.pt or a run folder
    mode: str = "loss"
    run: list = field(default_factory=list)  # schedules: run folders (repeat the flag or separate by commas)
    out: str = ""  # schedules: where the figure goes (default: the first run's folder)
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
    # system
    device: str = "auto"
    dtype: str = "auto"


CHOICES = dict(mode=("loss", "sample", "schedules"), split=("train", "val"), device=("auto", "cpu", "cuda", "mps"),
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


def finished_models(run_dir):
    """(config, budget rows, train rows) of a run folder: the finished models and the loss curve."""
    run_dir = Path(run_dir)
    if not (run_dir / "log.jsonl").exists():
        raise ConfigError(f"--run={run_dir} holds no log.jsonl; pass run folders written by train.py")
    rows = read_log(run_dir)
    return (json.loads((run_dir / "config.json").read_text()), [r for r in rows if "budget" in r],
            [r for r in rows if "loss" in r])


def run_label(run_dir, cfg):
    shape = f" {cfg['decay_shape']}" if cfg["schedule"] in ("wsd", "wsd-s") else ""
    return f"{Path(run_dir).name} ({cfg['schedule']}{shape})"


def compare_schedules(runs, out):
    """Print the table of finished models and draw schedules_compare.png; returns the figure's path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_val, ax_train) = plt.subplots(1, 2, figsize=(13, 5))
    print(f"{'run':<34} {'budget':>7} {'tokens (M)':>11} {'val loss':>9} {'val bpb':>8}")
    for i, run_dir in enumerate(runs):
        cfg, budgets, train = finished_models(run_dir)
        label, color = run_label(run_dir, cfg), f"C{i}"
        for r in budgets:
            print(f"{label:<34} {r['budget']:>7} {r['tokens'] / 1e6:>11.2f} {r['val_loss']:>9.4f} {r['val_bpb']:>8.3f}")
        ax_val.plot([r["tokens"] / 1e6 for r in budgets], [r["val_loss"] for r in budgets], "o-", color=color,
                    label=label)
        for branch in sorted({r.get("branch") for r in train}, key=lambda b: b or 0):
            part = [r for r in train if r.get("branch") == branch]
            ax_train.plot([r["iter"] for r in part], smooth([r["loss"] for r in part]), color=color,
                          ls=":" if branch else "-", lw=1, label=label if branch is None else None)
    late = [y for line in ax_train.get_lines() for x, y in zip(*line.get_data()) if x >= 0.2 * max(line.get_xdata())]
    if late:  # zoom past the initial drop, where the decays are
        ax_train.set_ylim(min(late) - 0.05, max(late) + 0.05)
    ax_val.set(xlabel="compute spent to get the model (million tokens, decay branches included)",
               ylabel="val loss (nats/token)", title="finished models: val loss against compute")
    ax_train.set(xlabel="step", ylabel="train loss (smoothed; dotted: wsd decay branches)",
                 title="train loss: the drop at each decay")
    for ax in (ax_val, ax_train):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    cfg = finished_models(runs[0])[0]
    fig.suptitle(f"{cfg['preset'] or 'custom'} {cfg['n_layer']}x{cfg['n_embd']}, {cfg['dataset']}, seed {cfg['seed']}")
    fig.tight_layout()
    path = Path(out or runs[0]) / "schedules_compare.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def smooth(values, k=3):
    """Centered moving average (shorter at the ends): per-step losses are noisy."""
    return [sum(values[max(0, i - k // 2): i + k // 2 + 1]) / len(values[max(0, i - k // 2): i + k // 2 + 1])
            for i in range(len(values))]


def main(argv):
    cfg = EvalConfig(**parse_flags(argv, EvalConfig, CHOICES))
    if cfg.mode == "schedules":
        if not cfg.run:
            raise ConfigError("--mode=schedules needs run folders: --run=out/a --run=out/b ...")
        print(f"wrote {compare_schedules(cfg.run, cfg.out)}")
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


if __name__ == "__main__":
    cli(main)
