"""Training throughput of each attention type: `python bench.py [--preset=...] [--key=value ...]`.

For one shape (a train.py preset, default `small` on CUDA and `cpu` elsewhere) and each attention
type (attention.ATTENTIONS), times a full training step (forward, backward, AdamW) on random tokens
and prints one table: ms/step, tokens/s, MFU and peak memory on CUDA, and each type's step time as
a ratio to `standard` measured in the same process. `--mode=infer` instead times one no-grad
forward of a single --infer_len-token sequence (batch 1) scored on its last 256 tokens, as
`eval.py --mode=extrapolate` runs it, and reports its peak memory: CUDA's peak allocation, or on
CPU the peak RSS of a fresh process that does only that (Python, torch and the weights included).
`--mode=check` is the GPU check. It measures and prints; it asserts nothing.
"""

import json
import multiprocessing
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attention import ATTENTIONS
from data import get_tokenizer
from model import GPT, GPTConfig, model_config, peak_flops
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
    # train: a training step; infer: a long no-grad forward and its peak memory; check: GPU check
    mode: str = "train"
    infer_len: int = 8192
    q_chunk: int = 128  # DAPE query rows per chunk in infer mode
    # DAPE query rows per chunk in train mode (train.py's --dape_q_chunk; 0: the full grid)
    dape_q_chunk: int = 0
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


MODES = ("train", "infer", "check")


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
        model.lm_head(model.features(x)[:, -256:])
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
    if cfg.mode == "check":
        return gpu_check()
    device, dtype, autocast = setup_device(cfg.device, cfg.dtype)
    preset = cfg.preset or ("small" if device == "cuda" else "cpu")
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
    n_vocab = get_tokenizer(run.tokenizer).n_vocab
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
    rows = time_types(cfg, runs, n_vocab, device, autocast, peak)
    for r in rows.values():
        r.update(
            vs_standard=r["ms_per_step"] / rows["standard"]["ms_per_step"],
            device=device,
            dtype=dtype,
            preset=preset,
            batch_size=run.batch_size,
            block_size=run.block_size,
        )
        if cfg.json:
            print(json.dumps(r))
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-"
        mem_gb = f"{r['peak_mem_gb']:.2f} GB" if r["peak_mem_gb"] else "-"
        print(
            f"{r['attention']:<10} {r['pos']:<7} {r['params'] / 1e6:>7.2f}M "
            f"{r['flops_per_token'] / 1e9:>9.4f} {r['ms_per_step']:>9.1f} "
            f"{r['tokens_per_sec']:>10,.0f} {mfu:>6} {mem_gb:>9} {r['vs_standard']:>16.2f}x"
        )


def time_types(cfg, runs, n_vocab, device, autocast, peak):
    """{attention: its row} with the median step time over cfg.rounds; each round builds and times
    every type in turn, so a machine whose speed drifts slows all of them alike. A type's row is
    rewritten each round, from the median of its rounds so far: after the last round, the median
    of all."""
    seconds = {a: [] for a in runs}
    rows = {}
    for _ in range(cfg.rounds):
        for attention, run in runs.items():
            torch.manual_seed(0)
            model = GPT(model_config(run, n_vocab)).to(device)
            s, mem = bench_one(
                model, cfg, run.batch_size, run.block_size, device, autocast, cfg.steps, cfg.warmup
            )
            seconds[attention].append(s)
            median = statistics.median(seconds[attention])
            tokens_per_sec = run.batch_size * run.block_size / median
            rows[attention] = dict(
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
    return rows


# ------------------------------------------------------------------------------------------------
# the GPU check: python bench.py --mode=check


def gpu_check():
    """Everything a first GPU run should confirm, in one command; on a machine without CUDA the CUDA
    parts say 'skipped' and the rest runs. Prints; asserts nothing."""
    cuda = torch.cuda.is_available()
    where = torch.cuda.get_device_name() if cuda else "no CUDA GPU: the CUDA parts are skipped"
    print(f"GPU check | {where} | torch {torch.__version__}")
    print(
        "\n1. CPU vs CUDA parity (fp32 loss and gradients, bf16 loss) and capture + autograd.grad "
        "through the maps"
    )
    for attention, pos in attention_position_pairs():
        print(f"  {attention + '/' + pos:<16} " + check_pair(attention, pos, cuda))
    print("\n2. the SDPA kernels each attention type can run (bf16, training shape)")
    for attention in ATTENTIONS:
        print(f"  {attention:<9} " + (check_kernels(attention) if cuda else "skipped (no CUDA)"))
    print("\n3. graph breaks under torch.compile (torch._dynamo.explain, one forward + loss)")
    for attention in ATTENTIONS:
        print(f"  {attention:<9} " + check_graph_breaks(attention))
    print(
        "\n4. `python train.py` (the small preset, 300 steps) and the gpt2 preset's bench figures"
    )
    if not cuda:
        print(
            "  skipped (no CUDA); on a GPU this runs: python train.py --max_iters=300 "
            "--out_dir=out/gpu_check_<time>, python bench.py --preset=gpt2 --json"
        )
        return
    for args in (
        [
            "train.py",
            "--max_iters=300",
            "--eval_interval=100",
            f"--out_dir=out/gpu_check_{int(time.time())}",
        ],
        ["bench.py", "--preset=gpt2", "--json"],
    ):
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
        print(
            f"  $ python {' '.join(args)}  (exit {proc.returncode})\n"
            + "\n".join("    " + t for t in tail)
        )


def attention_position_pairs():
    """Every (attention, pos) pair: each attention class's declared positions, in their order."""
    return [(attention, pos) for attention, kind in ATTENTIONS.items() for pos in kind.positions]


def tiny_model(attention, pos, device="cpu", T=32):
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=128,
            block_size=T,
            n_layer=2,
            n_head=4,
            n_embd=64,
            attention=attention,
            pos=pos,
        )
    ).to(device)
    x = torch.randint(0, 128, (2, T + 1), generator=torch.Generator().manual_seed(1)).to(device)
    return model, x[:, :-1], x[:, 1:]


