"""Training throughput of each attention type: `python bench.py [--preset=...] [--key=value ...]`.

For one shape (a train.py preset, default `small` on CUDA and `cpu` elsewhere) and each attention type, times a
full training step (forward, backward, AdamW) on random tokens and prints one table: ms/step, tokens/s, MFU and
peak memory on CUDA, and each type's step time as a ratio to `standard` measured in the same process.
`--mode=infer` instead times one no-grad forward of a single --infer_len-token sequence (batch 1) scored on its
last 256 tokens, as `eval.py --mode=extrapolate` runs it, and reports its peak memory: CUDA's peak allocation, or
on CPU the peak RSS of a fresh process that does only that (Python, torch and the weights included).
It measures and prints; it asserts nothing.
"""

import multiprocessing
import resource
import time
from dataclasses import dataclass

import torch

from attention import ATTENTIONS
from data import get_tokenizer
from model import GPT, model_config, peak_flops
from plumbing import check_choice, check_ranges, cli, parse_flags, setup_device
from train import PRESETS, Config


@dataclass
class BenchConfig:
    preset: str = ""  # default: small on CUDA, cpu elsewhere
    attentions: str = ",".join(ATTENTIONS)  # comma-separated
    pos: str = ""  # default: the preset's
    n_layer: int = 0  # shape and batch: 0 = the preset's
    n_head: int = 0
    n_embd: int = 0
    batch_size: int = 0
    block_size: int = 0
    mode: str = "train"  # train: a training step; infer: a long no-grad forward and its peak memory
    infer_len: int = 8192
    q_chunk: int = 128  # DAPE query rows per chunk in infer mode
    steps: int = 10
    warmup: int = 3
    device: str = "auto"
    dtype: str = "auto"
    compile: str = "auto"  # auto: on for CUDA

    def __post_init__(self):
        for a in self.attentions.split(","):
            check_choice("attentions", a, ATTENTIONS)
        check_ranges(self, dict(n_layer="[0, inf)", n_head="[0, inf)", n_embd="[0, inf)", batch_size="[0, inf)",
                                block_size="[0, inf)", infer_len="[1, inf)", q_chunk="[0, inf)", steps="[1, inf)",
                                warmup="[0, inf)"))  # [ includes the end; 0 = the preset's


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


def infer_once(run, n_vocab, T, q_chunk, device, dtype):
    """(seconds, peak memory, memory held before the forward, parameters, pos) of one T-token no-grad forward."""
    _, _, autocast = setup_device(device, dtype)
    torch.manual_seed(0)
    model = GPT(model_config(run, n_vocab)).to(device).eval()
    model.set_q_chunk(q_chunk)
    x = torch.randint(0, n_vocab, (1, T), device=device)
    with torch.no_grad(), autocast:
        model.features(x[:, :256])  # warm-up: thread pools, kernels
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    with torch.no_grad(), autocast:
        model.lm_head(model.features(x)[:, -256:])
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return seconds, peak, before, model.num_params(), model.config.pos


def infer_table(cfg, runs, n_vocab, device, dtype):
    """runs: {attention: its train.Config}."""
    print(f"{'attention':<10} {'pos':<7} {'params':>8} {'seconds':>8} {'peak mem':>9} {'before forward':>15}")
    for attention, run in runs.items():
        args = (run, n_vocab, cfg.infer_len, cfg.q_chunk, device, dtype)
        if device == "cuda":
            seconds, peak, before, params, pos = infer_once(*args)
        else:  # peak RSS never goes down: measure each in a fresh process
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                seconds, peak, before, params, pos = pool.apply(infer_once, args)
        print(f"{attention:<10} {pos:<7} {params / 1e6:>7.2f}M {seconds:>8.2f} {peak / 2**30:>7.2f} GB "
              f"{before / 2**30:>12.2f} GB")


def main(argv):
    cfg = BenchConfig(**parse_flags(argv, BenchConfig, dict(preset=("", *PRESETS), mode=("train", "infer"))))
    device, dtype, autocast = setup_device(cfg.device, cfg.dtype)
    preset = cfg.preset or ("small" if device == "cuda" else "cpu")
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "batch_size", "block_size") if getattr(cfg, k)}
    attentions = cfg.attentions.split(",")
    attentions = ["standard"] + [a for a in attentions if a != "standard"]  # the baseline of the ratios, timed first
    runs = {a: Config(**{**PRESETS[preset], **shape, "attention": a, "pos": cfg.pos or "auto"})  # checked here,
            for a in attentions}  # before anything is printed
    run = runs["standard"]
    batch_size, block_size = run.batch_size, run.block_size
    n_vocab = get_tokenizer(run.tokenizer).n_vocab
    peak = peak_flops(torch.device(device))
    if cfg.mode == "infer":
        print(f"preset {preset}: {run.n_layer} layers x {run.n_embd}, {run.n_head} heads, one no-grad forward of "
              f"1 x {cfg.infer_len} tokens, {device} {dtype}, DAPE q_chunk {cfg.q_chunk}; CPU memory is peak RSS")
        return infer_table(cfg, runs, n_vocab, device, dtype)
    print(f"preset {preset}: {run.n_layer} layers x {run.n_embd}, {run.n_head} heads, batch "
          f"{batch_size} x {block_size} tokens, {device} {dtype}, {cfg.steps} timed steps after {cfg.warmup}")
    print(f"{'attention':<10} {'pos':<7} {'params':>8} {'ms/step':>9} {'tokens/s':>10} {'MFU':>6} {'peak mem':>9} "
          f"{'time vs standard':>17}")
    base = None
    for attention in attentions:
        torch.manual_seed(0)
        model = GPT(model_config(runs[attention], n_vocab)).to(device)
        seconds, mem = bench_one(model, cfg, batch_size, block_size, device, autocast, cfg.steps, cfg.warmup)
        tok_s = batch_size * block_size / seconds
        base = base or seconds
        mfu = model.estimate_mfu(tok_s, peak)
        print(f"{attention:<10} {model.config.pos:<7} {model.num_params() / 1e6:>7.2f}M {1000 * seconds:>9.1f} "
              f"{tok_s:>10,.0f} "
              f"{f'{100 * mfu:.1f}%' if mfu else '-':>6} {f'{mem / 2**30:.2f} GB' if mem else '-':>9} "
              f"{seconds / base:>16.2f}x")
        del model


if __name__ == "__main__":
    cli(main)
