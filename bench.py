"""Training throughput of each attention type: `python bench.py [--preset=...] [--key=value ...]`.

Its modes (--mode=):
train   (default) for one shape (a train.py preset, default `small` on CUDA and `cpu` elsewhere)
        and each attention type (attention.ATTENTIONS), times a full training step (forward,
        backward, AdamW) on random tokens and prints one table: ms/step, tokens/s, MFU and peak
        memory on CUDA, and each type's step time as a ratio to `standard` measured in the same
        process (--rounds=3 interleaves the types)
infer   times one no-grad forward of a single --infer_len-token sequence (batch 1) scored on its
        last 256 tokens, as `eval.py --mode=extrapolate` runs it, and reports its peak memory:
        CUDA's peak allocation, or on CPU the peak RSS of a fresh process that does only that
memory  the expected peak GPU memory of one training step of each type at a preset (default
        gpt2), computed on the CPU: the step runs on fake tensors (no data, no compute) while
        LiveBytes counts every storage alive; bf16 autocast, fused AdamW state, the config's
        activation checkpointing; eager (a compiled step saves fewer activations)
check   the GPU check, a pass/fail verdict on the whole CUDA path (check.py)

--json prints one JSON object per attention type instead of a table (train and memory modes).
"""

import json
import multiprocessing
import resource
import statistics
import sys
import time
import weakref
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from attention import ATTENTIONS
from data import N_VOCAB
from model import GPT, GPTConfig, model_config, peak_flops
from plumbing import check_choice, check_ranges, cli, parse_flags, setup_device
from train import PRESETS, Config


@dataclass
class BenchConfig:
    preset: str = ""  # default: small on CUDA, cpu elsewhere; gpt2 in memory mode
    attentions: str = ",".join(ATTENTIONS)  # comma-separated
    pos: str = ""  # default: the preset's
    n_layer: int = 0  # shape and batch: 0 = the preset's
    n_head: int = 0
    n_embd: int = 0
    batch_size: int = 0
    block_size: int = 0
    # train: a training step; infer: a long no-grad forward and its peak memory; memory: a
    # training step's expected peak GPU memory, computed on the CPU; check: the GPU check
    mode: str = "train"
    infer_len: int = 8192
    q_chunk: int = 128  # DAPE query rows per chunk in infer mode
    # DAPE query rows per chunk in train mode (train.py's --dape_q_chunk, the model's default;
    # 0: the full grid)
    dape_q_chunk: int = GPTConfig.dape_q_chunk
    steps: int = 10
    warmup: int = 3
    # the attention types are timed in turn this many times (A B C A B C ...); medians are reported
    rounds: int = 1
    device: str = "auto"
    dtype: str = "auto"
    compile: str = "auto"  # auto: on for CUDA
    json: bool = False  # one JSON object per attention type instead of the table
    # the GPU's dense bf16 peak for MFU, when model.PEAK_TFLOPS does not know its name
    peak_tflops: float = 0.0

    def __post_init__(self):
        for a in self.attentions.split(","):
            check_choice("attentions", a, ATTENTIONS)
        check_ranges(
            self,
            dict(
                n_layer="[0, inf)",
                n_head="[0, inf)",
                n_embd="[0, inf)",
                batch_size="[0, inf)",
                block_size="[0, inf)",
                infer_len="[1, inf)",
                q_chunk="[0, inf)",
                dape_q_chunk="[0, inf)",
                steps="[1, inf)",
                warmup="[0, inf)",
                rounds="[1, inf)",
                peak_tflops="[0, inf)",
            ),
        )  # [ includes the end; 0 = the preset's


MODES = ("train", "infer", "memory", "check")


