"""Train a GPT: `python train.py [--preset=tiny|cpu|small|gpt2] [--key=value ...]`; or fine-tune one on a task
sequence: `python train.py --mode=continual --init_from=out/run --method=seekr` (seekr.py).

main() is a short story: build the config, set up the process (device, DDP), load the data, build the model and
optimizer (a Run), train, finish. The loop itself (train()) reads top to bottom, as nanoGPT's does.

Design choices:
- One Config dataclass holds every setting (the continual-learning ones come from seekr.ContinualConfig);
  `--key=value` overrides are parsed by its field types, `--flag` alone means true. Presets are plain dicts
  applied before the overrides. Config.__post_init__ holds every rule, so a config is checked wherever it is built.
- With no flags: on CUDA the `small` preset; anywhere else the `cpu` preset (sized for ~5 minutes on 2 cores).
- On CUDA: bf16 autocast, TF32 matmuls, torch.compile, fused AdamW. Under `torchrun`, DDP: each rank runs
  grad_accum / world_size micro-steps, and all ranks draw the step's batch indices from one shared generator and
  take their own slice, so N processes see exactly the batches one process with grad_accum micro-steps would.
- The run folder holds config.json, log.jsonl (one JSON object per logged step), ckpt.pt and loss.png.
  ckpt.pt is written atomically and holds the model, optimizer, step, config and every RNG state, so a killed
  run resumes bit-exactly with --resume. Ctrl-C finishes the current step, saves, and exits.
- --budgets=b1,...: compute budgets, the steps at which a finished model is wanted (schedules.py). wsd forks a
  decay branch per budget from a copy of the full training state and returns to it; wsd-s and cyclic decay inside
  the one run. Every log row carries `tokens`, the compute spent so far (branches included); a resumed run keeps
  exactly the rows logged before its checkpoint's `tokens`.
- --dataset=mqar (multi-query associative recall, data.MQAR) is generated batch by batch from the same generators
  (train: the run's, which the checkpoint saves; val: evaluate()'s fixed one), and its evals report recall accuracy
  on the answers (val_acc) where a text corpus reports bits per byte.
- --mode=continual hands the run to seekr.continual: fine-tune --init_from on a task sequence with SEEKR or a
  baseline. Its defaults (seekr.CONTINUAL_DEFAULTS) replace the presets; the model's shape and tokenizer come from
  the checkpoint.
- Bad input (flags, data, checkpoints) raises ConfigError/DataError, printed as one line with exit code 2.
"""

import copy
import dataclasses
import gc
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import seekr
from data import (
    TOKENIZERS,
    answer_accuracy,
    bits_per_byte,
    check_block,
    corpus_folder,
    get_batch,
    get_tokenizer,
    is_prepared,
    load_meta,
    load_split,
    mqar_task,
    prepare,
)
from model import GPT, model_config, peak_flops, shape_keys
from plumbing import (
    ConfigError,
    append_log,
    check_choice,
    check_ranges,
    cli,
    eta_text,
    lock_run_folder,
    open_run_folder,
    parse_flags,
    print_help,
    pyplot,
    read_log,
    restore_rng,
    resume_checkpoint,
    rng_state,
    save_atomic,
    setup_device,
    start_run,
    tokens_per_step,
)
from schedules import (
    DECAY_OF,
    DECAY_SHAPES,
    SCHEDULES,
    cycle_decay_len,
    decay_len,
    make_schedule,
    schedule_problem,
)


