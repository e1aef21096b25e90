"""Train a GPT: `python train.py [--preset=tiny|cpu|small|gpt2] [--key=value ...]`; or fine-tune one on a task
sequence: `python train.py --mode=continual --init_from=out/run --method=seekr` (seekr.py).

Design choices:
- One Config dataclass holds every setting; `--key=value` overrides are parsed by its field types, `--flag` alone
  means true. Presets are plain dicts applied before the overrides.
- With no flags: on CUDA the `small` preset; anywhere else the `cpu` preset (sized for ~5 minutes on 2 cores).
- On CUDA: bf16 autocast, TF32 matmuls, torch.compile, fused AdamW. Under `torchrun`, DDP: each rank runs
  grad_accum / world_size micro-steps, and all ranks draw the step's batch indices from one shared generator and
  take their own slice, so N processes see exactly the batches one process with grad_accum micro-steps would.
- The run folder holds config.json, log.jsonl (one JSON object per logged step), ckpt.pt and loss.png.
  ckpt.pt is written atomically and holds the model, optimizer, step, config and every RNG state, so a killed
  run resumes bit-exactly with --resume. Ctrl-C finishes the current step, saves, and exits.
- --budgets=b1,...: finished models along the way (schedules.py). wsd forks a decay branch per budget from a copy
  of the full training state and returns to it; wsd-s and cyclic decay inside the one run. Every log row carries
  `tokens`, the compute spent so far (branches included); a resumed run keeps exactly the rows logged before its
  checkpoint's `tokens`.
- --mode=continual hands the run to seekr.py: fine-tune --init_from on a task sequence with SEEKR or a baseline.
  Its defaults (CONTINUAL) replace the presets; the model's shape and tokenizer come from the checkpoint.
- Bad input (flags, data, checkpoints) raises ConfigError/DataError, printed as one line with exit code 2.
"""

import copy
import dataclasses
import difflib
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from attention import ConfigError, check_choice, make_attention
from data import TOKENIZERS, DataError, check_block, get_batch, get_tokenizer, load_meta, load_split, prepare
from model import GPT, GPTConfig, peak_flops
from schedules import DECAY_SHAPES, SCHEDULES, decay_len, make_schedule, schedule_problem


@dataclass
class Config:
    # run
    out_dir: str = "out/run"
    preset: str = ""
    resume: bool = False
    init_from: str = ""  # a checkpoint (or run folder) whose weights start this run
    seed: int = 1337
    # data
    dataset: str = "stdlib"
    tokenizer: str = "gpt2"
    data_dir: str = "data"
    # model (mirrors GPTConfig)
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    block_size: int = 256
    dropout: float = 0.0
    bias: bool = False
    attention: str = "standard"
    pos: str = "auto"  # rope; kerple for --attention=dape
    norm: str = "layernorm"
    dape_kernel: int = 3
    dape_channels: int = 32
    # optimisation
    batch_size: int = 32
    grad_accum: int = 1  # micro-steps per optimizer step, summed over all DDP ranks
    max_iters: int = 3000
    lr: float = 1e-3
    min_lr: float = 1e-4
    schedule: str = "cosine"
    warmup_iters: int = 100
    decay_frac: float = 0.2  # wsd / wsd-s: the decay's share of the run (of each budget, each cycle)
    decay_shape: str = "sqrt"
    budgets: str = ""  # "b1,b2,...,max_iters": steps at which a finished model is wanted (wsd, wsd-s, cyclic)
    rewarmup_iters: int = 0  # wsd-s: steps to climb back to the peak after each budget
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables
    # evaluation, logging, checkpoints
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    ckpt_interval: int = 250
    sample_tokens: int = 300  # text printed at the end of training; 0 for none
    # system
    device: str = "auto"  # auto, cpu, cuda, mps
    dtype: str = "auto"  # auto (bfloat16 on CUDA, else float32), float32, bfloat16, float16
    compile: str = "auto"  # auto (on for CUDA), true, false
    # continual learning (--mode=continual, seekr.py): fine-tune --init_from on a task sequence
    mode: str = "pretrain"  # pretrain, or continual
    tasks: str = "builtin"  # builtin (generated from --seed), or a folder in TRACE's layout: <task>/{train,test}.json
    task_order: str = ""  # a,b,c; default: by folder name (builtin: its own order)
    iters_per_task: int = 200
    method: str = "seekr"  # seqft, replay, der, lwf, seekr
    replay: float = 0.01  # fraction of each finished task's train set kept for replay (at least one record)
    replay_cycle: int = 0  # new-task steps per replay step; 0 = len(task batches) // len(replay batches)
    alpha: float = 0.5  # logit-distillation weight: (1 - alpha)·LM + alpha·LD (der, lwf, seekr)
    beta: float = 1000.0  # attention-distillation weight (seekr)
    seekr_layer_budget: int = 0  # layers kept by SEEKR's selection; 0 = 75% of layers
    seekr_head_budget: int = 0  # heads kept, inside those layers; 0 = 12.5% of all heads
    seekr_query_budget: int = 0  # random query rows distilled per record; 0 = all
    eval_records: int = 200  # test records per task scored after every task; 0 = all