def bench_one(model, cfg, batch_size, block_size, device, autocast, steps, warmup):
    """Seconds per training step and peak CUDA memory (bytes, 0 on CPU)."""
    opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), device)
    step_model = (
        torch.compile(model)
        if cfg.compile == "true" or (cfg.compile == "auto" and device == "cuda")
        else model
    )
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
    """(seconds, peak memory, memory held before the forward, parameters, pos) of one T-token
    no-grad forward."""
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
    before = (
        torch.cuda.memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    t0 = time.perf_counter()
    with torch.no_grad(), autocast:
        model.logits(model.features(x)[:, -256:])
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return seconds, peak, before, model.num_params(), model.config.pos


def infer_table(cfg, runs, n_vocab, device, dtype):
    """runs: {attention: its train.Config}."""
    print(
        f"{'attention':<10} {'pos':<7} {'params':>8} {'seconds':>8} {'peak mem':>9} "
        f"{'before forward':>15}"
    )
    for attention, run in runs.items():
        args = (run, n_vocab, cfg.infer_len, cfg.q_chunk, device, dtype)
        if device == "cuda":
            seconds, peak, before, params, pos = infer_once(*args)
        else:  # peak RSS never goes down: measure each in a fresh process
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                seconds, peak, before, params, pos = pool.apply(infer_once, args)
        print(
            f"{attention:<10} {pos:<7} {params / 1e6:>7.2f}M {seconds:>8.2f} "
            f"{peak / 2**30:>7.2f} GB {before / 2**30:>12.2f} GB"
        )


def main(argv):
    cfg = BenchConfig(**parse_flags(argv, BenchConfig, dict(preset=("", *PRESETS), mode=MODES)))
    if cfg.mode == "check":  # check.py runs bench.py as a user would: it never imports it
        from check import run_check

        if run_check():
            sys.exit(1)
        return
    device, dtype, autocast = setup_device(cfg.device, cfg.dtype)
    preset = cfg.preset or (
        "gpt2" if cfg.mode == "memory" else "small" if device == "cuda" else "cpu"
    )
    shape = {
        k: getattr(cfg, k)
        for k in ("n_layer", "n_head", "n_embd", "batch_size", "block_size")
        if getattr(cfg, k)
    }
    attentions = cfg.attentions.split(",")
    attentions = ["standard"] + [
        a for a in attentions if a != "standard"
    ]  # the baseline of the ratios, timed first
    runs = {
        a: Config(
            **{
                **PRESETS[preset],
                **shape,
                "attention": a,
                "pos": cfg.pos or "auto",  # checked here,
                "dape_q_chunk": cfg.dape_q_chunk,
            }
        )
        for a in attentions
    }  # before anything is printed
    run = runs["standard"]
    n_vocab = N_VOCAB[run.tokenizer]  # random tokens: no tokenizer to load (offline)
    if cfg.mode == "memory":
        return memory_table(cfg, preset, runs, n_vocab)
    if cfg.mode == "infer":
        print(
            f"preset {preset}: {run.n_layer} layers x {run.n_embd}, {run.n_head} heads, one "
            f"no-grad forward of 1 x {cfg.infer_len} tokens, {device} {dtype}, DAPE q_chunk "
            f"{cfg.q_chunk}; CPU memory is peak RSS"
        )
        return infer_table(cfg, runs, n_vocab, device, dtype)
    peak = cfg.peak_tflops * 1e12 or peak_flops(torch.device(device))
    if not cfg.json:
        print(
            f"preset {preset}: {run.n_layer} layers x {run.n_embd}, {run.n_head} heads, batch "
            f"{run.batch_size} x {run.block_size} tokens, {device} {dtype}, {cfg.steps} timed "
            f"steps after {cfg.warmup}"
            f"{f', median of {cfg.rounds} rounds' if cfg.rounds > 1 else ''}"
            f"{f', DAPE q_chunk {cfg.dape_q_chunk}' if cfg.dape_q_chunk else ''}; "
            "MFU from FLOPs counted by torch.utils.flop_counter"
        )
        print(
            f"{'attention':<10} {'pos':<7} {'params':>8} {'GFLOP/tok':>9} {'ms/step':>9} "
            f"{'tokens/s':>10} {'MFU':>6} {'peak mem':>9} {'time vs standard':>17}"
        )
    rows = {}
    for r in time_types(cfg, runs, n_vocab, device, autocast, peak):  # standard's row first
        rows[r["attention"]] = r
        r.update(
            vs_standard=r["ms_per_step"] / rows["standard"]["ms_per_step"],
            device=device,
            dtype=dtype,
            preset=preset,
            batch_size=run.batch_size,
            block_size=run.block_size,
        )
        if cfg.json:
            print(json.dumps(r), flush=True)  # each row as it comes: the check reads them
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-"
        mem_gb = f"{r['peak_mem_gb']:.2f} GB" if r["peak_mem_gb"] else "-"
        print(
            f"{r['attention']:<10} {r['pos']:<7} {r['params'] / 1e6:>7.2f}M "
            f"{r['flops_per_token'] / 1e9:>9.4f} {r['ms_per_step']:>9.1f} "
            f"{r['tokens_per_sec']:>10,.0f} {mfu:>6} {mem_gb:>9} {r['vs_standard']:>16.2f}x"
        )


def time_types(cfg, runs, n_vocab, device, autocast, peak):
    """Each type's row, with the median step time over cfg.rounds, yielded as soon as its last
    round is timed (a caller that stops waiting keeps the rows so far); each round builds and times
    every type in turn, so a machine whose speed drifts slows all of them alike."""
    seconds = {a: [] for a in runs}
    for round in range(cfg.rounds):
        for attention, run in runs.items():
            torch.manual_seed(0)
            model = GPT(model_config(run, n_vocab)).to(device)
            s, mem = bench_one(
                model, cfg, run.batch_size, run.block_size, device, autocast, cfg.steps, cfg.warmup
            )
            seconds[attention].append(s)
            median = statistics.median(seconds[attention])
            tokens_per_sec = run.batch_size * run.block_size / median
            row = dict(
                attention=attention,
                pos=model.config.pos,
                params=model.num_params(),
                flops_per_token=model.flops_per_token(),
                ms_per_step=1000 * median,
                tokens_per_sec=tokens_per_sec,
                mfu=model.estimate_mfu(tokens_per_sec, peak),
                peak_mem_gb=mem / 2**30 if mem else None,
            )
            del model
            if round == cfg.rounds - 1:
                yield row


# ------------------------------------------------------------------------------------------------
# the memory of a training step, without a GPU: python bench.py --mode=memory


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every tensor storage an op creates while it is alive, and their peak:
    what CUDA's caching allocator reports as torch.cuda.max_memory_allocated (each block rounded
    up to its 512 bytes). A storage is counted once however many views share it, and uncounted
    when Python frees it (a weak reference's callback)."""

    def __init__(self):
        super().__init__()
        self.counted = WeakIdKeyDictionary()  # storage -> its bytes
        self.refs = set()  # the weak references, kept alive until their storage dies
        self.now = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.count(t.untyped_storage())
        return out

    def count(self, storage):
        if storage in self.counted:
            return
        size = -(-storage.nbytes() // 512) * 512
        self.counted[storage] = size
        self.now += size
        self.peak = max(self.peak, self.now)

        def freed(ref):
            self.now -= size
            self.refs.discard(ref)

        self.refs.add(weakref.ref(storage, freed))


def step_memory(config, batch_size, dtype):
    """Peak bytes of two training steps (forward, backward, fused AdamW) of a GPT of this config on
    batch_size x block_size tokens; the second step holds the optimizer's two moments, so the peak
    is a step's in a running job. On fake tensors: shapes and dtypes, no data, no compute, so a
    124M model takes seconds. dtype "bfloat16" runs under CPU autocast, whose rules put the same
    ops in bf16 as CUDA's (matmuls, convs, SDPA; softmax and the loss in fp32 as the code asks)."""
    with torch.device("meta"):  # weights without memory or an RNG; to_empty gives them storage
        model = GPT(config)
    idx_shape = (batch_size, config.block_size + 1)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    live = LiveBytes()
    with FakeTensorMode(allow_non_fake_inputs=True), live:
        model.to_empty(device="cpu")
        idx = torch.zeros(idx_shape, dtype=torch.long)
        # the project's optimizer groups, fused as on CUDA (no per-step temporaries)
        opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), "cuda")
        for _ in range(2):
            with autocast:
                _, loss = model(idx[:, :-1], idx[:, 1:])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return live.peak