@dataclass
class Config(seekr.ContinualConfig):
    # run
    out_dir: str = "out/run"
    preset: str = ""
    resume: bool = False
    init_from: str = ""  # a checkpoint (or run folder) whose weights start this run
    seed: int = 1337
    mode: str = (
        "pretrain"  # pretrain, or continual (fine-tune --init_from on a task sequence: seekr.py)
    )
    # data
    dataset: str = (
        "stdlib"  # stdlib, text:PATH, shakespeare, fineweb[:N]; or mqar[:pairs=N,keys=K], generated
    )
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
    dape_q_chunk: int = (
        0  # DAPE V2 query rows per chunk in training (0: all): the lower triangle only
    )
    diff_subln: bool = True  # diff's per-head RMSNorm (eq. 3); --diff_subln=false is the ablation
    activation_checkpointing: bool = (
        False  # recompute each block in the backward pass: for long blocks (DAPE)
    )
    # optimisation
    batch_size: int = 32
    grad_accum: int = 1  # micro-steps per optimizer step, summed over all DDP ranks
    max_iters: int = 3000
    lr: float = 1e-3
    min_lr: float = 1e-4
    schedule: str = "cosine"
    warmup_iters: int = 100
    decay_frac: float = (
        0.2  # wsd / wsd-s: the decay's share of the run (of each budget, each cycle)
    )
    decay_shape: str = "sqrt"
    decay_of: str = (
        "cycle"  # wsd-s: decay over decay_frac of each cycle, or of the whole budget (as wsd does)
    )
    budgets: str = (
        ""  # "b1,b2,...,max_iters": compute budgets, steps at which a finished model is wanted
    )
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
    dtype: str = "auto"  # auto (bfloat16 on CUDA >= sm80, float16 + loss scaling on older GPUs, else float32)
    compile: str = "auto"  # auto (on for CUDA), true, false
    peak_tflops: float = (
        0.0  # the GPU's dense bf16 peak for MFU when model.PEAK_TFLOPS does not know its name
    )

    def __post_init__(self):
        """Every rule of a run's config, checked before anything touches the disk."""
        for key, allowed in CHOICES.items():
            check_choice(key, getattr(self, key), allowed)
        check_ranges(self, RANGES)
        if self.min_lr > self.lr:
            raise ConfigError(
                f"--min_lr={self.min_lr} is above --lr={self.lr}; the floor must not exceed the peak"
            )
        self.pos = model_config(
            self, n_vocab=1
        ).pos  # GPTConfig checks the model's shape and resolves pos=auto
        problem = schedule_problem(
            self.schedule,
            self.warmup_iters,
            self.max_iters,
            self.decay_frac,
            compute_budgets(self) if self.budgets else [],
            self.rewarmup_iters,
            self.decay_of,
        )
        if problem:
            raise ConfigError(problem)
        if self.mode == "continual":
            seekr.check_continual(self)
        elif task := mqar_task(
            self.dataset
        ):  # the pairs and their queries must fit a block, the ids the vocabulary
            task.check(self.block_size, get_tokenizer(self.tokenizer).n_vocab)
        else:
            corpus_folder(
                self.dataset, self.tokenizer, self.data_dir
            )  # refuses an unknown name, fineweb without gpt2


PRESETS = {
    "tiny": dict(
        n_layer=2,
        n_head=2,
        n_embd=64,
        block_size=64,
        tokenizer="bytes",
        batch_size=8,
        max_iters=50,
        warmup_iters=5,
        eval_interval=25,
        eval_iters=4,
        log_interval=5,
        ckpt_interval=25,
        sample_tokens=50,
    ),
    "cpu": dict(
        n_layer=4,
        n_head=4,
        n_embd=128,
        block_size=128,
        tokenizer="bytes",
        batch_size=16,
        max_iters=2250,
        lr=3e-3,
        min_lr=3e-5,
        schedule="wsd",
        warmup_iters=30,
        eval_interval=250,
        eval_iters=20,
        log_interval=10,
        ckpt_interval=250,
    ),
    "small": dict(
        n_layer=6,
        n_head=6,
        n_embd=384,
        block_size=256,
        tokenizer="gpt2",
        batch_size=32,
        max_iters=3000,
        dropout=0.1,
        lr=1e-3,
        min_lr=1e-4,
        warmup_iters=100,
    ),
    "gpt2": dict(
        n_layer=12,
        n_head=12,
        n_embd=768,
        block_size=1024,
        tokenizer="gpt2",
        dataset="fineweb:100",
        batch_size=16,
        grad_accum=32,
        max_iters=19073,
        lr=6e-4,
        min_lr=6e-5,
        warmup_iters=700,
        eval_interval=500,
        eval_iters=40,
        ckpt_interval=1000,
    ),  # fineweb:100: 10B tokens, one pass
}
CHOICES = dict(
    preset=("", *PRESETS),
    mode=("pretrain", "continual"),
    method=seekr.METHODS,
    schedule=SCHEDULES,
    decay_shape=DECAY_SHAPES,
    decay_of=DECAY_OF,
    tokenizer=TOKENIZERS,
    device=("auto", "cpu", "cuda", "mps"),
    dtype=("auto", "float32", "bfloat16", "float16"),
    compile=("auto", "true", "false"),
)
RANGES = dict(  # every numeric flag's interval ([ includes the end, ( excludes it); the model's are GPTConfig's
    seed="[0, inf)",
    batch_size="[1, inf)",
    grad_accum="[1, inf)",
    max_iters="[1, inf)",
    lr="(0, inf)",
    min_lr="[0, inf)",
    warmup_iters="[0, inf)",
    decay_frac="[0, 1]",
    rewarmup_iters="[0, inf)",
    weight_decay="[0, inf)",
    beta1="[0, 1)",
    beta2="[0, 1)",
    grad_clip="[0, inf)",
    eval_interval="[1, inf)",
    eval_iters="[1, inf)",
    log_interval="[1, inf)",
    ckpt_interval="[0, inf)",
    sample_tokens="[0, inf)",
    peak_tflops="[0, inf)",
    **seekr.RANGES,
)