PRESETS = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=64, tokenizer="bytes", batch_size=8, max_iters=50,
                 warmup_iters=5, eval_interval=25, eval_iters=4, log_interval=5, ckpt_interval=25, sample_tokens=50),
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=128, tokenizer="bytes", batch_size=16, max_iters=2250,
                lr=3e-3, min_lr=3e-5, schedule="wsd", warmup_iters=30, eval_interval=250, eval_iters=20,
                log_interval=10, ckpt_interval=250),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, tokenizer="gpt2", batch_size=32, max_iters=3000,
                  dropout=0.1, lr=1e-3, min_lr=1e-4, warmup_iters=100),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, tokenizer="gpt2", dataset="fineweb",
                 batch_size=16, grad_accum=32, max_iters=19073, lr=6e-4, min_lr=6e-5, warmup_iters=700,
                 eval_interval=500, eval_iters=40, ckpt_interval=1000),
}
CONTINUAL = dict(out_dir="out/continual", batch_size=16, lr=3e-4, log_interval=25)  # --mode=continual defaults
METHODS = ("seqft", "replay", "der", "lwf", "seekr")
CHOICES = dict(preset=("", *PRESETS), mode=("pretrain", "continual"), method=METHODS, schedule=SCHEDULES,
               decay_shape=DECAY_SHAPES, tokenizer=TOKENIZERS, device=("auto", "cpu", "cuda", "mps"),
               dtype=("auto", "float32", "bfloat16", "float16"), compile=("auto", "true", "false"))
MODEL_KEYS = [f.name for f in dataclasses.fields(GPTConfig) if f.name in Config.__dataclass_fields__]


# ----------------------------------------------------------------------------------------------------------------
# flags

def parse_value(key, text, typ):
    if typ is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ConfigError(f"--{key}={text} is not a boolean; use --{key}=true or --{key}=false")
    try:
        return typ(text)
    except ValueError:
        raise ConfigError(f"--{key}={text} is not {'an integer' if typ is int else 'a number'}") from None


def parse_flags(argv, config_cls=Config, choices=None):
    """argv -> dict of the fields set by flags, parsed by the field types. Unknown keys name the closest valid
    ones; values of the fields in choices (default: CHOICES) must be among the allowed ones."""
    fields = {f.name: f.type for f in dataclasses.fields(config_cls)}
    if "--help" in argv or "-h" in argv:
        print_help(config_cls)
        sys.exit(0)
    overrides = {}
    for arg in argv:
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; flags look like --key=value")
        key, _, text = arg[2:].partition("=")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3)
            raise ConfigError(f"unknown flag --{key}" + (f" (did you mean {', '.join('--' + c for c in close)}?)"
                                                         if close else "; see the Config dataclass in train.py"))
        if fields[key] is list:  # a list flag may repeat and holds comma-separated items: --run=a --run=b,c
            overrides[key] = overrides.get(key, []) + [item for item in text.split(",") if item]
        else:
            overrides[key] = parse_value(key, text if "=" in arg else "true", fields[key])
    for key, allowed in (CHOICES if choices is None else choices).items():
        if key in overrides:
            check_choice(key, overrides[key], allowed)
    return overrides


