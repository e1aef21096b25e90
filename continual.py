"""Continual learning: fine-tune a pretrained GPT on a sequence of tasks with SEEKR or a baseline.

`python train.py --mode=continual --init_from=out/run --method=seekr --replay=0.01 --tasks=builtin`

METHODS declares what each method does (a buffer, mixed into the batches or seen in replay
micro-batches, distilling stored logits, the previous model or attention maps); ContinualRun reads
those properties, never a name. SEEKR's own pieces (its losses, head scoring and selection) are
seekr.py's; the task suite, batching of records and scoring are tasks.py's; docs/seekr.md has the
why and the numbers.

One task i (M_{i-1} the model before it, M_i after), each phase a method of ContinualRun:
  pick_buffer     R_i, a seeded random r-fraction of task i's train set
  before_task     draw R_i's query rows, record every head's map A^{M_{i-1}} on it (no grad)
  train_task      optimizer steps of grad_accum new-task micro-batches (answer LM loss); after every
                  replay_cycle of them a replay micro-batch joins the step, with loss
                  (1 - α)·LM + α·LD + β·AD   (α = 0.5 as in the official code; β = 100, see below)
  after_task      on M_i: stored logits z_i; SEEKR: I += S ⊙ F, the budgeted selection, and the
                  chosen heads' maps (query rows only) kept with the buffer, frozen
  evaluate_tasks  R[i][j] on every task j, then the checkpoint (never of nan weights: a nan loss
                  or weight stops the run); at the end results.json + figures
Below them: the config (train.py's Config composes ContinualConfig) and its checks.

Design choices: one protocol for every method (same base, seeds, new-task batch draws, optimizer,
evaluation), so a table row isolates what its method adds; records right-padded, so teacher and
student maps line up in any replay batch.
"""

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from data import get_tokenizer, load_split, prepare
from eval import eval_loss
from gpt2 import load_checkpoint
from model import GPT, model_config, shape_keys
from plots import plot_results
from plumbing import (
    ConfigError,
    RunFolder,
    append_log,
    check_declared,
    check_loss,
    check_weights,
    eta_text,
    restore_rng,
    rng_state,
    save_atomic,
    settings,
    setup_device,
)
from seekr import (
    all_maps,
    balance_readout,
    balancing_flag,
    dominant_part,
    logit_distill,
    map_heads,
    pad_tail,
    part_gradients,
    record_batch,
    replay_loss,
    score_heads,
    select_heads,
    selection_budgets,
)
from tasks import accuracy, check_task_lengths, encode_records, input_length, load_tasks, metrics

# --------------------------------------------------------------------------------------------------
# the methods


@dataclass(frozen=True)
class Method:
    """What a continual-learning method does; ContinualRun reads these, never the method's name."""

    buffer: bool = False  # keeps R_i, a --replay fraction of every finished task's train set
    mix: bool = False  # mixes the buffer into the later tasks' training data
    replay_steps: bool = False  # replay micro-batches on the buffer join the optimizer steps
    distill_logits: bool = False  # replay loss (1 - α)·LM + α·LD towards logits stored per record
    distill_previous: bool = False  # from task 2 on, (1 - α)·LM + α·LD towards M_{t-1} (LwF)
    distill_attention: bool = False  # replay loss + β·AD on the heads SEEKR selects


METHODS = {  # --method -> Method, in the order of every list a user sees
    "seqft": Method(),  # fine-tune on each task in turn, nothing kept
    "replay": Method(buffer=True, mix=True),  # the official replay baseline's ConcatDataset
    "der": Method(buffer=True, replay_steps=True, distill_logits=True),  # DER++-style
    "lwf": Method(distill_previous=True),  # no buffer: M_{t-1} distilled on the new inputs
    "seekr": Method(buffer=True, replay_steps=True, distill_logits=True, distill_attention=True),
}


# --------------------------------------------------------------------------------------------------
# the continual run: per task pick the buffer, before the task, train it, after it, evaluate


