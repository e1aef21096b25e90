"""Continual learning: fine-tune a pretrained GPT on a sequence of tasks with SEEKR or one of four baselines.

`python train.py --mode=continual --init_from=out/run --method=seekr --replay=0.01 --tasks=builtin`

methods  seqft   fine-tune on each task in turn, nothing kept
         replay  a seeded r-fraction of every finished task's train set, mixed into the later tasks' training data
                 (the official replay baseline's ConcatDataset)
         der     the same buffer, seen in replay micro-batches (one after every `replay_cycle` new-task
                 micro-batches, inside that optimizer step) whose loss adds logit distillation towards the logits
                 stored when the record's task finished (DER++-style)
         lwf     no buffer: from task 2 on, distill the previous model's outputs on the new task's own inputs (LwF)
         seekr   der + attention distillation on the heads chosen by forgettability x task sensitivity
                 (SEEKR, arXiv 2411.06171, as its official code does it; DESIGN.md §7)

SEEKR, task i (M_{i-1} the model before it, M_i after), each phase a method of ContinualRun that continual() calls:
  pick_buffer   R_i, a seeded random r-fraction of task i's train set
  before_task   draw R_i's query rows, record every head's map A^{M_{i-1}} on it (no grad)
  train_task    optimizer steps of grad_accum new-task micro-batches with the answer LM loss; after every
                replay_cycle of them a replay micro-batch joins the step, with loss
                (1 - α)·LM + α·LD + β·AD   (α = 0.5, β = 1000 as in the official code); each micro-batch's loss
                is divided by the step's micro-batch count and one clip covers the step (DeepSpeed's gradient
                accumulation in the official code). --balance_interval logs each replay part's gradient norm and
                its share of the update, and warns when one part dwarfs the others (how to pick β at a new scale)
  after_task    on M_i, record by record: stored logits z_i, maps A^{M_i}, gradient g = ∂LM/∂A of every head;
                S = mean g² normalised within each layer, F = mean (A^{M_{i-1}} - A^{M_i})², I += S ⊙ F;
                top layer_budget layers by Σ_h I, then the global top head_budget heads inside them; the buffer
                keeps those heads' maps (its query rows only) and the head set, frozen from then on
  evaluate_tasks  R[i][j] on every task j, then the checkpoint; after the last task, results: results.json + PNGs
The layer / head / query budgets are SEEKR's selection budgets (counts of layers, heads, query rows); train.py's
--budgets are compute budgets (steps), a different thing.

Design choices:
- One protocol for every method: the same base, seeds, new-task batch draws (their own generator), optimizer
  (AdamW, fresh per task, constant lr) and evaluation. Replay, der and seekr share one buffer; der and seekr share
  the replay schedule and differ only in the attention term, so the table isolates what it adds.
- Records are right-padded (pad = end token, target -1), so a record's positions are the same alone and in a
  batch: teacher maps and logits stored record by record line up with the student's in any replay batch (DAPE
  also gets pad_tail extra pad columns, tested).
- Sensitivity gradients come from torch.autograd.grad on the maps, never .backward(): nothing leaks into the
  optimizer's next step (a pitfall of the official code).
- diff's effective map A1 - λA2 is not a distribution (rows sum to 1 - λ, entries may be negative), so KL is
  undefined there: attention distillation uses the squared error summed over keys instead (README says so).
- Accuracy R[t][i] = exact match of greedy answers on task i's test records after task t (whitespace stripped).
- The run folder holds config.json, log.jsonl, ckpt.pt (written after every task; --resume continues with the
  next task), results.json, R.png, acc_over_time.png and, for seekr, heads.png; all figures redraw from
  results.json (plot_results).
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

from data import check_task_lengths, encode_record, get_tokenizer, load_split, load_tasks, prepare
from eval import eval_loss
from model import GPT, model_config, shape_keys
from plumbing import (
    ConfigError,
    append_log,
    eta_text,
    lock_run_folder,
    open_run_folder,
    pyplot,
    restore_rng,
    rng_state,
    save_atomic,
    setup_device,
    start_run,
)

METHODS = ("seqft", "replay", "der", "lwf", "seekr")
BUFFERED = ("replay", "der", "seekr")  # methods that keep a replay buffer
REPLAY_STEPS = (
    "der",
    "seekr",
)  # methods with replay micro-batches (replay mixes the buffer into its batches)
GENERAL_TOKENS = 65536  # pretraining-corpus val tokens behind general_before / general_after
CONTINUAL_DEFAULTS = dict(
    out_dir="out/continual", batch_size=16, lr=3e-4, log_interval=25
)  # replace the presets


@dataclass
class ContinualConfig:
    """The continual-learning fields of train.py's Config (--mode=continual); the rules are check_continual's."""

    tasks: str = "builtin"  # builtin (generated from --seed), or a folder in TRACE's layout: <task>/{train,test}.json
    task_order: str = ""  # a,b,c; default: by folder name (builtin: its own order)
    iters_per_task: int = 200
    method: str = "seekr"  # seqft, replay, der, lwf, seekr
    replay: float = (
        0.01  # fraction of each finished task's train set kept for replay (at least one record)
    )
    replay_cycle: int = (
        0  # new-task micro-batches per replay micro-batch; 0 = task batches // replay batches
    )
    alpha: float = 0.5  # logit-distillation weight: (1 - alpha)·LM + alpha·LD (der, lwf, seekr)
    beta: float = 1000.0  # attention-distillation weight (seekr)
    seekr_layer_budget: int = 0  # layers kept by SEEKR's selection; 0 = 75% of layers
    seekr_head_budget: int = 0  # heads kept, inside those layers; 0 = 12.5% of all heads
    seekr_query_budget: int = 0  # random query rows distilled per record; 0 = all
    eval_records: int = 200  # test records per task scored after every task; 0 = all
    balance_interval: int = (
        0  # replay micro-batches between gradient-balance readouts (der, seekr); 0 = off
    )


RANGES = dict(
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
)  # checked with train.py's (train.RANGES)


def check_continual(cfg):
    """The rules of --mode=continual, called by train.Config.__post_init__ (the model's shape is checked later,
    against the checkpoint: selection_budgets)."""
    if not cfg.init_from and not cfg.resume:
        raise ConfigError(
            "--mode=continual fine-tunes a pretrained model: pass --init_from=PATH (e.g. out/run, "
            "written by `python train.py`)"
        )
    if cfg.method in BUFFERED and not 0 < cfg.replay <= 1:
        raise ConfigError(
            f"--replay={cfg.replay} must be a fraction in (0, 1], e.g. --replay=0.01 for 1%"
        )
    if cfg.dtype == "float16":
        raise ConfigError(
            "--mode=continual runs in float32 or bfloat16 (float16 would need a gradient scaler); "
            "pass --dtype=bfloat16 or --dtype=float32"
        )


# ----------------------------------------------------------------------------------------------------------------
# batches and losses


def pad_batch(pairs, pad, device, tail=0):
    """[(prompt ids, answer ids + eot)] -> x, y (B, L), right-padded; y is -1 except at the answer tokens, so the LM
    loss covers the answer and its end token only. tail: pad columns after the longest record (see pad_tail)."""
    L = max(len(p) + len(a) for p, a in pairs) - 1 + tail
    x = torch.full((len(pairs), L), pad, dtype=torch.long)
    y = torch.full((len(pairs), L), -1, dtype=torch.long)
    for b, (p, a) in enumerate(pairs):
        seq = torch.tensor(p + a)
        x[b, : len(seq) - 1] = seq[:-1]
        y[b, len(p) - 1 : len(seq) - 1] = seq[len(p) :]
    return x.to(device), y.to(device)


def pad_tail(model):
    """DAPE's key convolutions reach dape_kernel // 2 columns past the diagonal, and zero padding at the sequence's
    end differs from pad tokens there: with that many pad columns always present, a record's maps and logits are
    the same alone and in any right-padded batch (teacher and student line up). Other attention types need none."""
    return model.config.dape_kernel // 2 if model.config.attention == "dape" else 0


def input_length(record):
    """Tokens the model reads for a record: prompt + answer (the end token is only a target)."""
    return len(record["prompt"]) + len(record["answer"]) - 1


def record_batch(model, records, pad, device):
    """Encoded records -> x, y for this model: pad_batch with the model's pad tail."""
    return pad_batch([(r["prompt"], r["answer"]) for r in records], pad, device, pad_tail(model))