def print_help(config_cls):
    """Every flag with its default and the comment beside it in the dataclass's source."""
    import inspect
    comments = {}
    for line in inspect.getsource(config_cls).splitlines():
        name, _, rest = line.strip().partition(":")
        if "#" in rest:
            comments[name] = rest.split("#", 1)[1].strip()
    print(f"flags (--key=value; --flag alone means true), from {config_cls.__name__}:")
    for f in dataclasses.fields(config_cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        print(f"  --{f.name}={default}" + (f"  # {comments[f.name]}" if f.name in comments else ""))


def build_config(argv):
    """Config from the defaults, the preset (cpu when no CUDA and no flags, else small), then the flags."""
    overrides = parse_flags(argv)
    if overrides.get("mode") == "continual":  # the model's shape comes from --init_from, the rest from CONTINUAL
        cfg = Config(**{**(PRESETS[overrides["preset"]] if overrides.get("preset") else {}), **CONTINUAL, **overrides})
        return validate(cfg), overrides
    preset = overrides.get("preset") or ("small" if torch.cuda.is_available() or argv else "cpu")
    if not argv and preset == "cpu":
        print("no CUDA GPU found: training the 'cpu' preset (4 layers x 128, byte tokens, ~5 minutes on 2 cores); "
              "on a GPU this command trains the 'small' preset")
    cfg = Config(**{**PRESETS[preset], "preset": preset, **overrides})
    return validate(cfg), overrides


def validate(cfg):
    """Every choice and the model's shape, checked before anything touches the disk."""
    for key, allowed in CHOICES.items():
        check_choice(key, getattr(cfg, key), allowed)
    model_cfg = model_config(cfg, n_vocab=1)  # GPTConfig checks pos, norm, head sizes and resolves pos=auto
    make_attention(model_cfg, 0)  # and the attention type its own combinations (diff: an even n_head)
    cfg.pos = model_cfg.pos
    problem = schedule_problem(cfg.schedule, cfg.warmup_iters, cfg.max_iters, cfg.decay_frac,
                               budget_list(cfg) if cfg.budgets else [], cfg.rewarmup_iters)
    if problem:
        raise ConfigError(problem)
    return cfg


def budget_list(cfg):
    """--budgets as a list of steps; by default the one finished model at max_iters."""
    try:
        return [int(b) for b in cfg.budgets.split(",")] if cfg.budgets else [cfg.max_iters]
    except ValueError:
        raise ConfigError(f"--budgets={cfg.budgets} is not a comma-separated list of steps, e.g. "
                          f"--budgets={cfg.max_iters // 4},{cfg.max_iters // 2},{cfg.max_iters}") from None


# ----------------------------------------------------------------------------------------------------------------
# checkpoints and the run folder

def checkpoint_path(path):
    """A checkpoint file, or a run folder holding ckpt.pt."""
    p = Path(path)
    return p / "ckpt.pt" if p.is_dir() else p


def load_checkpoint(path, device="cpu"):
    p = checkpoint_path(path)
    if not p.is_file():
        raise ConfigError(f"no checkpoint at {p}")
    return torch.load(p, map_location=device, weights_only=True)


def save_atomic(obj, path):
    """torch.save to a temp file, then rename: a kill mid-write never leaves a half checkpoint."""
    tmp = Path(str(path) + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_log(out_dir):
    """The rows of log.jsonl; a last line cut short by a killed run is dropped."""
    path = Path(out_dir) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().split("\n")[:-1]] if path.exists() else []


def plot_losses(out_dir):
    """loss.png: train and val loss against tokens, redrawn from log.jsonl."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, cfg = read_log(out_dir), json.loads((Path(out_dir) / "config.json").read_text())
    tokens_per_iter = cfg["batch_size"] * cfg["block_size"] * cfg["grad_accum"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = [r for r in rows if "branch" not in r]  # the main branch; eval.py --mode=schedules draws the branches
    train = [(r["iter"] * tokens_per_iter / 1e6, r["loss"]) for r in rows if "loss" in r]
    val = [(r["iter"] * tokens_per_iter / 1e6, r["val_loss"]) for r in rows if "val_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train", alpha=0.7)
    if val:
        ax.plot(*zip(*val), "o-", label="val")
    ax.set_xlabel("tokens (millions)")
    ax.set_ylabel(f"loss (nats per {cfg['tokenizer']} token)")
    ax.set_title(f"{cfg['preset'] or 'custom'}: {cfg['n_layer']}x{cfg['n_embd']} {cfg['attention']}/{cfg['pos']}, "
                 f"{cfg['dataset']}, seed {cfg['seed']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "loss.png", dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# setup

def setup_device(device, dtype):
    """'auto'/'cuda'/... and 'auto'/'bfloat16'/... -> (device, dtype name, autocast context)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device=cuda but this torch sees no CUDA GPU; use --device=auto or --device=cpu")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device=mps but MPS is not available here; use --device=auto or --device=cpu")
    dtype = dtype if dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ctx = nullcontext() if dtype == "float32" else torch.autocast(device_type=device, dtype=getattr(torch, dtype))
    return device, dtype, ctx