def build_config(argv):
    """-> (cfg, the flags, the checkpoint --resume continues or None). Config from the defaults, the preset (given,
    else small on CUDA, cpu without) or --mode=continual's defaults, then the flags; with --resume, from the
    checkpoint's config, then the flags."""
    if "--help" in argv or "-h" in argv:
        preset, _ = no_flag_preset([a for a in argv if a.startswith("--preset=")])
        print_help(
            Config,
            {**PRESETS[preset], "preset": preset},
            f" (defaults: what --preset={preset} runs; a flag overrides it)",
        )
        sys.exit(0)
    overrides = parse_flags(argv, Config, CHOICES)
    if (
        overrides.get("mode") == "continual"
    ):  # the model's shape comes from --init_from, the rest from seekr's
        base = {
            **(PRESETS[overrides["preset"]] if overrides.get("preset") else {}),
            **seekr.CONTINUAL_DEFAULTS,
        }
    else:
        preset, announce = no_flag_preset(argv)
        if announce and not overrides.get("resume"):
            print(
                f"no CUDA GPU found: training the 'cpu' preset (4 layers x 128, byte tokens, its "
                f"{PRESETS['cpu']['max_iters']} steps ~5 minutes on 2 cores); on a GPU this command trains the "
                "'small' preset"
            )
        base = {**PRESETS[preset], "preset": preset}
    saved = None
    if overrides.get("resume"):  # the checkpoint's config first, then the flags, then the rules
        out = overrides.get("out_dir", base.get("out_dir", Config.out_dir))
        saved = resume_checkpoint(out)
        base = {k: v for k, v in saved["config"].items() if k in Config.__dataclass_fields__}
        theirs = base.get("dataset", Config.dataset)
        if (
            overrides.get("dataset", theirs) != theirs
        ):  # its batches continue that data, from the saved position
            raise ConfigError(
                f"--resume continues {out}/ckpt.pt on --dataset={theirs}, but this run asks "
                f"for --dataset={overrides['dataset']}; drop --dataset to continue it, or train its "
                f"weights on that data in a new run: --init_from={out} with another --out_dir"
            )
    return Config(**{**base, **overrides}), overrides, saved


