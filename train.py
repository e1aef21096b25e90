"""Train a GPT: `python train.py [--preset=tiny|cpu|small|gpt2] [--key=value ...]`; fine-tune one
on tasks: `python train.py --mode=continual --init_from=out/run --method=seekr` (continual.py).

main() is the steps: the config, the process (device, DDP), the run folder, the data, the model and
optimizer (a Run), the loop, the end; the loop, train(), reads top to bottom as nanoGPT's does.
On CUDA: bf16 autocast, TF32, torch.compile, fused AdamW; under torchrun, DDP (wrapped, then
compiled): each rank builds its slice of the batch one process would draw. ckpt.pt holds every
RNG state, each rank's own: --resume is bit-exact. A nan loss (seen at a log step) or nan weights
(checked before a save) stop the run in one line; the last checkpoint stays as it was.
"""

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

import continual
import gpt2
import model
import plumbing
import schedules
from data import TOKENIZERS, answer_accuracy, bits_per_byte, check_dataset, load_dataset
from model import GPT, GPTConfig, model_config, peak_flops, shape_keys
from plots import plot_losses


@dataclass
class Config(GPTConfig, schedules.ScheduleConfig, continual.ContinualConfig, plumbing.RunConfig):
    """A run's settings, each a flag: the model's, the schedule's, --mode=continual's, the run
    folder and device's (their classes') and these. __post_init__ checks them all."""

    not_flags = ("vocab_size", "rope_base")  # GPTConfig's: the tokenizer's; RoPE's own
    preset: str = ""
    seed: int = 1337
    mode: str = "pretrain"  # continual: fine-tune --init_from on a task sequence (continual.py)
    dataset: str = "stdlib"  # stdlib, text:PATH, shakespeare, fineweb[:N]; mqar[:pairs=N,keys=K]
    tokenizer: str = "gpt2"
    data_dir: str = "data"
    batch_size: int = 32  # sequences per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step, summed over all DDP ranks
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables
    eval_interval: int = 250  # steps between evals
    eval_iters: int = 20
    log_interval: int = 10
    ckpt_interval: int = 250
    sample_tokens: int = 300  # text printed at the end of training; 0 for none
    peak_tflops: float = 0.0  # the GPU's dense bf16 peak for MFU, if model.PEAK_TFLOPS lacks it

    def __post_init__(self):
        plumbing.check_declared(self, OWN_CHOICES, RANGES)
        plumbing.RunConfig.__post_init__(self)
        schedules.ScheduleConfig.__post_init__(self)
        continual.ContinualConfig.__post_init__(self)
        GPTConfig.__post_init__(self)  # it resolves pos=auto
        if self.mode == "continual":
            continual.check_continual(self)
        else:  # mqar's pairs fit a block; a corpus name is known
            check_dataset(self.dataset, self.tokenizer, self.data_dir, self.block_size)


PRESETS = {  # grouped: the model, the batches and steps, evaluation and logging
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=64, tokenizer="bytes")
    | dict(batch_size=8, max_iters=50, warmup_iters=5)
    | dict(eval_interval=25, eval_iters=4, log_interval=5, ckpt_interval=25, sample_tokens=50),
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=128, tokenizer="bytes")
    | dict(batch_size=16, max_iters=2250, lr=3e-3, min_lr=3e-5, schedule="wsd", warmup_iters=30)
    | dict(eval_interval=250, eval_iters=20, log_interval=10, ckpt_interval=250),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, tokenizer="gpt2", dropout=0.1)
    | dict(batch_size=32, max_iters=3000, lr=1e-3, min_lr=1e-4, warmup_iters=100),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, tokenizer="gpt2")
    | dict(dataset="fineweb:100", batch_size=16, grad_accum=32, max_iters=19073)  # 10B tokens
    | dict(lr=6e-4, min_lr=6e-5, warmup_iters=700, eval_interval=500, eval_iters=40)
    | dict(ckpt_interval=1000),
}
OWN_CHOICES = dict(preset=("", *PRESETS), mode=("pretrain", "continual"), tokenizer=TOKENIZERS)
CHOICES = OWN_CHOICES | model.CHOICES | schedules.CHOICES | continual.CHOICES | plumbing.RUN_CHOICES
RANGES = {  # each numeric flag's interval, [ includes the end; the model's, schedule's: theirs
    **dict.fromkeys(["batch_size", "grad_accum", "eval_iters", "log_interval"], "[1, inf)"),
    **dict.fromkeys(["seed", "weight_decay", "grad_clip", "ckpt_interval"], "[0, inf)"),
    **dict.fromkeys(["sample_tokens", "peak_tflops"], "[0, inf)"),
    **dict(eval_interval="[1, inf)", beta1="[0, 1)", beta2="[0, 1)"),
}