def logit_distill(logits, y, teacher_logp):
    """LD: cross-entropy from the teacher's softmax to the student's log-softmax at the answer positions (temperature
    1), mean over positions. teacher_logp (N, V) lists the positions where y != -1 in row-major order."""
    student = F.log_softmax(logits[y != -1].float(), dim=-1)  # (N, V)
    return -(teacher_logp.exp() * student).sum(-1).mean()


def attention_distill(teacher, student, effective=False):
    """AD for one layer: KL(A_T ‖ A_S) over keys, Σ_k a_T·log(a_T / (a_S + 1e-8)), mean over heads and query rows.
    effective=True (diff's A1 - λA2, not a distribution): squared error summed over keys instead."""
    if effective:
        return (teacher - student).pow(2).sum(-1).mean()
    return (
        (torch.xlogy(teacher, teacher) - teacher * torch.log(student + 1e-8)).sum(-1).mean()
    )  # official code's KL


def capture(model, x, heads, y=None):
    """Forward pass that also returns the maps of heads [(layer, head), ...]: (logits, loss, {(layer, head):
    (B, T, T)}), still in the autograd graph. standard: softmax; diff: the effective A1 - λA2; dape: softmax of S'."""
    by_layer = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    logits, loss, maps = model.attention_maps(x, by_layer, y)
    return (
        logits,
        loss,
        {(l, h): maps[l][:, k] for l, hs in by_layer.items() for k, h in enumerate(hs)},
    )