def memory_table(cfg, preset, runs, n_vocab):
    """One line per attention type: the expected peak GPU memory of one training step."""
    run = runs["standard"]
    dtype = "float32" if cfg.dtype == "float32" else "bfloat16"  # auto: a bf16 GPU's
    precision = "float32" if dtype == "float32" else "bfloat16 autocast"
    if not cfg.json:
        print(
            f"preset {preset}: {run.n_layer} layers x {run.n_embd}, {run.n_head} heads, batch "
            f"{run.batch_size} x {run.block_size} tokens, {precision}, AdamW (fp32 weights, "
            "grads, 2 moments); the expected peak GPU memory of one training step, eager PyTorch "
            "(a compiled step saves fewer activations: lower), counted on the CPU on fake "
            "tensors; not in it: the CUDA context (~0.5 GB), allocator slack; GB = 2^30 bytes"
        )
    for attention, run in runs.items():
        config = model_config(run, n_vocab)
        gb = step_memory(config, run.batch_size, dtype) / 2**30
        row = dict(attention=attention, pos=config.pos, peak_mem_gb=gb, preset=preset)
        row.update(batch_size=run.batch_size, block_size=run.block_size, dtype=dtype)
        row.update(activation_checkpointing=config.activation_checkpointing, compiled=False)
        if cfg.json:
            print(json.dumps(row))
            continue
        recompute = "activation checkpointing" if config.activation_checkpointing else ""
        print(f"{attention:<10} {config.pos:<7} {gb:>7.1f} GB  {recompute}".rstrip())


if __name__ == "__main__":
    cli(main)