def main(argv):
    cfg, flags, saved = build_config(argv)
    if cfg.mode == "continual":  # fine-tune on a task sequence
        return continual.continual(cfg, flags, saved)
    proc = plumbing.setup_process(cfg)
    keys = shape_keys(cfg) + ["tokenizer"]
    load = gpt2.load_checkpoint  # a run's checkpoint, or GPT-2's weights (--init_from=gpt2)
    folder = plumbing.RunFolder(cfg, flags, saved, keys, lock=proc.master, load=load)
    with folder as (cfg, saved, source):
        data = load_dataset(cfg.dataset, cfg.tokenizer, cfg.data_dir, cfg.block_size, proc.master)
        plumbing.join_process_group(proc)
        run = Run(cfg, proc, data, source, saved)
        del source, saved  # the model and the optimizer hold them now
        stopped = train(cfg, proc, data, run)
        finish(cfg, proc, data, run, stopped)


class Run:
    """A run's state: the model (raw, and compiled / DDP-wrapped), the optimizer, the batch
    generator, the step, the decay branch being run (its budget) and the main branch's state set
    aside meanwhile, the compute spent so far in tokens (branches included)."""

    def __init__(self, cfg, proc, data, source=None, saved=None):
        self.raw = self.model = GPT(model_config(cfg, data.tokenizer.n_vocab)).to(proc.device)
        if source is not None:
            self.raw.load_weights(source["model"], cfg.init_from)
        betas = (cfg.beta1, cfg.beta2)
        device_type = proc.device.split(":")[0]
        self.optimizer = self.raw.configure_optimizers(cfg.weight_decay, cfg.lr, betas, device_type)
        self.batch_gen = torch.Generator().manual_seed(cfg.seed)
        self.proc = proc  # its rank and device: every rank's RNG state is saved and restored
        self.it = 0
        self.branch = saved["branch"] if saved else None
        self.aside = saved["aside"] if saved else None
        self.tokens = saved["tokens"] if saved else 0
        if saved is not None:
            self.restore(saved)
        # DDP, then compile; self.ddp: the DDP module (the loop sets its require_backward_grad_sync)
        self.model, self.ddp = plumbing.wrap_model(self.raw, proc)
        self.scaler = torch.amp.GradScaler(enabled=proc.dtype == "float16")

    def snapshot(self):
        """Everything the next step depends on; restore() of it continues the run bit-exactly.
        Every rank's RNG state, so a collective: every DDP rank takes it."""
        weights = {"model": self.raw.state_dict(), "optimizer": self.optimizer.state_dict()}
        rng = plumbing.rank_rng_states(self.proc, batch=self.batch_gen)
        return {**weights, "iter": self.it, "rng": rng}

    def save(self, cfg, name, state):
        state = {**state, "model_config": asdict(self.raw.config), "config": plumbing.settings(cfg)}
        plumbing.save_atomic(state, Path(cfg.out_dir) / name)

    def branch_row(self):
        return {"branch": self.branch} if self.branch else {}

    def restore(self, state):
        self.raw.load_weights(state["model"], "the checkpoint being resumed")
        self.optimizer.load_state_dict(state["optimizer"])
        plumbing.restore_rank_rng(state["rng"], self.proc, batch=self.batch_gen)
        self.it = state["iter"]