def continual(cfg, overrides, saved=None):
    """Fine-tune --init_from on --tasks in order with --method; write the run folder (see the module
    docstring). saved: the checkpoint --resume continues (train.build_config read it)."""
    if "RANK" in os.environ:
        raise ConfigError(
            "--mode=continual runs in one process; start it with python, not torchrun"
        )
    keep = lambda row, saved: row["task"] < saved["task"]  # a cut task is redone
    shape = shape_keys(cfg) + ["tokenizer"]
    folder = RunFolder(cfg, overrides, saved, shape, keep, load=load_checkpoint)  # or GPT-2's
    with folder as (cfg, saved, source):
        run = ContinualRun(cfg, saved, source)
        del saved, source  # the model holds them now
        for t in range(run.state["task"], len(run.names)):
            t_task = time.time()
            buffer = run.pick_buffer(t)
            before = run.before_task(t, buffer)
            run.train_task(t)
            run.after_task(t, buffer, before)
            run.evaluate_tasks(t, time.time() - t_task)
        run.results()


class ContinualRun:
    """The state one continual run shares between its phases: config, method, model, tokenizer,
    encoded tasks, the generators, and `state`, everything a resumed run needs (saved after every
    task): the accuracy matrix R, the replay buffers, each task's frozen head set, the accumulated
    importance I, timings."""

    def __init__(self, cfg, saved, source):
        self.cfg = cfg
        self.device, self.dtype, self.autocast = setup_device(cfg.device, cfg.dtype, fp16=False)
        torch.manual_seed(cfg.seed)
        self.tok = get_tokenizer(cfg.tokenizer)
        self.load_task_sets()
        self.model = GPT(model_config(cfg, self.tok.n_vocab)).to(self.device)
        self.model.load_weights((saved or source)["model"], cfg.out_dir if saved else cfg.init_from)
        self.layer_budget, self.head_budget, self.query_budget = selection_budgets(self.model, cfg)
        source_cfg = saved["source_config"] if saved else source["config"]
        corpus = prepare(source_cfg["dataset"], source_cfg["tokenizer"], source_cfg["data_dir"])
        self.general = load_split(corpus, "val")
        self.batch_gen = torch.Generator().manual_seed(cfg.seed)
        self.replay_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.state = self.fresh_state(source_cfg) if saved is None else self.saved_state(saved)
        L, H = map_heads(self.model)
        importance = self.state["importance"]
        self.importance = importance[-1].clone() if importance else torch.zeros(L, H)
        print(self.header())
        self.first_task = self.state["task"]  # this session's start, for the ETA
        self.t_run = time.time()

    @property
    def method(self):
        return METHODS[self.cfg.method]

    # ----------------------------------------------------------------------------------------------
    # the phases of one task, in order

    def pick_buffer(self, t):
        """Task t's buffer R_t: a seeded random r-fraction of its train set (at least 1 record)."""
        if not self.method.buffer:
            return []
        train = self.train_sets[t]
        k = self.buffer_size(t)
        gen = torch.Generator().manual_seed(self.cfg.seed + 7919 * t)
        picked = torch.randperm(len(train), generator=gen)[:k]
        return [dict(train[i], task=t) for i in sorted(picked.tolist())]

    def before_task(self, t, buffer):
        """SEEKR: draw each buffer record's query rows (once) and record every head's map
        A^{M_{t-1}} on it."""
        if not self.method.distill_attention:
            return []
        self.model.eval()
        rows_gen = torch.Generator().manual_seed(self.cfg.seed + 7919 * t + 1)
        q = self.query_budget
        before = []
        for r in buffer:
            n = input_length(r)
            if 0 < q < n:
                r["rows"] = torch.randperm(n, generator=rows_gen)[:q].sort().values
            else:
                r["rows"] = torch.arange(n)
            before.append(all_maps(self.model, r, self.tok.eot, self.device))
        self.model.train()
        return before

    def train_task(self, t):
        """iters_per_task optimizer steps (AdamW fresh per task), each over grad_accum new-task
        micro-batches; with replay steps, after every `cycle` new-task micro-batches a replay
        micro-batch on the earlier buffers joins the step it falls in, as the official code's
        DeepSpeed gradient accumulation does: every micro-batch's loss is divided by the step's
        micro-batch count, and one clip covers them all."""
        cfg = self.cfg
        betas = (cfg.beta1, cfg.beta2)
        device_type = self.device.split(":")[0]
        optimizer = self.model.configure_optimizers(cfg.weight_decay, cfg.lr, betas, device_type)
        teacher = None
        if self.method.distill_previous and t > 0:  # LwF: M_{t-1}
            teacher = copy.deepcopy(self.model).eval()
        pool = [r for buffer in self.state["buffers"] for r in buffer]
        data = self.train_sets[t] + pool if self.method.mix else self.train_sets[t]
        cycle = self.replay_cycle(t, len(pool))
        self.n_replay = 0
        warned = False
        last_replay = {}
        t_last = time.time()
        n_timed = 0
        for step in range(cfg.iters_per_task):
            first = step * cfg.grad_accum  # new-task micro-batches of this task before this step
            micro = range(first, first + cfg.grad_accum)
            due = sum(1 for j in micro if cycle and (j + 1) % cycle == 0)
            n_micro = cfg.grad_accum + due
            row = {"task": t, "iter": step}
            readout = None
            for _ in range(cfg.grad_accum):
                loss, values = self.new_task_loss(data, teacher)
                (loss / n_micro).backward()
                for k, v in values.items():
                    row[k] = row.get(k, 0.0) + v / cfg.grad_accum
            for _ in range(due):
                values, readout = self.replay_step(pool, n_micro, readout)
                last_replay = {"replay_" + k: v for k, v in values.items()}  # on the next line
            if readout is not None:
                row.update(balance_readout(self.model, readout))
                warned = warned or self.warn_balance(t, step, row)
            self.optimizer_step(optimizer)
            row.update(last_replay)
            n_timed += 1
            last = step == cfg.iters_per_task - 1
            if step % cfg.log_interval == 0 or last or readout is not None:
                self.progress(t, step, row, (time.time() - t_last) / n_timed)
                t_last = time.time()
                n_timed = 0

    def new_task_loss(self, data, teacher):
        """One new-task micro-batch: the answer LM loss (with a teacher, LwF's (1 − α)·LM + α·LD
        towards M_{t-1} on the new inputs) -> (loss, values to log)."""
        cfg = self.cfg
        idx = torch.randint(len(data), (cfg.batch_size,), generator=self.batch_gen).tolist()
        x, y = record_batch(self.model, [data[i] for i in idx], self.tok.eot, self.device)
        with self.autocast:
            logits, loss = self.model(x, y)
            values = {"loss": loss.item()}
            if teacher is not None:
                with torch.no_grad():
                    t_logp = F.log_softmax(teacher(x)[0][y != -1].float(), dim=-1)
                ld = logit_distill(logits, y, t_logp)
                loss = (1 - cfg.alpha) * loss + cfg.alpha * ld
                values["ld"] = ld.item()
        return loss, values

    def replay_step(self, pool, n_micro, readout):
        """One replay micro-batch of batch_size buffer records, backward into the step's gradient;
        every --balance_interval-th also measures each part's gradient. -> (values, readout)."""
        cfg = self.cfg
        order = torch.randperm(len(pool), generator=self.replay_gen)[: cfg.batch_size].tolist()
        batch = [pool[i] for i in order]
        where = (self.tok.eot, self.device, self.autocast)
        heads = self.state["heads"]
        terms, values = replay_loss(
            self.model, batch, self.method, heads, cfg.alpha, cfg.beta, *where
        )
        self.n_replay += 1
        if cfg.balance_interval and self.n_replay % cfg.balance_interval == 0:
            readout = part_gradients(self.model, terms, n_micro)
        (sum(terms.values()) / n_micro).backward()
        return values, readout

    def optimizer_step(self, optimizer):
        """One clip over the step's accumulated gradient, the update, the gradients cleared."""
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def after_task(self, t, buffer, before):
        """On M_t: the buffer's stored logits z_t (distill_logits); SEEKR: S and F on the buffer,
        I += S ⊙ F, the hierarchical selection, the chosen heads' maps (query rows only), frozen."""
        model = self.model
        model.eval()
        for r in buffer:
            if self.method.distill_logits:
                x, y = record_batch(model, [r], self.tok.eot, self.device)
                with torch.no_grad(), self.autocast:
                    logits = model(x)[0][y != -1].float()
                    r["logp"] = F.log_softmax(logits, dim=-1).cpu()  # z_t, stored DER-style
        if self.method.distill_attention:
            sens, forget, after = score_heads(model, buffer, before, self.tok.eot, self.device)
            self.importance = self.importance + sens * forget  # I += S ⊙ F
            chosen = select_heads(self.importance, self.layer_budget, self.head_budget)
            for r, maps in zip(buffer, after):
                r["maps"] = torch.stack([maps[l, h][r["rows"]] for l, h in chosen])  # (heads, q, n)
            self.state["heads"].append(chosen)
            self.state["importance"].append(self.importance.clone())
            print(f"task {t + 1} heads (layer, head): {chosen}")
        model.train()
        self.state["buffers"].append(buffer)

    def evaluate_tasks(self, t, seconds_train):
        """R[t][i] for every task i, then the checkpoint (the next task starts from it on
        --resume)."""
        state = self.state
        t_eval = time.time()
        score = lambda test: accuracy(
            self.model, self.tok, test, self.device, self.autocast, pad_tail(self.model)
        )
        state["R"].append([score(test) for test in self.test_sets])
        state["seconds_eval"] += time.time() - t_eval
        state["seconds"] += seconds_train + time.time() - t_eval
        state["seconds_train"].append(seconds_train)
        print(
            f"after task {t + 1} ({self.names[t]}): accuracy "
            + " ".join(f"{n} {a:.3f}" for n, a in zip(self.names, state["R"][-1]))
            + f" | {seconds_train:.0f} s training"
        )
        check_weights(self.model, f"task {t + 1} ({self.names[t]})", self.cfg.out_dir)  # nan: stop
        state["task"] = t + 1
        state["rng"] = rng_state(self.device, batch=self.batch_gen, replay=self.replay_gen)
        ckpt = {
            **state,
            "model": self.model.state_dict(),
            "model_config": dataclasses.asdict(self.model.config),
            "config": settings(self.cfg),
        }
        save_atomic(ckpt, Path(self.cfg.out_dir) / "ckpt.pt")

    def results(self):
        """results.json (OP, BWT, R, general loss before and after, heads, timings), its figures."""
        cfg = self.cfg
        state = self.state
        out = Path(cfg.out_dir)
        res = {
            "method": cfg.method,
            "replay": cfg.replay if self.method.buffer else 0.0,
            "tasks": self.names,
            "R": state["R"],
            **metrics(state["R"]),
            "general_before": state["general_before"],
            "general_after": self.general_loss(),
            "heads": state["heads"],
            "importance": [i.tolist() for i in state["importance"]],
            "seconds": state["seconds"],
            "seconds_train": state["seconds_train"],
            "seconds_eval": state["seconds_eval"],
            "init_from": cfg.init_from,
            "seed": cfg.seed,
            "iters_per_task": cfg.iters_per_task,
        }
        (out / "results.json").write_text(json.dumps(res, indent=1))
        plot_results(out)
        print(
            f"OP {res['OP']:.4f} | BWT {res['BWT']:+.4f} (over T: {res['BWT_over_T']:+.4f}) | "
            f"general val loss {res['general_before']:.4f} -> {res['general_after']:.4f} | "
            f"{res['seconds']:.0f} s | wrote {out}/results.json, R.png, acc_over_time.png"
            + (", heads.png" if res["heads"] else "")
        )

    # ----------------------------------------------------------------------------------------------
    # set-up, schedule and printing

    def load_task_sets(self):
        """--tasks in --task_order, checked against the block, encoded; replay steps checked."""
        cfg = self.cfg
        order = [name for name in cfg.task_order.split(",") if name] or None
        tasks = load_tasks(cfg.tasks, order, seed=cfg.seed)
        check_task_lengths(tasks, self.tok, cfg.block_size)
        self.names = [name for name, _, _ in tasks]
        self.train_sets = [encode_records(self.tok, train) for _, train, _ in tasks]
        tests = [test[: cfg.eval_records or None] for _, _, test in tasks]
        self.test_sets = [encode_records(self.tok, test) for test in tests]
        self.check_replay_steps()

    def fresh_state(self, source_cfg):
        return {
            "task": 0,
            "R": [],
            "buffers": [],
            "heads": [],
            "importance": [],
            "seconds": 0.0,
            "seconds_train": [],
            "seconds_eval": 0.0,
            "general_before": self.general_loss(),
            "source_config": source_cfg,
        }

    def saved_state(self, saved):
        """The state a --resume continues, the generators restored."""
        skip = ("model", "model_config", "config")
        restore_rng(saved["rng"], self.device, batch=self.batch_gen, replay=self.replay_gen)
        return {k: v for k, v in saved.items() if k not in skip}

    def header(self):
        cfg = self.cfg
        budgets = (
            f" | selection budgets {self.layer_budget} layers, {self.head_budget} heads, "
            f"{self.query_budget or 'all'} query rows"
        )
        return (
            f"continual: {cfg.method}"
            + (f" {cfg.replay:g} replay" if self.method.buffer else "")
            + f" | {self.model.num_params() / 1e6:.2f}M parameters from {cfg.init_from} | "
            f"{self.device} {self.dtype} | tasks {', '.join(self.names)} | "
            f"{cfg.iters_per_task} steps each, batch {cfg.batch_size}, lr {cfg.lr:g}"
            + (budgets if self.method.distill_attention else "")
            + (f" | resuming at task {self.state['task'] + 1}" if self.state["task"] else "")
        )

    def general_loss(self):
        """Val loss on the base's pretraining corpus (GENERAL_TOKENS of it): general ability."""
        self.model.eval()
        cfg = self.cfg
        batch = min(16, max(1, 4096 // cfg.block_size))  # GPT-2's 1024: 4, its logits 0.8 GB
        args = (self.general, cfg.block_size, batch, GENERAL_TOKENS, self.device, self.autocast)
        loss = eval_loss(self.model, *args)[0]
        self.model.train()
        return loss

    def buffer_size(self, t):
        if not self.method.buffer:
            return 0
        return max(1, round(self.cfg.replay * len(self.train_sets[t])))

    def replay_cycle(self, t, n_pool):
        """New-task micro-batches per replay micro-batch on task t with n_pool buffered records (0:
        none): --replay_cycle (default 6); with 0, task batches // replay batches, the buffer seen
        about once per pass over the task, as the official code's replay_cycle."""
        cfg = self.cfg
        if not n_pool or not self.method.replay_steps:
            return 0
        batches = math.ceil(len(self.train_sets[t]) / cfg.batch_size)
        replay_batches = math.ceil(n_pool / cfg.batch_size)
        return cfg.replay_cycle or max(1, batches // replay_batches)

    def check_replay_steps(self):
        """Refuse settings under which a method with replay steps would take none on some task (and
        so equal seqft)."""
        cfg = self.cfg
        n = cfg.iters_per_task * cfg.grad_accum  # new-task micro-batches per task
        for t in range(1, len(self.names)):
            cycle = self.replay_cycle(t, sum(self.buffer_size(j) for j in range(t)))
            if cycle > n:
                raise ConfigError(
                    f"--method={cfg.method} would take no replay step on task {t + 1} "
                    f"({self.names[t]}): its replay cycle is {cycle} micro-batches, more than the "
                    f"{n} of a task (--iters_per_task={cfg.iters_per_task} x "
                    f"--grad_accum={cfg.grad_accum}); pass --replay_cycle={n} or smaller, or more "
                    "--iters_per_task"
                )

    def warn_balance(self, t, step, row):
        """One warning line (once per task) when one replay part's gradient dwarfs the others.
        -> whether it warned."""
        part = dominant_part(row)
        if part is not None:
            words = {"lm": "(1 − α)·LM", "ld": "α·LD", "ad": "β·AD"}
            others = ", ".join(
                f"{words[k]} {row['grad_' + k]:.3g}"
                for k in words
                if k != part and "grad_" + k in row
            )
            flag = balancing_flag(part, row, self.cfg.alpha, self.cfg.beta)
            print(
                f"warning: task {t + 1} step {step}: the replay gradient is almost all "
                f"{words[part]} "
                f"({row['grad_' + part]:.3g} against {others}; "
                f"{100 * row['share_' + part]:.0f}% of the update); "
                f"to balance it, pass {flag}"
            )
        return part is not None

    def progress(self, t, step, row, dt):
        """One log.jsonl row and one progress line; the ETA from this session's average speed."""
        cfg = self.cfg
        done = t * cfg.iters_per_task + step + 1
        total = len(self.names) * cfg.iters_per_task
        eta = eta_text(
            time.time() - self.t_run, done - self.first_task * cfg.iters_per_task, total - done
        )
        check_loss(row["loss"], f"task {t + 1} ({self.names[t]}) iter {step}", cfg.out_dir)
        append_log(cfg.out_dir, {**row, "ms": 1000 * dt})
        extra = "".join(
            f" | {k} {v:.4f}" for k, v in row.items() if k not in ("task", "iter", "loss")
        )
        print(
            f"task {t + 1}/{len(self.names)} {self.names[t]} | iter {step}/{cfg.iters_per_task} | "
            f"loss {row['loss']:.4f}{extra} | {1000 * dt:.0f} ms | {eta}"
        )


# --------------------------------------------------------------------------------------------------
# the config: train.py's Config composes ContinualConfig; its checks


GENERAL_TOKENS = 65536  # pretraining-corpus val tokens behind general_before / general_after
# the defaults at this project's scale (docs/seekr.md, "Defaults"): lr 1e-3, a replay micro-batch
# after every 6 new-task ones, β = 100; the official code's values are --lr=3e-4 --replay_cycle=0
# --beta=1000 (OFFICIAL), with which two of the builtin tasks are barely learned in 200 steps
CONTINUAL_DEFAULTS = dict(out_dir="out/continual", batch_size=16, lr=1e-3, log_interval=25)
OFFICIAL = "--lr=3e-4 --replay_cycle=0 --beta=1000"


@dataclass
class ContinualConfig:
    """The continual-learning fields, declared once: train.py's Config inherits them (they are its
    flags); __post_init__ checks their choices and ranges, check_continual the --mode=continual
    rules that read other settings."""

    tasks: str = "builtin"  # builtin (from --seed), or a TRACE folder: <task>/{train,test}.json
    task_order: str = ""  # a,b,c; default: by folder name (builtin: its own order)
    iters_per_task: int = 200
    method: str = "seekr"  # the continual-learning method
    replay: float = 0.01  # fraction of each finished task's train set kept (at least one record)
    # new-task micro-batches per replay one (6: each 1% buffer record drawn >= 5 times a task);
    # 0 = task batches // buffer batches, the official code's
    replay_cycle: int = 6
    alpha: float = 0.5  # logit-distillation weight: (1 - alpha)·LM + alpha·LD (distilling methods)
    beta: float = 100.0  # attention-distillation weight (seekr; the official code's: 1000)
    seekr_layer_budget: int = 0  # layers kept by SEEKR's selection; 0 = 75% of layers
    seekr_head_budget: int = 0  # heads kept, inside those layers; 0 = 12.5% of all heads
    seekr_query_budget: int = 0  # random query rows distilled per record; 0 = all
    eval_records: int = 200  # test records per task scored after every task; 0 = all
    balance_interval: int = 0  # replay micro-batches between gradient-balance readouts; 0 = off

    def __post_init__(self):
        check_declared(self, CHOICES, RANGES)


CHOICES = dict(method=METHODS)
RANGES = dict(  # [ includes the end, ( excludes it
    iters_per_task="[1, inf)",
    replay="[0, 1]",
    replay_cycle="[0, inf)",
    alpha="[0, 1]",
    beta="[0, inf)",
    seekr_layer_budget="[0, inf)",
    seekr_head_budget="[0, inf)",
    seekr_query_budget="[0, inf)",
    eval_records="[0, inf)",
    balance_interval="[0, inf)",
)


def check_continual(cfg):
    """The rules of --mode=continual, called by train.Config.__post_init__ (the model's shape is
    checked later, against the checkpoint: selection_budgets)."""
    if not cfg.init_from and not cfg.resume:
        raise ConfigError(
            "--mode=continual fine-tunes a pretrained model: pass --init_from=PATH (e.g. out/run, "
            "written by `python train.py`)"
        )
    if METHODS[cfg.method].buffer and not 0 < cfg.replay <= 1:
        raise ConfigError(
            f"--replay={cfg.replay} must be a fraction in (0, 1], e.g. --replay=0.01 for 1%"
        )
    if cfg.dtype == "float16":
        raise ConfigError(
            "--mode=continual runs in float32 or bfloat16 (float16 would need a gradient scaler); "
            "pass --dtype=bfloat16 or --dtype=float32"
        )