def check_pair(attention, pos, cuda):
    """fp32 loss and gradients on CPU vs CUDA, the bf16 loss, and ∂loss/∂(captured maps) on the
    fastest device."""
    model, x, y = tiny_model(attention, pos)
    loss = model(x, y)[1]
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    text = f"cpu loss {loss.item():.5f}"
    device = "cuda" if cuda else "cpu"
    if cuda:
        model_c, xc, yc = tiny_model(attention, pos, "cuda")
        loss_c = model_c(xc, yc)[1]
        loss_c.backward()
        dg = max(
            (g.cpu() - p.grad.cpu()).abs().max().item() for g, p in zip(grads, model_c.parameters())
        )
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss_bf16 = model_c(xc, yc)[1].float()
        text += (
            f" | cuda fp32 |Δloss| {abs(loss_c.item() - loss.item()):.1e}, max |Δgrad| {dg:.1e} | "
            f"bf16 |Δloss| {abs(loss_bf16.item() - loss.item()):.1e}"
        )
    model, x, y = tiny_model(attention, pos, device)
    _, loss, maps = model.attention_maps(x, {0: [0], 1: [1]}, y)
    g = torch.autograd.grad(loss, [maps[0], maps[1]])
    ok = all(torch.isfinite(t).all() and t.abs().sum() > 0 for t in g) and all(
        p.grad is None for p in model.parameters()
    )
    return text + f" | maps {tuple(maps[0].shape)} on {device}: ∂loss/∂A {'ok' if ok else 'WRONG'}"


def check_kernels(attention):
    """Which SDPA backends run this attention type's forward + backward; none when it calls no SDPA
    at all (DAPE V2 needs the T×T scores: the explicit path only)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model, x, y = tiny_model(attention, ATTENTIONS[attention].default_pos, "cuda", T=256)
    if not sdpa_calls(model, x, y):
        return "no SDPA: it materialises the T×T scores (explicit path only)"
    works = []
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"):
        if not hasattr(SDPBackend, name):
            continue
        try:
            with (
                sdpa_kernel([getattr(SDPBackend, name)]),
                torch.autocast("cuda", dtype=torch.bfloat16),
            ):
                model(x, y)[1].backward()
            works.append(name.lower())
        except RuntimeError:
            pass
    return "runs on: " + (", ".join(works) or "none") + " (the first is what PyTorch picks)"


def sdpa_calls(model, x, y):
    """How many times a forward calls F.scaled_dot_product_attention."""
    real = F.scaled_dot_product_attention
    calls = []
    F.scaled_dot_product_attention = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        with torch.no_grad():
            model(x, y)
    finally:
        F.scaled_dot_product_attention = real
    return len(calls)


def check_graph_breaks(attention):
    model, x, y = tiny_model(attention, "auto", "cuda" if torch.cuda.is_available() else "cpu")
    explained = torch._dynamo.explain(model)(x, y)
    reasons = sorted({str(b.reason).splitlines()[0][:80] for b in explained.break_reasons})
    torch._dynamo.reset()
    return f"{explained.graph_count} graph(s), {explained.graph_break_count} break(s)" + (
        ": " + "; ".join(reasons) if reasons else ""
    )


if __name__ == "__main__":
    cli(main)