def no_flag_preset(argv):
    """(the preset argv asks for, or small on CUDA, else cpu; whether to say so: when cpu was picked for you)."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("--preset=")]
    if given and given[-1] in PRESETS:
        return given[-1], False
    preset = (
        "small" if torch.cuda.is_available() else "cpu"
    )  # other flags too: `--max_iters=100` on a laptop
    return preset, preset == "cpu"


def compute_budgets(cfg):
    """--budgets as a list of steps; by default the one finished model at max_iters."""
    try:
        return [int(b) for b in cfg.budgets.split(",")] if cfg.budgets else [cfg.max_iters]
    except ValueError:
        raise ConfigError(
            f"--budgets={cfg.budgets} is not a comma-separated list of steps, e.g. "
            f"--budgets={cfg.max_iters // 4},{cfg.max_iters // 2},{cfg.max_iters}"
        ) from None


# ----------------------------------------------------------------------------------------------------------------
# set up: the process, the data


@dataclass
class Process:
    """Where this process runs: its DDP rank, device and precision."""

    ddp: bool
    rank: int
    world: int
    device: str
    dtype: str
    autocast: object
    compile: bool

    @property
    def master(self):
        return self.rank == 0


def set_up(cfg):
    """Device, precision, this process's DDP rank (under torchrun) and the torch seed. The process group comes
    after the data (join_process_group): a first download of FineWeb must not time out a collective."""
    ddp = "RANK" in os.environ
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
    if cfg.grad_accum % world:
        raise ConfigError(
            f"--grad_accum={cfg.grad_accum} is not divisible by the {world} DDP processes"
        )
    device, dtype, autocast = setup_device(cfg.device, cfg.dtype)
    use_compile = cfg.compile == "true" or (cfg.compile == "auto" and device == "cuda")
    if ddp and device == "cuda":
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed + rank)  # dropout differs per rank; the batch generator is shared
    return Process(ddp, rank, world, device, dtype, autocast, use_compile)


def join_process_group(proc):
    if proc.ddp:
        dist.init_process_group(backend="nccl" if proc.device.startswith("cuda") else "gloo")


@dataclass
class Data:
    tokenizer: object
    folder: Path  # None for mqar
    meta: dict  # the corpus's meta.json (token and byte counts, unigram baseline); None for mqar
    train: object  # np.memmap of uint16 tokens, or the MQAR task that generates the batches
    val: object
    task: object = None  # the MQAR task (train and val are it); None for a text corpus


def load_data(cfg, proc):
    """Prepare the corpus once (rank 0 prepares, the others wait for its files) and map its splits; mqar is
    generated batch by batch (train from the run's batch generator, val from evaluate()'s), nothing on disk."""
    tokenizer = get_tokenizer(cfg.tokenizer)
    task = mqar_task(cfg.dataset)
    if task:
        return Data(tokenizer, None, None, task, task, task)
    if proc.master:
        prepare(cfg.dataset, cfg.tokenizer, cfg.data_dir)
    t0 = time.time()
    while not is_prepared(cfg.dataset, cfg.tokenizer, cfg.data_dir):
        time.sleep(1)
        if int(time.time() - t0) % 300 == 0:
            print(
                f"rank {proc.rank}: waiting for rank 0 to prepare {cfg.dataset} ({int(time.time() - t0)} s)"
            )
    folder = prepare(cfg.dataset, cfg.tokenizer, cfg.data_dir)
    data = Data(
        tokenizer, folder, load_meta(folder), load_split(folder, "train"), load_split(folder, "val")
    )
    check_block(data.train, cfg.block_size, "train", folder)
    check_block(data.val, cfg.block_size, "val", folder)
    return data


# ----------------------------------------------------------------------------------------------------------------
# the model, the optimizer and everything the next step depends on


class Run:
    """One training run's state: the model (raw, and compiled / DDP-wrapped for the steps), the optimizer, the
    batch generator, the step, the wsd decay branch being run (its budget; None on the main branch), the main
    branch's state set aside meanwhile, and the compute spent so far in tokens (branches included)."""

    def __init__(self, cfg, proc, data, source=None, saved=None):
        self.raw = self.model = GPT(model_config(cfg, data.tokenizer.n_vocab)).to(proc.device)
        if source is not None:
            self.raw.load_weights(source["model"], cfg.init_from)
        self.optimizer = self.raw.configure_optimizers(
            cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2), proc.device.split(":")[0]
        )
        self.batch_gen = torch.Generator().manual_seed(cfg.seed)
        self.device = proc.device
        self.it, self.branch, self.aside, self.tokens = 0, None, None, 0
        if saved is not None:
            self.restore(saved)
            self.branch, self.aside, self.tokens = saved["branch"], saved["aside"], saved["tokens"]
        if proc.compile:
            self.model = torch.compile(self.model)
        if proc.ddp:
            local = [int(os.environ["LOCAL_RANK"])] if proc.device.startswith("cuda") else None
            self.model = DDP(self.model, device_ids=local)
        self.scaler = torch.amp.GradScaler(enabled=proc.dtype == "float16")

    def snapshot(self):
        """Everything the next step depends on; restore() of it continues the run bit-exactly."""
        return {
            "model": self.raw.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iter": self.it,
            "rng": rng_state(self.device, batch=self.batch_gen),
        }

    def restore(self, state):
        self.raw.load_weights(state["model"], "the checkpoint being resumed")
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], self.device, batch=self.batch_gen)
        self.it = state["iter"]