def map_heads(model):
    """(layers, attention maps per layer): diff has n_head // 2 differential heads, each one map."""
    return len(model.transformer.h), model.transformer.h[0].attn.n_head


def attention_loss(maps, batch, heads, device, effective):
    """AD over a replay batch, averaged as the official code does: per layer, each record's distillation over its
    task's heads in that layer and its query rows (0 for a record with none there), summed and divided by the batch
    size; then the mean over the layers that any record selected. heads[j]: task j's frozen [(layer, head), ...]."""
    per_layer = {}
    for b, r in enumerate(batch):
        n, chosen, teacher = input_length(r), heads[r["task"]], r["maps"].to(device)
        for layer in sorted({l for l, _ in chosen}):
            ks = [k for k, (l, _) in enumerate(chosen) if l == layer]
            student = torch.stack(
                [maps[chosen[k]][b][r["rows"]][:, :n] for k in ks]
            ).float()  # (heads, q, n)
            per_layer[layer] = per_layer.get(layer, 0) + attention_distill(
                teacher[ks], student, effective
            )
    return sum(v / len(batch) for v in per_layer.values()) / len(per_layer)


def replay_loss(model, batch, method, heads, alpha, beta, pad, device, autocast):
    """The replay micro-batch of der and seekr on buffer records: (1 − α)·LM + α·LD (der), + β·AD (seekr).
    -> ({"lm": (1 − α)·LM, "ld": α·LD, "ad": β·AD}, the weighted terms whose sum is the loss, {"lm", "ld", "ad":
    the unweighted values})."""
    x, y = record_batch(model, batch, pad, device)
    wanted = sorted({h for r in batch for h in heads[r["task"]]}) if method == "seekr" else []
    with autocast:
        logits, lm, maps = capture(model, x, wanted, y)
    ld = logit_distill(logits, y, torch.cat([r["logp"] for r in batch]).to(device))
    terms = {"lm": (1 - alpha) * lm, "ld": alpha * ld}  # (1 − α)·LM + α·LD
    values = {"lm": lm.item(), "ld": ld.item()}
    if method == "seekr":
        ad = attention_loss(maps, batch, heads, device, model.config.attention == "diff")
        terms["ad"], values["ad"] = beta * ad, ad.item()  # + β·AD
    return terms, values


def part_gradients(model, terms, n_micro):
    """{part: its gradient, one tensor per parameter} of each weighted replay term as it enters the optimizer step
    (divided by the step's micro-batch count). autograd.grad leaves no .grad and keeps the graph for the backward
    that follows."""
    params = [p for p in model.parameters() if p.requires_grad]
    parts = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(term / n_micro, params, retain_graph=True, allow_unused=True)
        parts[name] = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
    return parts


def balance_readout(model, parts):
    """The step's gradient norm (before clipping), each replay part's norm and its share of the update,
    ⟨g_part, g⟩ / ‖g‖² with g the step's whole accumulated gradient: the shares of all parts and of the new-task
    micro-batches add up to 1, and clipping scales every part alike, so they are the shares of the clipped update."""
    total = [p.grad for p in model.parameters() if p.requires_grad]
    sq = sum(g.float().pow(2).sum() for g in total)
    row = {"grad_norm": sq.sqrt().item()}
    for name, grads in parts.items():
        row[f"grad_{name}"] = sum(g.float().pow(2).sum() for g in grads).sqrt().item()
        row[f"share_{name}"] = (
            sum((g.float() * t.float()).sum() for g, t in zip(grads, total)) / sq
        ).item()
    return row


def dominant_part(row, factor=20.0):
    """The replay part whose gradient norm exceeds every other part's by `factor` (None when balanced)."""
    norms = {
        k[len("grad_") :]: v for k, v in row.items() if k.startswith("grad_") and k != "grad_norm"
    }
    for name, norm in norms.items():
        if len(norms) > 1 and all(norm > factor * other for k, other in norms.items() if k != name):
            return name
    return None


# ----------------------------------------------------------------------------------------------------------------
# SEEKR: head importance and budgeted selection


def all_maps(model, record, pad, device):
    """Every head's map on one record, no grad, on the CPU: (layers, heads, n, n), n the record's input length."""
    n, L, H = input_length(record), *map_heads(model)
    x, _ = record_batch(model, [record], pad, device)
    with torch.no_grad():
        maps = model.attention_maps(x, {l: list(range(H)) for l in range(L)})[2]
    return torch.stack([maps[l][0, :, :n, :n].float() for l in range(L)]).cpu()


