"""Evaluate a checkpoint: `python eval.py --ckpt=PATH [--mode=loss|sample] [--key=value ...]`.

loss    val loss, perplexity and bits per byte over non-overlapping windows of the split (default: the
        checkpoint's dataset, windows of its block_size, at most max_tokens tokens)
sample  text generated from --prompt (default: from the end-of-text token)

Design choices: flags are parsed from EvalConfig exactly as train.py parses its Config; the model is rebuilt from
the GPTConfig stored in the checkpoint, so eval needs nothing from the run folder but ckpt.pt. Bits per byte use
the split's bytes-per-token ratio from meta.json, which makes byte and BPE runs comparable.
"""

import math
import sys
from dataclasses import dataclass

import torch

from attention import ConfigError
from data import DataError, check_block, get_tokenizer, load_meta, load_split, prepare
from model import GPT, GPTConfig
from train import load_checkpoint, parse_flags, setup_device


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


CHOICES = dict(mode=("loss", "sample"), split=("train", "val"), device=("auto", "cpu", "cuda", "mps"),
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


def main(argv):
    cfg = EvalConfig(**parse_flags(argv, EvalConfig, CHOICES))
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
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