@torch.no_grad()
def evaluate(cfg, proc, data, run):
    """The val row: the mean loss over eval_iters fixed batches (the same windows, or the same generated sequences,
    at every eval), split across ranks; with it bits per byte of text, or mqar's recall accuracy (val_acc)."""
    run.model.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    total = torch.zeros(3, device=proc.device)  # loss, batches, accuracy (summed over batches)
    for k in range(cfg.eval_iters):
        x, y = get_batch(data.val, cfg.batch_size, cfg.block_size, gen)
        if k % proc.world == proc.rank:
            y = y.to(proc.device)
            with proc.autocast:
                logits, loss = run.raw(x.to(proc.device), y)
            right = answer_accuracy(logits, y) if data.task else torch.zeros((), device=proc.device)
            # every batch holds batch_size·N answers, so the mean of the batches' accuracies is the whole's
            total += torch.stack([loss.float(), torch.ones((), device=proc.device), right])
    if proc.ddp:
        dist.all_reduce(total)
    run.model.train()
    val_loss = (total[0] / total[1]).item()
    if data.task:
        return {"val_loss": val_loss, "val_acc": (total[2] / total[1]).item()}
    return {"val_loss": val_loss, "val_bpb": bits_per_byte(val_loss, data.meta)}


def val_text(data, row):
    """An eval row as text: 'val loss 1.2345, 1.234 bits/byte' or '..., recall accuracy 0.874 (chance 0.125)'."""
    if data.task:
        return f"val loss {row['val_loss']:.4f}, {data.task.recall_text(row['val_acc'])}"
    return f"val loss {row['val_loss']:.4f}, {row['val_bpb']:.3f} bits/byte"


def save(cfg, proc, run):
    if proc.master:
        save_atomic(
            {
                **run.snapshot(),
                "model_config": dataclasses.asdict(run.raw.config),
                "config": dataclasses.asdict(cfg),
                "branch": run.branch,
                "aside": run.aside,
                "tokens": run.tokens,
            },
            Path(cfg.out_dir) / "ckpt.pt",
        )


def log(proc, cfg, row, text):
    if proc.master:
        append_log(cfg.out_dir, row)
        print(text)


def finish_budget(cfg, proc, data, run, b):
    """A finished model: evaluate it, save budget_<b>.pt (when --budgets is set), log its compute."""
    val = evaluate(cfg, proc, data, run)
    if proc.master and cfg.budgets:
        save_atomic(
            {
                "model": run.raw.state_dict(),
                "model_config": dataclasses.asdict(run.raw.config),
                "config": dataclasses.asdict(cfg),
                "iter": b,
            },
            Path(cfg.out_dir) / f"budget_{b}.pt",
        )
    baseline = "" if data.task else f" (unigram baseline {data.meta['unigram_bpb']:.3f})"
    log(
        proc,
        cfg,
        {
            "iter": b,
            "budget": b,
            **val,
            "tokens": run.tokens,
            **({"branch": run.branch} if run.branch else {}),
        },
        f"budget {b} finished: {val_text(data, val)}{baseline}, {run.tokens:,} tokens of compute",
    )


# ----------------------------------------------------------------------------------------------------------------
# training


def main(argv):
    cfg, overrides, saved = build_config(argv)
    if cfg.mode == "continual":
        return seekr.continual(cfg, overrides, saved)
    cfg, saved, source = start_run(cfg, overrides, saved, shape_keys(cfg) + ["tokenizer"])
    proc = set_up(cfg)
    release = (
        lock_run_folder(cfg.out_dir, fresh=saved is None)
        if proc.master  # one live run per out_dir
        else (lambda: None)
    )
    data = load_data(cfg, proc)
    join_process_group(proc)
    run = Run(cfg, proc, data, source, saved)
    del source, saved
    if proc.master:
        open_run_folder(
            cfg.out_dir, cfg, keep=lambda row: row["tokens"] <= run.tokens
        )  # later rows are redone
        print(header(cfg, proc, data, run))
    stopped = train(cfg, proc, data, run)
    finish(cfg, proc, data, run, stopped)
    release()


def header(cfg, proc, data, run):
    resuming = (
        (
            f" | resuming at iter {run.it}"
            + (f" in the decay branch of budget {run.branch}" if run.branch else "")
        )
        if run.tokens
        else ""
    )
    what = (
        f"data {data.task.name} (generated) | chance {data.task.chance:.3f}"
        if data.task
        else f"data {data.folder} ({data.meta['train_tokens']:,} train tokens) | unigram baseline "
        f"{data.meta['unigram_bpb']:.3f} bits/byte"
    )
    return (
        f"{run.raw.num_params() / 1e6:.2f}M parameters | {proc.device} {proc.dtype}"
        f"{' compiled' if proc.compile else ''}{f' | DDP x{proc.world}' if proc.ddp else ''} | "
        f"{tokens_per_step(cfg):,} tokens/iter | {what}{resuming}"
    )


