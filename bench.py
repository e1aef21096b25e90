"""Training throughput of each attention type: `python bench.py [--preset=...] [--key=value ...]`.

For one shape (a train.py preset, default `small` on CUDA and `cpu` elsewhere) and each attention type, times a
full training step (forward, backward, AdamW) on random tokens and prints one table: ms/step, tokens/s, MFU and
peak memory on CUDA, and each type's step time as a ratio to `standard` measured in the same process.
It measures and prints; it asserts nothing.
"""

import time
from dataclasses import dataclass

import torch

from attention import ATTENTIONS, ConfigError, check_choice
from data import get_tokenizer
from model import GPT, peak_flops
from train import cli, PRESETS, Config, model_config, parse_flags, setup_device


@dataclass
class BenchConfig:
    preset: str = ""  # default: small on CUDA, cpu elsewhere
    attentions: str = ",".join(ATTENTIONS)  # comma-separated
    pos: str = ""  # default: the preset's
    batch_size: int = 0  # default: the preset's
    block_size: int = 0  # default: the preset's
    steps: int = 10
    warmup: int = 3
    device: str = "auto"
    dtype: str = "auto"
    compile: str = "auto"  # auto: on for CUDA


def bench_one(model, cfg, batch_size, block_size, device, autocast, steps, warmup):
    """Seconds per training step and peak CUDA memory (bytes, 0 on CPU)."""
    opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), device)
    step_model = torch.compile(model) if cfg.compile == "true" or (cfg.compile == "auto" and device == "cuda") else model
    x = torch.randint(0, model.config.vocab_size, (batch_size, block_size + 1), device=device)

    def step():
        with autocast:
            _, loss = step_model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):  # compiles, warms up allocators and caches
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    return seconds, torch.cuda.max_memory_allocated() if device == "cuda" else 0


def main(argv):
    cfg = BenchConfig(**parse_flags(argv, BenchConfig, dict(preset=("", *PRESETS))))
    device, dtype, autocast = setup_device(cfg.device, cfg.dtype)
    preset = cfg.preset or ("small" if device == "cuda" else "cpu")
    run = Config(**PRESETS[preset])
    run.pos = cfg.pos or run.pos
    batch_size, block_size = cfg.batch_size or run.batch_size, cfg.block_size or run.block_size
    run.block_size = block_size
    attentions = cfg.attentions.split(",")
    for a in attentions:
        check_choice("attentions", a, ATTENTIONS)
    n_vocab = get_tokenizer(run.tokenizer).n_vocab
    peak = peak_flops(torch.device(device))
    print(f"preset {preset}: {run.n_layer} layers x {run.n_embd}, {run.n_head} heads, pos {run.pos}, batch "
          f"{batch_size} x {block_size} tokens, {device} {dtype}, {cfg.steps} timed steps after {cfg.warmup}")
    print(f"{'attention':<10} {'params':>8} {'ms/step':>9} {'tokens/s':>10} {'MFU':>6} {'peak mem':>9} {'time vs standard':>17}")
    base = None
    for attention in attentions:
        run.attention = attention
        torch.manual_seed(0)
        model = GPT(model_config(run, n_vocab)).to(device)
        seconds, mem = bench_one(model, cfg, batch_size, block_size, device, autocast, cfg.steps, cfg.warmup)
        tok_s = batch_size * block_size / seconds
        base = base or seconds
        mfu = model.estimate_mfu(tok_s, peak)
        print(f"{attention:<10} {model.num_params() / 1e6:>7.2f}M {1000 * seconds:>9.1f} {tok_s:>10,.0f} "
              f"{f'{100 * mfu:.1f}%' if mfu else '-':>6} {f'{mem / 2**30:.2f} GB' if mem else '-':>9} "
              f"{seconds / base:>16.2f}x")
        del model


if __name__ == "__main__":
    cli(main)