def train(cfg, proc, data, run):
    """The loop, until max_iters (and the last decay branch) or Ctrl-C: -> whether Ctrl-C did."""
    if proc.master:
        print(header(cfg, proc, data, run))
    lr_at, budgets, forks = cfg.lr_schedule()
    accum = cfg.grad_accum // proc.world  # this rank's micro-steps
    step_batch = cfg.batch_size * cfg.grad_accum  # sequences per optimizer step, all ranks
    mine = slice(proc.rank * accum * cfg.batch_size, (proc.rank + 1) * accum * cfg.batch_size)
    tokens_per_iter = plumbing.tokens_per_step(cfg)
    peak = cfg.peak_tflops * 1e12 or peak_flops(torch.device(proc.device))  # for MFU
    clock = plumbing.Stopwatch()
    stop = plumbing.CtrlC(proc)  # Ctrl-C: finish the step, save, exit
    row = {}
    while run.branch or run.it < cfg.max_iters:
        lr = lr_at(run.it, run.branch)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        if run.it % cfg.eval_interval == 0 and run.branch is None:
            row = evaluate(cfg, proc, data, run)
            if proc.master:
                print(f"eval {run.it}: {val_text(data, row)}")

        # one step: the shared generator draws the whole step's batch, this rank builds its slice
        xs, ys = data.train.batch(step_batch, cfg.block_size, run.batch_gen, mine)
        if proc.device.startswith("cuda"):  # pinned: the copies below overlap with compute
            xs, ys = xs.pin_memory(), ys.pin_memory()
        step_loss = torch.zeros((), device=proc.device)
        for micro in range(accum):
            part = slice(micro * cfg.batch_size, (micro + 1) * cfg.batch_size)
            x = xs[part].to(proc.device, non_blocking=True)
            y = ys[part].to(proc.device, non_blocking=True)
            if proc.ddp:  # all-reduce the gradients once per step, after the last micro-step
                run.ddp.require_backward_grad_sync = micro == accum - 1
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
        run.it += 1
        run.tokens += tokens_per_iter
        clock.step()

        # log, finish a budget or fork a decay branch, stop on Ctrl-C, save
        # a line every log_interval steps, at the end, and after an eval (row holds its values)
        logged = (run.it - 1) % cfg.log_interval == 0 or run.it == cfg.max_iters or bool(row)
        if logged:
            if proc.ddp:
                dist.all_reduce(step_loss)
                step_loss /= proc.world
            row = {"iter": run.it - 1, "loss": step_loss.item(), "lr": lr, **row}  # waits for GPU
            plumbing.check_loss(row["loss"], f"iter {run.it - 1}", cfg.out_dir)  # nan: stop
            dt = clock.lap()  # seconds per step since the last line
            tok_s = tokens_per_iter / dt
            mfu = run.raw.estimate_mfu(tok_s / proc.world, peak)  # per GPU
            row.update(ms=1000 * dt, tokens_per_sec=tok_s, tokens=run.tokens, **run.branch_row())
            left = cfg.max_iters - run.it + sum(b - f for f, b in forks.items() if b > run.it)
            eta = clock.eta(left)
            log(cfg, proc, row, plumbing.progress_text(row, cfg.max_iters, dt, tok_s, mfu, eta))
            row = {}
        finish_or_fork(cfg, proc, data, run, budgets, forks)
        if stop.pressed(sync=logged):  # DDP ranks agree at log steps only; finish() saves
            return True
        if cfg.ckpt_interval and run.it % cfg.ckpt_interval == 0 and run.it != cfg.max_iters:
            save(cfg, proc, run)
    return False


@torch.no_grad()
def evaluate(cfg, proc, data, run):
    """The val row: the mean loss over eval_iters fixed batches (the same at every eval), split
    across ranks; with it bits per byte of text, or mqar's recall accuracy (val_acc)."""
    run.model.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    total = torch.zeros(3, device=proc.device)  # loss, batches, accuracy (summed over batches)
    for k in range(cfg.eval_iters):
        x, y = data.val.batch(cfg.batch_size, cfg.block_size, gen)
        if k % proc.world == proc.rank:
            y = y.to(proc.device)
            with proc.autocast:
                logits, loss = run.raw(x.to(proc.device), y)
            right = answer_accuracy(logits, y) if data.task else torch.zeros((), device=proc.device)
            # every batch holds batch_size·N answers: the mean of the batches' is the whole's
            total += torch.stack([loss.float(), torch.ones((), device=proc.device), right])
    if proc.ddp:
        dist.all_reduce(total)
    run.model.train()
    val_loss = (total[0] / total[1]).item()
    if data.task:
        return {"val_loss": val_loss, "val_acc": (total[2] / total[1]).item()}
    return {"val_loss": val_loss, "val_bpb": bits_per_byte(val_loss, data.meta)}


def finish_or_fork(cfg, proc, data, run, budgets, forks):
    """After a step: a finished model at a budget; the end or the start of a decay branch."""
    if run.branch and run.it >= run.branch:  # the branch is done: keep its model, back to main
        finish_budget(cfg, proc, data, run, run.it)
        run.restore(run.aside)
        run.branch = None
        run.aside = None
    elif run.branch is None:
        if run.it in budgets and run.it not in forks.values():  # a branch finishes its own budget
            finish_budget(cfg, proc, data, run, run.it)
        if run.it in forks:  # set the main branch aside and decay towards budget forks[it]
            run.aside = copy.deepcopy(run.snapshot())
            run.branch = forks[run.it]