def train(cfg, proc, data, run):
    """The training loop, until max_iters (and the last wsd decay branch) or Ctrl-C. -> whether Ctrl-C stopped it."""
    budgets = compute_budgets(cfg)
    forks = (
        {b - decay_len(b, cfg.decay_frac): b for b in budgets[:-1]} if cfg.schedule == "wsd" else {}
    )
    lr_at = make_schedule(
        cfg.schedule,
        cfg.lr,
        cfg.min_lr,
        cfg.warmup_iters,
        cfg.max_iters,
        cfg.decay_frac,
        cfg.decay_shape,
        budgets,
        cfg.rewarmup_iters,
        cfg.decay_of,
    )
    accum = cfg.grad_accum // proc.world
    tokens_per_iter = tokens_per_step(cfg)
    peak = cfg.peak_tflops * 1e12 or peak_flops(torch.device(proc.device))
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))  # finish the step, save, exit

    t_start, steps_done, t_first = (
        time.time(),
        0,
        0.0,
    )  # this session's start, steps and first step, for the ETA
    t_last, n_timed, row = time.time(), 0, {}
    while run.branch or run.it < cfg.max_iters:
        lr = lr_at(run.it, run.branch)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        if run.it % cfg.eval_interval == 0 and run.branch is None:
            row = evaluate(cfg, proc, data, run)
            if proc.master:
                print(f"eval {run.it}: {val_text(data, row)}")

        # one optimizer step: the whole step's batch starts come from the shared generator, this rank builds its slice
        mine = slice(proc.rank * accum * cfg.batch_size, (proc.rank + 1) * accum * cfg.batch_size)
        xs, ys = get_batch(
            data.train, cfg.batch_size * cfg.grad_accum, cfg.block_size, run.batch_gen, mine
        )
        if proc.device.startswith("cuda"):  # pinned: the copies below overlap with compute
            xs, ys = xs.pin_memory(), ys.pin_memory()
        step_loss = torch.zeros((), device=proc.device)
        for micro in range(accum):
            x = xs[micro * cfg.batch_size : (micro + 1) * cfg.batch_size].to(
                proc.device, non_blocking=True
            )
            y = ys[micro * cfg.batch_size : (micro + 1) * cfg.batch_size].to(
                proc.device, non_blocking=True
            )
            if proc.ddp:
                run.model.require_backward_grad_sync = (
                    micro == accum - 1
                )  # all-reduce gradients once per step
            with proc.autocast:
                _, loss = run.model(x, y)
            step_loss += loss.detach() / accum
            run.scaler.scale(loss / accum).backward()
        if cfg.grad_clip > 0:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
        run.it, n_timed, run.tokens = run.it + 1, n_timed + 1, run.tokens + tokens_per_iter
        steps_done += 1
        if (
            steps_done == 1
        ):  # it holds the compile, the first allocations and the first eval (CPU time)
            t_first = time.time() - t_start

        if (run.it - 1) % cfg.log_interval == 0 or run.it == cfg.max_iters or row:
            if proc.ddp:
                dist.all_reduce(step_loss)
                step_loss /= proc.world
            row = {
                "iter": run.it - 1,
                "loss": step_loss.item(),
                "lr": lr,
                **row,
            }  # .item() waits for the GPU
            dt = (
                time.time() - t_last
            ) / n_timed  # so the time is read after the steps really finished
            left = (
                cfg.max_iters
                - run.it
                + sum(decay_len(b, cfg.decay_frac) for b in forks.values() if b > run.it)
            )
            progress(
                cfg,
                proc,
                run,
                row,
                dt,
                eta_text(time.time() - t_start, steps_done, left, t_first),
                peak,
            )
            t_last, n_timed, row = time.time(), 0, {}
        finish_or_fork(cfg, proc, data, run, budgets, forks)
        if proc.ddp:  # every rank stops at the same step when any of them got Ctrl-C
            flag = torch.tensor(float(bool(stop)), device=proc.device)
            dist.all_reduce(flag)
            stop[:] = [True] if flag.item() else []
        if stop:
            save(cfg, proc, run)
            if proc.master:
                print(
                    f"interrupted: saved {cfg.out_dir}/ckpt.pt at iter {run.it}; continue with "
                    f"--out_dir={cfg.out_dir} --resume"
                )
            return True
        if (
            cfg.ckpt_interval
            and run.it % cfg.ckpt_interval == 0
            and (run.branch or run.it < cfg.max_iters)
        ):
            save(cfg, proc, run)
    return False