def score_heads(model, records, before, pad, device):
    """Task sensitivity S (each layer sums to 1) and forgettability F (on each record's query rows), both
    (layers, heads), on model M_i and the maps `before` that M_{i-1} had on the same records; also returns M_i's
    maps, record by record."""
    L, H = map_heads(model)
    sens, forget, after = torch.zeros(L, H), torch.zeros(L, H), []
    for record, old in zip(records, before):
        n = input_length(record)
        x, y = record_batch(model, [record], pad, device)
        _, loss, maps = model.attention_maps(x, {l: list(range(H)) for l in range(L)}, y)
        grads = torch.autograd.grad(
            loss, [maps[l] for l in range(L)]
        )  # no .grad left for the optimizer
        new = torch.stack(
            [maps[l][0, :, :n, :n].detach().float() for l in range(L)]
        ).cpu()  # (L, H, n, n)
        sens += torch.stack(
            [g[0, :, :n, :n].float().pow(2).mean(dim=(1, 2)) for g in grads]
        ).cpu()  # queries, keys
        rows = record["rows"]
        forget += (
            (old[:, :, rows] - new[:, :, rows]).pow(2).mean(dim=(2, 3))
        )  # on the query rows, as official
        after.append(new)
    sens, forget = sens / len(records), forget / len(records)
    return (
        sens / sens.sum(1, keepdim=True).clamp_min(1e-30),
        forget,
        after,
    )  # S: each layer sums to 1