def finish_budget(cfg, proc, data, run, b):
    """A finished model: evaluate it, save budget_<b>.pt (with --budgets), log its compute."""
    val = evaluate(cfg, proc, data, run)
    plumbing.check_loss(val["val_loss"], f"iter {b}", cfg.out_dir)
    if proc.master and cfg.budgets:
        run.save(cfg, f"budget_{b}.pt", {"model": run.raw.state_dict(), "iter": b})
    baseline = "" if data.task else f" (unigram baseline {data.meta['unigram_bpb']:.3f})"
    row = {"iter": b, "budget": b, **val, "tokens": run.tokens, **run.branch_row()}
    text = f"budget {b} finished: {val_text(data, val)}{baseline}, {run.tokens:,} tokens of compute"
    log(cfg, proc, row, text)


def finish(cfg, proc, data, run, stopped):
    """The last checkpoint, loss.png and a text sample (rank 0); leave the process group."""
    save(cfg, proc, run)
    if proc.master and stopped:
        print(plumbing.interrupted_text(cfg.out_dir, run.it))
    if proc.master:
        plot_losses(cfg.out_dir, *cfg.main_branch(), (data.meta or {}).get("unigram_bpb"))
        if cfg.sample_tokens and not stopped and not data.task:  # mqar's ids are not text
            tok = data.tokenizer
            start = torch.tensor([[tok.eot]], device=proc.device)
            with proc.autocast:
                ids = run.raw.generate(start, cfg.sample_tokens, temperature=0.8, top_k=200)
            ids = ids[0, 1:].tolist()
            print("sample:\n" + tok.decode([t for t in ids if t < tok.n_vocab]))
    plumbing.leave_process_group(proc, run)


def save(cfg, proc, run):
    """ckpt.pt (rank 0 writes; every rank gives its RNG state), never of diverged weights."""
    plumbing.check_weights(run.raw, f"iter {run.it}", cfg.out_dir)
    state = {**run.snapshot(), "branch": run.branch, "aside": run.aside, "tokens": run.tokens}
    if proc.master:
        run.save(cfg, "ckpt.pt", state)


def header(cfg, proc, data, run):
    what = (
        f"data {data.task.name} (generated) | chance {data.task.chance:.3f}"
        if data.task
        else f"data {data.folder} ({data.meta['train_tokens']:,} train tokens) | unigram baseline "
        f"{data.meta['unigram_bpb']:.3f} bits/byte"
    )
    where = f"{proc.device} {proc.dtype}{' compiled' if proc.compile else ''}"
    where += f" | DDP x{proc.world}" if proc.ddp else ""
    resuming = f" | resuming at iter {run.it}" if run.tokens else ""
    resuming += f" in the decay branch of budget {run.branch}" if run.tokens and run.branch else ""
    tokens = f"{plumbing.tokens_per_step(cfg):,} tokens/iter"
    return f"{run.raw.num_params() / 1e6:.2f}M parameters | {where} | {tokens} | {what}{resuming}"


def val_text(data, row):
    """'val loss 1.2345, 1.234 bits/byte' or '..., recall accuracy 0.874 (chance 0.125)'."""
    if data.task:
        return f"val loss {row['val_loss']:.4f}, {data.task.recall_text(row['val_acc'])}"
    return f"val loss {row['val_loss']:.4f}, {row['val_bpb']:.3f} bits/byte"


def log(cfg, proc, row, text):
    if proc.master:
        plumbing.append_log(cfg.out_dir, row)
        print(text)


def build_config(argv):
    """-> (cfg, the flags, the checkpoint --resume continues or None): the defaults, the preset
    (given; else small on CUDA, cpu without) or --mode=continual's, the checkpoint's, the flags."""
    modes = {"continual": continual.CONTINUAL_DEFAULTS}  # the shape comes from --init_from
    if torch.cuda.is_available():  # with other flags too: `--max_iters=100` on a laptop
        return plumbing.build_config(argv, Config, CHOICES, PRESETS, "small", modes)
    notice = (  # with --init_from the model is the source's
        "no CUDA GPU found: the 'cpu' preset's batches and schedule, --init_from's model"
        if any(arg.startswith("--init_from=") for arg in argv)
        else f"no CUDA GPU found: training the 'cpu' preset (4 layers x 128, byte tokens, its "
        f"{PRESETS['cpu']['max_iters']} steps ~5 minutes on 2 cores); on a GPU this command "
        "trains the 'small' preset"
    )
    return plumbing.build_config(argv, Config, CHOICES, PRESETS, "cpu", modes, notice)


if __name__ == "__main__":
    plumbing.cli(main)