def finish_or_fork(cfg, proc, data, run, budgets, forks):
    """After a step: a finished model at a budget; wsd: the end of a decay branch (back to the main branch) or the
    start of one (the main branch set aside)."""
    if (
        run.branch and run.it >= run.branch
    ):  # the decay branch is done: keep its model, return to the main branch
        finish_budget(cfg, proc, data, run, run.it)
        run.restore(run.aside)
        run.branch, run.aside = None, None
    elif run.branch is None:
        if run.it in budgets and (cfg.schedule != "wsd" or run.it == cfg.max_iters):
            finish_budget(cfg, proc, data, run, run.it)
        if run.it in forks:  # wsd: set the main branch aside and decay towards budget forks[it]
            run.aside, run.branch = copy.deepcopy(run.snapshot()), forks[run.it]


def progress(cfg, proc, run, row, dt, eta, peak):
    """Log a training row (with speed and compute) and print its progress line."""
    tokens_per_iter = tokens_per_step(cfg)
    tok_s, mfu = (
        tokens_per_iter / dt,
        run.raw.estimate_mfu(tokens_per_iter / dt / proc.world, peak),
    )  # per GPU
    row = {
        **row,
        "ms": 1000 * dt,
        "tokens_per_sec": tok_s,
        "tokens": run.tokens,
        **({"branch": run.branch} if run.branch else {}),
    }
    log(
        proc,
        cfg,
        row,
        (f"[branch {run.branch}] " if run.branch else "")
        + f"iter {row['iter']}/{cfg.max_iters} | loss {row['loss']:.4f} | lr {row['lr']:.2e} | {1000 * dt:.1f} ms | "
        f"{tok_s:,.0f} tok/s" + (f" | mfu {100 * mfu:.1f}%" if mfu else "") + f" | {eta}",
    )


def finish(cfg, proc, data, run, stopped):
    """The last checkpoint, loss.png and a text sample (rank 0); leave the process group."""
    if not stopped:
        save(cfg, proc, run)
    if proc.master:
        plot_losses(cfg.out_dir)
        if cfg.sample_tokens and not stopped and not data.task:  # mqar's ids are not text
            tok = data.tokenizer
            start = torch.tensor([[tok.eot]], device=proc.device)
            with proc.autocast:
                ids = run.raw.generate(start, cfg.sample_tokens, temperature=0.8, top_k=200)[
                    0, 1:
                ].tolist()
            print("sample:\n" + tok.decode([t for t in ids if t < tok.n_vocab]))
    if proc.ddp:  # all ranks leave together, DDP's reducer (which holds the group) first: a gloo group torn down
        dist.barrier()  # at interpreter exit while a peer still works can abort the process
        run.model = None
        gc.collect()
        dist.destroy_process_group()