def select_heads(importance, layer_budget, head_budget):
    """Hierarchical selection: the top layer_budget layers by summed importance, then the global top head_budget
    heads inside them (a chosen layer may end with none). -> sorted [(layer, head), ...]."""
    L, H = importance.shape
    layers = torch.topk(importance.sum(1), min(layer_budget, L)).indices
    inside = torch.full_like(importance, float("-inf"))
    inside[layers] = importance[layers]
    top = torch.topk(inside.flatten(), min(head_budget, len(layers) * H)).indices
    return sorted((int(i) // H, int(i) % H) for i in top)


def selection_budgets(model, cfg):
    """SEEKR's (layer, head, query) budgets for this model; 0 means the paper's fractions: 75% of layers, 12.5% of
    all heads, every query row."""
    L, H = map_heads(model)
    layer_b = cfg.seekr_layer_budget or max(1, int(0.75 * L + 0.5))  # halves round up
    head_b = cfg.seekr_head_budget or max(1, int(0.125 * L * H + 0.5))
    if layer_b > L or head_b > layer_b * H:
        raise ConfigError(
            f"--seekr_layer_budget={layer_b} and --seekr_head_budget={head_b} do not fit this model: "
            f"at most {L} layers and {H} heads per chosen layer; use smaller budgets (0 = 75% of "
            "layers, 12.5% of heads)"
        )
    return layer_b, head_b, cfg.seekr_query_budget


# ----------------------------------------------------------------------------------------------------------------
# evaluation


def metrics(R):
    """OP = mean_i R[T][i]; BWT = mean over i < T of R[T][i] - R[i][i] (TRACE); BWT_over_T divides that sum by T
    (SEEKR's official script). R[t][i]: accuracy on task i after task t."""
    T = len(R)
    drop = sum(R[-1][i] - R[i][i] for i in range(T - 1))
    return {"OP": sum(R[-1]) / T, "BWT": drop / (T - 1) if T > 1 else 0.0, "BWT_over_T": drop / T}


@torch.no_grad()
def greedy_answers(model, tok, prompts, max_new, device, autocast, batch_size=64):
    """Greedy decoding of every prompt (token lists) until its end token or max_new tokens -> answer strings.
    Prompts share a right-padded buffer; row b reads its logits at its own last position."""
    out, limit, tail = [], model.config.block_size, pad_tail(model)
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s : s + batch_size]
        lens = torch.tensor([len(p) for p in chunk])
        buf = torch.full(
            (len(chunk), min(int(lens.max()) + max_new + tail, limit)), tok.eot, dtype=torch.long
        )
        for b, p in enumerate(chunk):
            buf[b, : len(p)] = torch.tensor(p)
        buf, pos, rows = (
            buf.to(device),
            lens.clone().to(device),
            torch.arange(len(chunk), device=device),
        )
        done = pos >= buf.size(1)
        for _ in range(max_new):
            with autocast:
                logits = model(buf[:, : min(int(pos.max()) + tail, buf.size(1))])[0]
            logits = logits[rows, pos - 1, : tok.n_vocab]  # each row's last position (B, n_vocab)
            nxt = torch.where(done, tok.eot, logits.argmax(-1))
            buf[rows[~done], pos[~done]] = nxt[~done]
            done = done | (nxt == tok.eot) | (pos + 1 >= buf.size(1) - tail)
            pos = torch.where(nxt == tok.eot, pos, pos + 1)
            if done.all():
                break
        for b in range(len(chunk)):
            ids = buf[b, lens[b] : pos[b]].tolist()
            out.append(tok.decode(ids[: ids.index(tok.eot)] if tok.eot in ids else ids))
    return out


def accuracy(model, tok, test, device, autocast):
    """Exact match (whitespace stripped) of greedy answers on encoded test records."""
    model.eval()
    max_new = max(len(r["answer"]) for r in test)
    got = greedy_answers(model, tok, [r["prompt"] for r in test], max_new, device, autocast)
    model.train()
    return sum(g.strip() == r["text"].strip() for g, r in zip(got, test)) / len(test)


# ----------------------------------------------------------------------------------------------------------------
# the continual run: set up, then per task pick the buffer, before the task, train the task, after the task


def continual(cfg, overrides, saved=None):
    """Fine-tune --init_from on --tasks in order with --method; write the run folder (see the module docstring).
    saved: the checkpoint --resume continues (train.build_config read it)."""
    if "RANK" in os.environ:
        raise ConfigError(
            "--mode=continual runs in one process; start it with python, not torchrun"
        )
    cfg, saved, source = start_run(cfg, overrides, saved, shape_keys(cfg) + ["tokenizer"])
    release = lock_run_folder(cfg.out_dir, fresh=saved is None)  # one live run per out_dir
    run = ContinualRun(cfg, saved, source)
    del saved, source
    for t in range(run.state["task"], len(run.names)):
        t_task = time.time()
        buffer = run.pick_buffer(t)
        before = run.before_task(t, buffer)
        run.train_task(t)
        run.after_task(t, buffer, before)
        run.evaluate_tasks(t, time.time() - t_task)
    run.results()
    release()


class ContinualRun:
    """The state one continual run shares between its phases: config, model, tokenizer, encoded tasks, the
    generators, and `state`, everything a resumed run needs (saved after every task): the accuracy matrix R, the
    replay buffers, each task's frozen head set, the accumulated importance I, timings."""

    def __init__(self, cfg, saved, source):
        self.cfg = cfg
        self.device, self.dtype, self.autocast = setup_device(
            cfg.device, cfg.dtype, fp16=False
        )  # no scaler here
        torch.manual_seed(cfg.seed)
        self.tok = get_tokenizer(cfg.tokenizer)
        order = [name for name in cfg.task_order.split(",") if name] or None
        tasks = load_tasks(cfg.tasks, order, seed=cfg.seed)
        check_task_lengths(tasks, self.tok, cfg.block_size)
        self.names = [name for name, _, _ in tasks]
        self.train_sets = [self.encode(train) for _, train, _ in tasks]
        self.test_sets = [self.encode(test[: cfg.eval_records or None]) for _, _, test in tasks]
        self.check_replay_steps()

        self.model = GPT(model_config(cfg, self.tok.n_vocab)).to(self.device)
        self.model.load_weights((saved or source)["model"], cfg.out_dir if saved else cfg.init_from)
        self.layer_budget, self.head_budget, self.query_budget = selection_budgets(self.model, cfg)
        source_cfg = saved["source_config"] if saved else source["config"]
        self.general = load_split(
            prepare(source_cfg["dataset"], source_cfg["tokenizer"], source_cfg["data_dir"]), "val"
        )
        self.batch_gen = torch.Generator().manual_seed(cfg.seed)
        self.replay_gen = torch.Generator().manual_seed(cfg.seed + 1)
        if saved is None:
            self.state = {
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
        else:
            self.state = {
                k: v for k, v in saved.items() if k not in ("model", "model_config", "config")
            }
            restore_rng(saved["rng"], self.device, batch=self.batch_gen, replay=self.replay_gen)
        L, H = map_heads(self.model)
        self.importance = (
            self.state["importance"][-1].clone() if self.state["importance"] else torch.zeros(L, H)
        )
        open_run_folder(
            cfg.out_dir, cfg, keep=lambda row: row["task"] < self.state["task"]
        )  # redo a cut task
        print(self.header())
        self.first_task, self.t_run = (
            self.state["task"],
            time.time(),
        )  # this session's start, for the ETA

    def encode(self, records):
        return [
            dict(zip(("prompt", "answer"), encode_record(self.tok, r)), text=r["answer"])
            for r in records
        ]

    def header(self):
        cfg = self.cfg
        return (
            f"continual: {cfg.method}"
            + (f" {cfg.replay:g} replay" if cfg.method in BUFFERED else "")
            + f" | {self.model.num_params() / 1e6:.2f}M parameters from {cfg.init_from} | {self.device} "
            f"{self.dtype} | "
            f"tasks {', '.join(self.names)} | {cfg.iters_per_task} steps each, batch {cfg.batch_size}, lr "
            f"{cfg.lr:g}"
            + (
                f" | selection budgets {self.layer_budget} layers, {self.head_budget} heads, "
                f"{self.query_budget or 'all'} query rows"
                if cfg.method == "seekr"
                else ""
            )
            + (f" | resuming at task {self.state['task'] + 1}" if self.state["task"] else "")
        )

    def general_loss(self):
        self.model.eval()
        loss = eval_loss(
            self.model,
            self.general,
            self.cfg.block_size,
            16,
            GENERAL_TOKENS,
            self.device,
            self.autocast,
        )[0]
        self.model.train()
        return loss

    def buffer_size(self, t):
        return (
            max(1, round(self.cfg.replay * len(self.train_sets[t])))
            if self.cfg.method in BUFFERED
            else 0
        )

    def replay_cycle(self, t, n_pool):
        """der, seekr: new-task micro-batches per replay micro-batch on task t with n_pool buffered records (0:
        none). By default len(task batches) // len(replay batches): the buffer seen about once per pass over the
        task, as the official code's replay_cycle."""
        cfg = self.cfg
        if not n_pool or cfg.method not in REPLAY_STEPS:
            return 0
        batches = math.ceil(len(self.train_sets[t]) / cfg.batch_size)
        replay_batches = math.ceil(n_pool / cfg.batch_size)
        return cfg.replay_cycle or max(1, batches // replay_batches)

    def check_replay_steps(self):
        """Refuse settings under which der or seekr would take no replay step on some task (and so equal seqft)."""
        cfg = self.cfg
        n = cfg.iters_per_task * cfg.grad_accum  # new-task micro-batches per task
        for t in range(1, len(self.names)):
            cycle = self.replay_cycle(t, sum(self.buffer_size(j) for j in range(t)))
            if cycle > n:
                raise ConfigError(
                    f"--method={cfg.method} would take no replay step on task {t + 1} "
                    f"({self.names[t]}): its replay cycle is {cycle} micro-batches, more than the {n} of "
                    f"a task (--iters_per_task={cfg.iters_per_task} x --grad_accum={cfg.grad_accum}); "
                    f"pass --replay_cycle={n} or smaller, or more --iters_per_task"
                )

    def pick_buffer(self, t):
        """Task t's buffer R_t: a seeded random r-fraction of its train set (at least one record)."""
        if self.cfg.method not in BUFFERED:
            return []
        train = self.train_sets[t]
        k = self.buffer_size(t)
        picked = torch.randperm(
            len(train), generator=torch.Generator().manual_seed(self.cfg.seed + 7919 * t)
        )[:k]
        return [dict(train[i], task=t) for i in sorted(picked.tolist())]

    def before_task(self, t, buffer):
        """seekr: draw each buffer record's query rows (once) and record every head's map A^{M_{t-1}} on it."""
        if self.cfg.method != "seekr":
            return []
        self.model.eval()
        rows_gen, q, before = (
            torch.Generator().manual_seed(self.cfg.seed + 7919 * t + 1),
            self.query_budget,
            [],
        )
        for r in buffer:
            n = input_length(r)
            r["rows"] = (
                torch.randperm(n, generator=rows_gen)[:q].sort().values
                if 0 < q < n
                else torch.arange(n)
            )
            before.append(all_maps(self.model, r, self.tok.eot, self.device))
        self.model.train()
        return before

    def train_task(self, t):
        """iters_per_task optimizer steps, each over grad_accum new-task micro-batches (lwf: with distillation
        towards M_{t-1}). der and seekr: after every `cycle` new-task micro-batches a replay micro-batch on the
        earlier buffers joins the step it falls in, as the official code's DeepSpeed gradient accumulation does:
        every micro-batch's loss is divided by the step's micro-batch count, and one clip covers them all."""
        cfg, model = self.cfg, self.model
        optimizer = model.configure_optimizers(
            cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2), self.device.split(":")[0]
        )  # fresh per task
        teacher = (
            copy.deepcopy(model).eval() if cfg.method == "lwf" and t > 0 else None
        )  # LwF: M_{t-1}
        pool = [r for buffer in self.state["buffers"] for r in buffer]
        data = (
            self.train_sets[t] + pool if cfg.method == "replay" else self.train_sets[t]
        )  # official ConcatDataset
        cycle, n_replay, warned = self.replay_cycle(t, len(pool)), 0, False
        last_replay, t_last, n_timed = {}, time.time(), 0
        for step in range(cfg.iters_per_task):
            first = step * cfg.grad_accum  # new-task micro-batches of this task before this step
            due = sum(
                1 for j in range(first, first + cfg.grad_accum) if cycle and (j + 1) % cycle == 0
            )
            n_micro, row, readout = cfg.grad_accum + due, {"task": t, "iter": step}, None
            for _ in range(cfg.grad_accum):
                loss, values = self.new_task_loss(data, teacher)
                (loss / n_micro).backward()
                for k, v in values.items():
                    row[k] = row.get(k, 0.0) + v / cfg.grad_accum
            for _ in range(due):
                order = torch.randperm(len(pool), generator=self.replay_gen)[
                    : cfg.batch_size
                ].tolist()
                batch = [pool[i] for i in order]
                terms, values = replay_loss(
                    model,
                    batch,
                    cfg.method,
                    self.state["heads"],
                    cfg.alpha,
                    cfg.beta,
                    self.tok.eot,
                    self.device,
                    self.autocast,
                )
                n_replay += 1
                if cfg.balance_interval and n_replay % cfg.balance_interval == 0:
                    readout = part_gradients(model, terms, n_micro)
                (sum(terms.values()) / n_micro).backward()
                last_replay = {
                    "replay_" + k: v for k, v in values.items()
                }  # logged with the next progress line
            if readout is not None:
                row.update(balance_readout(model, readout))
                warned = warned or self.warn_balance(t, step, row)
            self.optimizer_step(optimizer)
            row.update(last_replay)
            n_timed += 1
            if (
                step % cfg.log_interval == 0
                or step == cfg.iters_per_task - 1
                or readout is not None
            ):
                self.progress(t, step, row, (time.time() - t_last) / n_timed)
                t_last, n_timed = time.time(), 0

    def new_task_loss(self, data, teacher):
        """One new-task micro-batch: the answer LM loss (lwf from task 2: (1 − α)·LM + α·LD towards M_{t-1} on the
        new inputs) -> (loss, values to log)."""
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
                loss, values["ld"] = (1 - cfg.alpha) * loss + cfg.alpha * ld, ld.item()
        return loss, values

    def optimizer_step(self, optimizer):
        """One clip over the step's accumulated gradient, the update, and the gradients cleared for the next step."""
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def warn_balance(self, t, step, row):
        """One warning line (once per task) when one replay part's gradient dwarfs the others. -> whether it warned."""
        part = dominant_part(row)
        if part is not None:
            words = {"lm": "(1 − α)·LM", "ld": "α·LD", "ad": "β·AD"}
            others = ", ".join(
                f"{words[k]} {row['grad_' + k]:.3g}"
                for k in words
                if k != part and "grad_" + k in row
            )
            print(
                f"warning: task {t + 1} step {step}: the replay gradient is almost all {words[part]} "
                f"({row['grad_' + part]:.3g} against {others}; {100 * row['share_' + part]:.0f}% of the update); "
                f"to balance it, scale --{'beta' if part == 'ad' else 'alpha'}"
            )
        return part is not None

    def progress(self, t, step, row, dt):
        """One log.jsonl row and one progress line; the ETA from this session's average speed."""
        cfg, first = self.cfg, self.first_task
        done, total = t * cfg.iters_per_task + step + 1, len(self.names) * cfg.iters_per_task
        eta = eta_text(time.time() - self.t_run, done - first * cfg.iters_per_task, total - done)
        append_log(cfg.out_dir, {**row, "ms": 1000 * dt})
        print(
            f"task {t + 1}/{len(self.names)} {self.names[t]} | iter {step}/{cfg.iters_per_task} | "
            f"loss {row['loss']:.4f}"
            + "".join(
                f" | {k} {v:.4f}" for k, v in row.items() if k not in ("task", "iter", "loss")
            )
            + f" | {1000 * dt:.0f} ms | {eta}"
        )

    def after_task(self, t, buffer, before):
        """On M_t: the buffer's stored logits z_t (der, seekr); seekr: S and F on the buffer, I += S ⊙ F, the
        hierarchical selection, and the chosen heads' maps (query rows only), frozen with the buffer."""
        cfg, model = self.cfg, self.model
        model.eval()
        for r in buffer:
            if cfg.method in ("der", "seekr"):
                x, y = record_batch(model, [r], self.tok.eot, self.device)
                with torch.no_grad(), self.autocast:
                    r["logp"] = F.log_softmax(
                        model(x)[0][y != -1].float(), dim=-1
                    ).cpu()  # z_t, stored DER-style
        if cfg.method == "seekr":
            sens, forget, after = score_heads(model, buffer, before, self.tok.eot, self.device)
            self.importance = self.importance + sens * forget  # I += S ⊙ F
            chosen = select_heads(self.importance, self.layer_budget, self.head_budget)
            for r, maps in zip(buffer, after):
                r["maps"] = torch.stack(
                    [maps[l, h][r["rows"]] for l, h in chosen]
                )  # (heads, q, n) teacher maps
            self.state["heads"].append(chosen)
            self.state["importance"].append(self.importance.clone())
            print(f"task {t + 1} heads (layer, head): {chosen}")
        model.train()
        self.state["buffers"].append(buffer)

    def evaluate_tasks(self, t, seconds_train):
        """R[t][i] for every task i, then the checkpoint (the next task starts from it on --resume)."""
        state, t_eval = self.state, time.time()
        state["R"].append(
            [
                accuracy(self.model, self.tok, test, self.device, self.autocast)
                for test in self.test_sets
            ]
        )
        state["seconds_eval"] += time.time() - t_eval
        state["seconds"] += seconds_train + time.time() - t_eval
        state["seconds_train"].append(seconds_train)
        print(
            f"after task {t + 1} ({self.names[t]}): accuracy "
            + " ".join(f"{n} {a:.3f}" for n, a in zip(self.names, state["R"][-1]))
            + f" | {seconds_train:.0f} s training"
        )
        state["task"] = t + 1
        state["rng"] = rng_state(self.device, batch=self.batch_gen, replay=self.replay_gen)
        save_atomic(
            {
                **state,
                "model": self.model.state_dict(),
                "model_config": dataclasses.asdict(self.model.config),
                "config": dataclasses.asdict(self.cfg),
            },
            Path(self.cfg.out_dir) / "ckpt.pt",
        )

    def results(self):
        """results.json (OP, BWT, R, general loss before and after, heads, timings) and its figures."""
        cfg, state, out = self.cfg, self.state, Path(self.cfg.out_dir)
        res = {
            "method": cfg.method,
            "replay": cfg.replay if cfg.method in BUFFERED else 0.0,
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
            f"OP {res['OP']:.4f} | BWT {res['BWT']:+.4f} (over T: {res['BWT_over_T']:+.4f}) | general val "
            f"loss {res['general_before']:.4f} -> {res['general_after']:.4f} | {res['seconds']:.0f} s | "
            f"wrote {out}/results.json, R.png, acc_over_time.png"
            + (", heads.png" if res["heads"] else "")
        )


# ----------------------------------------------------------------------------------------------------------------
# figures, redrawn from results.json


def plot_results(run_dir):
    """R.png, acc_over_time.png and (seekr) heads.png beside results.json, redrawn from it."""
    plt = pyplot()
    run_dir = Path(run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    what = res["method"] + (f" {100 * res['replay']:g}% replay" if res["replay"] else "")
    plot_R(plt, res, what, run_dir / "R.png")
    plot_accuracy(plt, res, what, run_dir / "acc_over_time.png")
    if res["heads"]:
        plot_heads(plt, res, what, run_dir / "heads.png")


def plot_R(plt, res, what, path):
    """R[t][i] as a grid; a task not trained yet (i > t) is grey and unnumbered: its accuracy there is zero-shot."""
    R, names = res["R"], res["tasks"]
    shown = [
        [acc if i <= t else float("nan") for i, acc in enumerate(row)] for t, row in enumerate(R)
    ]
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")  # NaN: not trained yet
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(names) + 2), 0.8 * len(R) + 1.6))
    im = ax.imshow(shown, vmin=0, vmax=1, cmap=cmap)
    for t, row in enumerate(R):
        for i, acc in enumerate(row[: t + 1]):
            ax.text(
                i,
                t,
                f"{acc:.2f}",
                ha="center",
                va="center",
                color="w" if acc < 0.6 else "k",
                fontsize=8,
            )
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(R)), [f"after {n}" for n in names[: len(R)]])
    ax.set_xlabel("evaluated on task (grey: not trained yet)")
    ax.set_title(f"{what}: exact match R[t][i] | OP {res['OP']:.3f}, BWT {res['BWT']:+.3f}")
    fig.colorbar(im, ax=ax, label="exact-match accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy(plt, res, what, path):
    """Each task's accuracy from the step it was trained on (a large marker) to the end of the sequence; lines are
    dodged sideways and marked differently, so tasks that all sit at zero stay apart."""
    R, names = res["R"], res["tasks"]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, name in enumerate(names[: len(R)]):
        dx = 0.06 * (i - (len(names) - 1) / 2)  # sideways dodge
        steps = [t + 1 + dx for t in range(i, len(R))]
        accs = [R[t][i] for t in range(i, len(R))]
        marker = "osD^vPX*"[i % 8]
        (line,) = ax.plot(steps, accs, marker=marker, ms=5, lw=1.3, label=name)
        ax.plot(
            steps[0],
            accs[0],
            marker=marker,
            ms=11,
            color=line.get_color(),
            mec="k",
            mew=1.2,
            ls="none",
        )
    ax.set_xticks(range(1, len(R) + 1), [f"{t + 1}\n{n}" for t, n in enumerate(names[: len(R)])])
    ax.set_xlabel("tasks trained so far (the last one named)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(-0.04, 1.04)
    ax.set_title(
        f"{what}: accuracy of each task from when it was trained (large marker) on; seed {res['seed']}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="task", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_heads(plt, res, what, path):
    """The importance I of every layer x head after each task, its own colour scale per panel (I accumulates), the
    selected heads boxed."""
    from matplotlib.ticker import MaxNLocator

    names, k = res["tasks"], len(res["heads"])
    fig, axes = plt.subplots(
        1, k, figsize=(2.9 * k + 0.5, 3.4), squeeze=False, layout="constrained"
    )
    for t, (ax, imp, chosen) in enumerate(zip(axes[0], res["importance"], res["heads"])):
        im = ax.imshow(imp, cmap="magma")
        ax.scatter(
            [h for _, h in chosen],
            [l for l, _ in chosen],
            marker="s",
            s=120,
            facecolors="none",
            edgecolors="cyan",
            linewidths=2,
        )
        ax.set_xticks(range(len(imp[0])))
        ax.set_yticks(range(len(imp)))
        ax.set_title(f"after {names[t]}", fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer" if t == 0 else "")
        bar = fig.colorbar(im, ax=ax, shrink=0.8, label="importance I" if t == k - 1 else None)
        bar.ax.yaxis.set_major_locator(MaxNLocator(4))
        bar.formatter.set_powerlimits((0, 0))  # one power of ten above the bar, short tick labels
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(
        f"{what}: importance I = Σ S⊙F per layer x head, selected heads boxed", fontsize=10
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)