def model_config(cfg, n_vocab):
    """GPTConfig for a run, the vocabulary padded to a multiple of 64 (faster matmuls; GPT-2: 50257 -> 50304)."""
    return GPTConfig(vocab_size=(n_vocab + 63) // 64 * 64, **{k: getattr(cfg, k) for k in MODEL_KEYS})


def adopt_model_shape(cfg, overrides, source_cfg, source):
    """--init_from: take the model's shape and tokenizer from the source run unless given as flags, and refuse
    flags that contradict the weights."""
    for key in MODEL_KEYS + ["tokenizer"]:
        if key not in overrides or (key == "pos" and overrides[key] == "auto"):
            setattr(cfg, key, source_cfg[key])
        elif overrides[key] != source_cfg[key] and key != "dropout":  # dropout may change between runs
            raise ConfigError(f"--init_from={source} holds a model with {key}={source_cfg[key]}, "
                              f"but this run asks for --{key}={overrides[key]}; drop the flag or use another checkpoint")


# ----------------------------------------------------------------------------------------------------------------
# training

def main(argv):
    cfg, overrides = build_config(argv)
    if cfg.mode == "continual":
        from seekr import continual  # seekr.py imports this file's helpers
        return continual(cfg, overrides)
    out = Path(cfg.out_dir)
    ddp = "RANK" in os.environ
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
    master = rank == 0

    ckpt = None
    if cfg.resume:
        if not (out / "ckpt.pt").exists():
            raise ConfigError(f"--resume but {out}/ckpt.pt does not exist; start without --resume")
        ckpt = load_checkpoint(out)
        cfg = validate(Config(**{**ckpt["config"], **overrides}))
    elif (out / "ckpt.pt").exists():
        raise ConfigError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out_dir")
    source = None
    if cfg.init_from and not cfg.resume:
        source = load_checkpoint(cfg.init_from)
        adopt_model_shape(cfg, overrides, source["config"], cfg.init_from)
        validate(cfg)
    if cfg.grad_accum % world:
        raise ConfigError(f"--grad_accum={cfg.grad_accum} is not divisible by the {world} DDP processes")

    device, dtype, autocast = setup_device(cfg.device, cfg.dtype)
    use_compile = cfg.compile == "true" or (cfg.compile == "auto" and device == "cuda")
    if ddp:
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed + rank)  # dropout differs per rank; the batch generator below is shared

    # data: rank 0 prepares, the others wait
    tokenizer = get_tokenizer(cfg.tokenizer)
    if master:
        folder = prepare(cfg.dataset, cfg.tokenizer, cfg.data_dir)
    if ddp:
        dist.barrier()
    folder = prepare(cfg.dataset, cfg.tokenizer, cfg.data_dir)
    meta = load_meta(folder)
    train_data, val_data = load_split(folder, "train"), load_split(folder, "val")
    check_block(train_data, cfg.block_size, "train", folder)
    check_block(val_data, cfg.block_size, "val", folder)
    bytes_per_token = meta["val_bytes"] / meta["val_tokens"]

    # model and optimizer
    model = raw_model = GPT(model_config(cfg, tokenizer.n_vocab)).to(device)  # model: compiled / DDP-wrapped below
    if source is not None:
        raw_model.load_state_dict(source["model"])
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2), device.split(":")[0])
    batch_gen = torch.Generator().manual_seed(cfg.seed)

    def training_state(it):
        """Everything the next step depends on; loading it continues the run bit-exactly."""
        rng = {"batch": batch_gen.get_state(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state() if device.startswith("cuda") else None}
        return {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "iter": it, "rng": rng}

    def load_training_state(state):
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        batch_gen.set_state(state["rng"]["batch"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and device.startswith("cuda"):
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        return state["iter"]

    # budgets: finished models wanted along the way; wsd forks a decay branch for each but the last
    budgets = budget_list(cfg)
    forks = {b - decay_len(b, cfg.decay_frac): b for b in budgets[:-1]} if cfg.schedule == "wsd" else {}
    it, branch, aside, tokens = 0, None, None, 0  # step, wsd branch being decayed, main state set aside, compute
    if ckpt is not None:
        it, branch, aside, tokens = load_training_state(ckpt), ckpt["branch"], ckpt["aside"], ckpt["tokens"]
    if use_compile:
        model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[int(os.environ["LOCAL_RANK"])] if device.startswith("cuda") else None)
    scaler = torch.amp.GradScaler(enabled=dtype == "float16")
    lr_at = make_schedule(cfg.schedule, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.max_iters,
                          cfg.decay_frac, cfg.decay_shape, budgets, cfg.rewarmup_iters)
    accum = cfg.grad_accum // world
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.grad_accum
    peak = peak_flops(torch.device(device))

    if master:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        kept = [r for r in read_log(out) if r["tokens"] <= tokens]  # rows logged after the checkpoint are redone
        (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
        print(f"{raw_model.num_params() / 1e6:.2f}M parameters | {device} {dtype}{' compiled' if use_compile else ''}"
              f"{f' | DDP x{world}' if ddp else ''} | {tokens_per_iter:,} tokens/iter | data {folder} "
              f"({meta['train_tokens']:,} train tokens) | unigram baseline {meta['unigram_bpb']:.3f} bits/byte"
              + (f" | resuming at iter {it}" + (f" in the decay branch of budget {branch}" if branch else "")
                 if tokens else ""))

    def log(row, text):
        if master:
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(text)

    @torch.no_grad()
    def evaluate():
        """Mean val loss over eval_iters fixed batches (the same windows at every eval), split across ranks."""
        model.eval()
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        total = torch.zeros(2, device=device)
        for k in range(cfg.eval_iters):
            x, y = get_batch(val_data, cfg.batch_size, cfg.block_size, gen)
            if k % world == rank:
                with autocast:
                    total += torch.stack([raw_model(x.to(device), y.to(device))[1].float(), torch.ones((), device=device)])
        if ddp:
            dist.all_reduce(total)
        model.train()
        return (total[0] / total[1]).item()

    def save(it):
        if master:
            save_atomic({**training_state(it), "model_config": dataclasses.asdict(raw_model.config),
                         "config": dataclasses.asdict(cfg), "branch": branch, "aside": aside, "tokens": tokens},
                        out / "ckpt.pt")

    def finish_budget(b):
        """A finished model: evaluate it, save budget_<b>.pt (when --budgets is set), log its compute."""
        val_loss = evaluate()
        bpb = val_loss / math.log(2) / bytes_per_token
        if master and cfg.budgets:
            save_atomic({"model": raw_model.state_dict(), "model_config": dataclasses.asdict(raw_model.config),
                         "config": dataclasses.asdict(cfg), "iter": b}, out / f"budget_{b}.pt")
        log({"iter": b, "budget": b, "val_loss": val_loss, "val_bpb": bpb, "tokens": tokens,
             **({"branch": branch} if branch else {})},
            f"budget {b} finished: val loss {val_loss:.4f}, {bpb:.3f} bits/byte (unigram baseline "
            f"{meta['unigram_bpb']:.3f}), {tokens:,} tokens of compute")

    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))  # finish the step, save, exit

    t_last, n_timed, row = time.time(), 0, {}
    while branch or it < cfg.max_iters:
        lr = lr_at(it, branch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if it % cfg.eval_interval == 0 and branch is None:
            val_loss = evaluate()
            row = {"val_loss": val_loss, "val_bpb": val_loss / math.log(2) / bytes_per_token}
            if master:
                print(f"eval {it}: val loss {val_loss:.4f}, {row['val_bpb']:.3f} bits/byte")

        # one optimizer step: the whole step's batch indices come from the shared generator, this rank takes its slice
        x_all, y_all = get_batch(train_data, cfg.batch_size * cfg.grad_accum, cfg.block_size, batch_gen)
        step_loss = torch.zeros((), device=device)
        for micro in range(accum):
            mine = slice((rank * accum + micro) * cfg.batch_size, (rank * accum + micro + 1) * cfg.batch_size)
            x, y = x_all[mine].to(device, non_blocking=True), y_all[mine].to(device, non_blocking=True)
            if ddp:
                model.require_backward_grad_sync = micro == accum - 1  # all-reduce gradients once per step
            with autocast:
                _, loss = model(x, y)
            step_loss += loss.detach() / accum
            scaler.scale(loss / accum).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        it, n_timed, tokens = it + 1, n_timed + 1, tokens + tokens_per_iter

        if (it - 1) % cfg.log_interval == 0 or it == cfg.max_iters or row:
            if ddp:
                dist.all_reduce(step_loss)
                step_loss /= world
            dt = (time.time() - t_last) / n_timed
            tok_s, mfu = tokens_per_iter / dt, raw_model.estimate_mfu(tokens_per_iter / dt / world, peak)  # per GPU
            eta = dt * (cfg.max_iters - it + sum(decay_len(b, cfg.decay_frac) for b in forks.values() if b > it))
            row = {"iter": it - 1, "loss": step_loss.item(), "lr": lr, **row, "ms": 1000 * dt, "tokens_per_sec": tok_s,
                   "tokens": tokens, **({"branch": branch} if branch else {})}
            log(row, (f"[branch {branch}] " if branch else "") +
                f"iter {it - 1}/{cfg.max_iters} | loss {row['loss']:.4f} | lr {lr:.2e} | {1000 * dt:.1f} ms | "
                f"{tok_s:,.0f} tok/s" + (f" | mfu {100 * mfu:.1f}%" if mfu else "") +
                f" | eta {int(eta // 60)}m{int(eta % 60):02d}s")
            t_last, n_timed, row = time.time(), 0, {}
        if branch and it >= branch:  # the decay branch is done: keep its model, return to the main branch
            finish_budget(it)
            it, branch, aside = load_training_state(aside), None, None
        elif branch is None:
            if it in budgets and (cfg.schedule != "wsd" or it == cfg.max_iters):
                finish_budget(it)
            if it in forks:  # wsd: set the main branch aside and decay towards budget forks[it]
                aside, branch = copy.deepcopy(training_state(it)), forks[it]
        if ddp:  # every rank stops at the same step when any of them got Ctrl-C
            flag = torch.tensor(float(bool(stop)), device=device)
            dist.all_reduce(flag)
            stop[:] = [True] if flag.item() else []
        if stop:
            save(it)
            if master:
                print(f"interrupted: saved {out}/ckpt.pt at iter {it}; continue with --out_dir={out} --resume")
            break
        if cfg.ckpt_interval and it % cfg.ckpt_interval == 0 and (branch or it < cfg.max_iters):
            save(it)

    if not stop:
        save(it)
    if master:
        plot_losses(out)
        if cfg.sample_tokens and not stop:
            start = torch.tensor([[tokenizer.eot]], device=device)
            with autocast:
                ids = raw_model.generate(start, cfg.sample_tokens, temperature=0.8, top_k=200)[0, 1:].tolist()
            print("sample:\n" + tokenizer.decode([t for t in ids if t < tokenizer.n_vocab]))
    if ddp:
        dist.destroy_process_group()


def cli(main):
    """Run main(sys.argv[1:]): bad input ends as one line on stderr and exit code 2; bugs still raise."""
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli(main)