def plot_losses(out_dir):
    """loss.png, redrawn from log.jsonl: train and val loss against tokens (zoomed past the first steps' drop), the
    same in bits per byte on the right axis with the unigram baseline (mqar: the val recall accuracy there instead),
    the budgets and decays marked, and the learning rate below."""
    plt = pyplot()
    rows, cfg = read_log(out_dir), json.loads((Path(out_dir) / "config.json").read_text())
    per_step = tokens_per_step(cfg) / 1e6
    rows = [
        r for r in rows if "branch" not in r
    ]  # the main branch; eval.py --mode=schedules draws the branches
    train_rows = [(r["iter"] * per_step, r["loss"]) for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_loss" in r and ("budget" not in r or not cfg["budgets"])]
    fig, (ax, ax_lr) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw=dict(height_ratios=[3, 1])
    )
    if train_rows:
        ax.plot(*zip(*train_rows), label="train", alpha=0.6, lw=1)
    if val_rows:
        ax.plot(
            [r["iter"] * per_step for r in val_rows],
            [r["val_loss"] for r in val_rows],
            "o-",
            label="val",
        )
    finished = [r for r in rows if "budget" in r]
    if finished and cfg["budgets"]:
        ax.plot(
            [r["iter"] * per_step for r in finished],
            [r["val_loss"] for r in finished],
            "*",
            ms=12,
            color="C3",
            label="finished models (val)",
        )
    bpb = (
        val_rows[-1]["val_bpb"] / val_rows[-1]["val_loss"]  # mqar rows have no bits per byte
        if val_rows and val_rows[-1]["val_loss"] and "val_bpb" in val_rows[-1]
        else None
    )
    late = [y for x, y in train_rows if x >= 0.1 * train_rows[-1][0]] if train_rows else []
    if late:  # the start (ln vocab, ~5.6) would squash the range where training happens
        ax.set_ylim(min(late) - 0.05, max(late) + 0.1 * (max(late) - min(late)) + 0.05)
    if bpb:
        right = ax.secondary_yaxis("right", functions=(lambda n: n * bpb, lambda b: b / bpb))
        right.set_ylabel("bits per byte")
        unigram = unigram_bpb(cfg)
        if unigram:  # drawn when in view, else named in the legend
            above = late and unigram / bpb > ax.get_ylim()[1]
            ax.plot(
                *([[], []] if above else [[0, train_rows[-1][0]], [unigram / bpb] * 2]),
                color="gray",
                ls="--",
                lw=1,
                label=f"unigram baseline {unigram:.2f} bits/byte"
                + (" (above the plot)" if above else ""),
            )
    recall = [(r["iter"] * per_step, r["val_acc"]) for r in val_rows if "val_acc" in r]  # mqar
    acc = None
    if recall:
        acc = ax.twinx()
        acc.plot(*zip(*recall), "s--", color="C2", label="val recall accuracy")
        acc.set(ylim=(0, 1.02), ylabel="recall accuracy (val)")
    budgets = [int(b) for b in cfg["budgets"].split(",")] if cfg["budgets"] else []
    lr_at = make_schedule(
        cfg["schedule"],
        cfg["lr"],
        cfg["min_lr"],
        cfg["warmup_iters"],
        cfg["max_iters"],
        cfg["decay_frac"],
        cfg["decay_shape"],
        budgets or None,
        cfg["rewarmup_iters"],
        cfg.get("decay_of", "cycle"),
    )
    ax_lr.plot(
        [s * per_step for s in range(cfg["max_iters"])],
        [lr_at(s) for s in range(cfg["max_iters"])],
        "k",
        lw=1,
    )
    decays = []  # (start, end) of the decays the main branch runs
    if cfg["schedule"] == "wsd-s":
        decays = [
            (b - cycle_decay_len(start, b, cfg["decay_frac"], cfg.get("decay_of", "cycle")), b)
            for start, b in zip([0] + budgets[:-1], budgets)
        ]
    elif cfg["schedule"] == "wsd":  # the earlier budgets' decays run in branches, off this plot
        decays = [
            (cfg["max_iters"] - decay_len(cfg["max_iters"], cfg["decay_frac"]), cfg["max_iters"])
        ]
    for a in (ax, ax_lr):
        for b in budgets:
            a.axvline(b * per_step, color="gray", ls=":", lw=1)
        for start, end in decays:
            a.axvspan(start * per_step, end * per_step, color="orange", alpha=0.12)
    ax.set_ylabel(
        "loss on the answers (nats per answer)"
        if not bpb and cfg["dataset"].startswith("mqar")
        else f"loss (nats per token, {cfg['tokenizer']} tokenizer)"
    )
    ax.set_title(
        f"{cfg['preset'] or 'custom'}: {cfg['n_layer']}x{cfg['n_embd']} {cfg['attention']}/{cfg['pos']}, "
        f"{cfg['dataset']}, {cfg['schedule']}{' (shaded: decay)' if decays else ''}"
        f"{' (dotted: budgets)' if budgets else ''}, seed {cfg['seed']}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if acc:  # one legend for both axes
        more_handles, more_labels = acc.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, fontsize=8)
    ax_lr.set_ylabel("learning rate\n(main branch)")
    ax_lr.set_xlabel("tokens (millions)")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "loss.png", dpi=120)
    plt.close(fig)


def unigram_bpb(cfg):
    """The run's corpus's unigram baseline in bits per byte (meta.json), or None when the data folder is gone."""
    try:
        return load_meta(corpus_folder(cfg["dataset"], cfg["tokenizer"], cfg["data_dir"]))[
            "unigram_bpb"
        ]
    except (OSError, KeyError, ValueError):
        return None


if __name__ == "__main__":
    cli(main)
