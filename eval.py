"""Measure checkpoints: `python eval.py --ckpt=RUN [--mode=...] [--key=value ...]`.

loss         val loss, perplexity and bits per byte over non-overlapping windows of the split
sample       text generated from --prompt (default: from the end-of-text token)
outliers     the Diff Transformer's outlier statistics: top attention logit and top hidden |x|
extrapolate  (several --ckpt) DAPE's protocol: perplexity of the last --tail tokens at each of
             --lengths, on the same text at every length; extrapolation.json and .png
maps         (several --ckpt) the prompt's attention, piece by piece: maps_<run>.png per checkpoint
recall       (several --ckpt) MQAR recall accuracy at --pairs × --lengths, and each head's attention
             on the answer pair; recall.json and .png
The run-folder comparisons (schedules, compare, seeds, continual) are compare.py's: `python eval.py
--mode=seeds ...` hands them over.

The model is rebuilt from the GPTConfig stored in the checkpoint (load_model), so eval needs nothing
from the run folder but ckpt.pt. Figures: plots.py. Bits per byte use the split's bytes-per-token
ratio from meta.json, which makes byte and BPE runs comparable.
"""

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import compare
import data
import gpt2
from attention import ATTENTIONS
from model import GPT, GPTConfig
from plots import map_title, plot_extrapolation, plot_maps, plot_recall
from plumbing import (
    RUN_CHOICES,
    ConfigError,
    check_declared,
    checkpoint_path,
    cli,
    parse_flags,
    setup_device,
    tokens_per_step,
)


def load_model(path, device):
    """-> (GPT in eval mode on device, the run's training config as a dict)."""
    ckpt = gpt2.load_checkpoint(path, device)  # a run's checkpoint, or GPT-2's weights
    try:
        model = GPT(GPTConfig(**ckpt["model_config"]))
    except TypeError:  # a model_config with fields this GPTConfig does not know
        raise ConfigError(
            f"{path}: its model_config does not describe a GPT of this version; pass a checkpoint "
            "written by train.py"
        ) from None
    model.load_weights(ckpt["model"], path)
    return model.to(device).eval(), ckpt["config"]


def max_length(model):
    """The longest input a model reads: block_size with learned positions (one embedding per
    position), else no limit."""
    return model.config.block_size if "wpe" in model.transformer else math.inf


def checkpoint_name(path):
    """A checkpoint by its run folder: `run` (run/ckpt.pt), `run_budget_100` (run/budget_100.pt);
    GPT-2's weights by their name (gpt2) or folder."""
    p = checkpoint_path(path)
    if gpt2.is_gpt2(path):
        return Path(path).parent.name if Path(path).name == "model.safetensors" else Path(path).stem
    return p.parent.name if p.name == "ckpt.pt" else f"{p.parent.name}_{p.stem}"


def run_folder(path):
    """Where a checkpoint's figures go by default: its folder; out/<name> for a hub name."""
    return Path("out") / path if path in gpt2.NAMES else checkpoint_path(path).parent


def out_folder(cfg):
    """--out, or the first checkpoint's run folder; made."""
    out = Path(cfg.out) if cfg.out else run_folder(cfg.ckpt[0])
    out.mkdir(parents=True, exist_ok=True)
    return out


def numbers(text):
    """A comma-separated list flag (--lengths=128,256) -> [128, 256]."""
    return [int(n) for n in text.split(",")]


# ------------------------------------------------------------------------------------------------
# loss, outliers


def split_tokens(cfg, dataset, run, split, length):
    """The split's tokens in the checkpoint's tokenizer, checked to hold a window of `length`
    -> (tokens, the prepared folder)."""
    folder = data.prepare(dataset, run["tokenizer"], cfg.data_dir)
    tokens = data.load_split(folder, split)
    data.check_block(tokens, length, split, folder)
    return tokens, folder


def windows(tokens, starts, length):
    """(len(starts), length) int64 tensor: the windows of `tokens` that begin at `starts`."""
    return torch.stack([torch.from_numpy(tokens[s : s + length].astype("int64")) for s in starts])


@torch.no_grad()
def eval_loss(model, tokens, eval_len, batch_size, max_tokens, device, autocast):
    """Mean next-token loss over non-overlapping windows of eval_len tokens -> (loss, tokens)."""
    n_windows = max(1, min(len(tokens) - 1, max_tokens) // eval_len)
    total = 0.0
    count = 0
    for start in range(0, n_windows, batch_size):
        rows = range(start, min(start + batch_size, n_windows))
        chunk = windows(tokens, [w * eval_len for w in rows], eval_len + 1).to(device)
        with autocast:
            _, loss = model(chunk[:, :-1], chunk[:, 1:])
        total = total + loss.item() * chunk[:, 1:].numel()
        count = count + chunk[:, 1:].numel()
    return total / count, count


@torch.no_grad()
def outlier_stats(model, tokens, eval_len, batch_size, batches, device, autocast):
    """The outlier statistics of arXiv 2410.05258 §3.8 (Table 6) on the first batches × batch_size
    windows, read through forward hooks: the top attention logit (max q·k/√d over layers, heads,
    positions) and the top hidden activation (max |x| after each block), each with the median of
    the per-layer medians for scale. -> ({"logit"|"hidden": (top, where, median)}, windows used)."""
    seen = {"logit": [], "hidden": []}  # (max, median, where) per layer and batch

    def on_attention(layer):
        def hook(attn, args):
            att = attn.attention_logits(args[0]).float()  # (B, q/k heads, T, T)
            per_head = att.amax(dim=(0, 2, 3))
            where = f"layer {layer}, q/k head {per_head.argmax().item()}"
            median = att[att > -math.inf].median().item()
            seen["logit"].append((per_head.max().item(), median, where))

        return hook

    def on_block(layer):
        def hook(block, args, out):
            a = out.float().abs()
            seen["hidden"].append((a.max().item(), a.median().item(), f"after block {layer}"))

        return hook

    blocks = list(enumerate(model.transformer.h))
    hooks = [b.attn.register_forward_pre_hook(on_attention(l)) for l, b in blocks]
    hooks += [b.register_forward_hook(on_block(l)) for l, b in blocks]
    n_windows = max(1, min(batches * batch_size, (len(tokens) - 1) // eval_len))
    try:
        for start in range(0, n_windows, batch_size):
            rows = range(start, min(start + batch_size, n_windows))
            with autocast:
                model(windows(tokens, [w * eval_len for w in rows], eval_len).to(device))
    finally:
        for h in hooks:
            h.remove()
    stats = {}
    for kind, rows in seen.items():
        top, _, where = max(rows)
        medians = sorted(m for _, m, _ in rows)
        stats[kind] = (top, where, medians[len(medians) // 2])
    return stats, n_windows


# ------------------------------------------------------------------------------------------------
# extrapolate: DAPE's length-extrapolation protocol


@torch.no_grad()
def tail_loss(model, tokens, n, ends, tail, device, autocast):
    """Mean loss on the last `tail` tokens of the windows of n + 1 tokens that end at `ends`, each
    fed whole. Only the tail's logits are computed: no (n, vocab) tensor at long lengths."""
    total = 0.0
    for end in ends:
        chunk = torch.from_numpy(tokens[end - n - 1 : end].astype(np.int64)).to(device)[None]
        with autocast:
            logits = model.logits(model.features(chunk[:, :-1])[:, -tail:])  # (1, tail, vocab)
        total += F.cross_entropy(logits[0].float(), chunk[0, -tail:], reduction="sum").item()
    return total / (len(ends) * tail)


def extrapolation_run(cfg, path, model, run, lengths, tail, device, autocast):
    """One checkpoint at every length, a progress line each -> its entry in extrapolation.json."""
    model.set_q_chunk(cfg.q_chunk)
    tokens, _ = split_tokens(cfg, run["dataset"], run, "val", max(lengths) + cfg.windows)
    # the windows end at the same places at every length: every length scores the same text
    ends = np.linspace(max(lengths) + 1, len(tokens), cfg.windows).astype(np.int64)
    r = dict(
        ckpt=str(path),
        attention=run["attention"],
        pos=model.config.pos,
        block_size=model.config.block_size,
        params=model.num_params(),
        preset=run["preset"],
        shape=f"{run['n_layer']}x{run['n_embd']}",
        dataset=run["dataset"],
        tokenizer=run["tokenizer"],
        seed=run["seed"],
        tokens=run["max_iters"] * tokens_per_step(run),
        ppl=[],
        seconds=[],
    )
    for n in lengths:
        t0 = time.perf_counter()
        r["ppl"].append(math.exp(tail_loss(model, tokens, n, ends, tail, device, autocast)))
        r["seconds"].append(time.perf_counter() - t0)
        print(
            f"{path} ({r['attention']}/{r['pos']}, trained at {r['block_size']}): length {n}: "
            f"perplexity {r['ppl'][-1]:.3f} ({r['seconds'][-1]:.1f} s)",
            flush=True,
        )
    return r


def learned_limit(path, model, lengths):
    """Refuse lengths past a learned-position model's block_size."""
    if max(lengths) > max_length(model):
        raise ConfigError(
            f"{path} uses learned positions, which stop at block_size={model.config.block_size}; "
            f"drop it or keep --lengths <= {model.config.block_size}"
        )


# ------------------------------------------------------------------------------------------------
# maps: the prompt's attention, piece by piece, as each module names its pieces (map_parts)

DEFAULT_PROMPT = "def add(a, b):\n    return a + b\n"  # like the default corpus: code
MAX_MAP_TOKENS = 64  # tokens per axis beyond which the tick labels no longer read


def chosen_heads(cfg, model, path):
    """The (layer, head)s that --layers and --heads pick in this model, checked against its sizes
    (paired heads count as one differential head) -> [(layer, head), ...], layer by layer."""
    n_layer = model.config.n_layer
    n_head = model.transformer.h[0].attn.n_head
    variant = ATTENTIONS[model.config.attention]
    kind = f"{variant.head_kind} head" if variant.paired_heads else "head"
    layers = numbers(cfg.layers) if cfg.layers else sorted({0, n_layer - 1})
    heads = numbers(cfg.heads) if cfg.heads else list(range(min(2, n_head)))
    for flag, picked, n, what in (
        ("layers", layers, n_layer, "layer"),
        ("heads", heads, n_head, kind),
    ):
        if max(picked) >= n:
            raise ConfigError(
                f"--{flag}={getattr(cfg, flag)} is out of range: {path} has {n} {what}"
                f"{'s' if n > 1 else ''}, so --{flag} takes indices 0..{n - 1}"
            )
    return [(layer, head) for layer in dict.fromkeys(layers) for head in dict.fromkeys(heads)]


@torch.no_grad()
def layer_map_parts(model, idx, layers):
    """{layer: {piece: (n_head, T, T)}} for one prompt idx (1, T): a forward pre-hook hands each
    chosen layer's input to its attention's map_parts. fp32, no autocast: maps are small."""
    parts = {}

    def on_attention(layer):
        def hook(attn, args):
            pieces = attn.map_parts(args[0]).items()
            parts[layer] = {name: piece[0].float().cpu() for name, piece in pieces}

        return hook

    blocks = model.transformer.h
    hooks = [blocks[layer].attn.register_forward_pre_hook(on_attention(layer)) for layer in layers]
    try:
        model.features(idx)
    finally:
        for h in hooks:
            h.remove()
    return parts


def map_files(cfg, paths):
    """The figure each checkpoint gets: maps_<run folder>.png (maps_<run>_<file>.png for a
    checkpoint other than ckpt.pt) in --out or the first run's folder; --out=NAME.png names the
    figure of a single checkpoint."""
    if cfg.out.endswith(".png"):
        if len(paths) > 1:
            raise ConfigError(
                f"--out={cfg.out} names one figure, but --ckpt names {len(paths)} checkpoints; "
                "pass a folder as --out"
            )
        return [Path(cfg.out)]
    out = Path(cfg.out) if cfg.out else run_folder(paths[0])
    files = []
    for path in paths:
        name = checkpoint_name(path)
        while out / f"maps_{name}.png" in files:  # two runs whose folders share a name
            name += "_"
        files.append(out / f"maps_{name}.png")
    return files


def prompt_ids(prompt, tokenizer, seed):
    """The prompt's ids; `repeat:N` is N random ids (seeded) twice over, where an induction head
    attends from each token of the second copy to the one after its first occurrence: a diagonal
    N keys left of the main one (Olsson et al. 2022)."""
    if not prompt.startswith("repeat:"):
        return tokenizer.encode(prompt)
    n = prompt.removeprefix("repeat:")
    if not n.isdigit() or int(n) < 1:
        raise ConfigError(f"--prompt={prompt}: repeat: takes a count, e.g. --prompt=repeat:24")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, tokenizer.n_vocab, (int(n),), generator=g).tolist()
    return [i if i != tokenizer.eot else 0 for i in ids] * 2


def map_job(cfg, path, prompt, device):
    """One checkpoint loaded, its prompt encoded and its (layer, head)s checked."""
    model, run = load_model(path, device)
    tokenizer = data.get_tokenizer(run["tokenizer"])
    ids = prompt_ids(prompt, tokenizer, cfg.seed)
    if len(ids) > MAX_MAP_TOKENS:
        raise ConfigError(
            f"--prompt is {len(ids)} tokens for {path} ({run['tokenizer']} tokenizer), and a map "
            f"reads up to {MAX_MAP_TOKENS} per axis; shorten --prompt"
        )
    if len(ids) > max_length(model):
        raise ConfigError(
            f"--prompt is {len(ids)} tokens, longer than block_size={model.config.block_size} of "
            f"{path}, the limit of learned positions; shorten --prompt"
        )
    return model, run, tokenizer, ids, chosen_heads(cfg, model, path)


# ------------------------------------------------------------------------------------------------
# recall: multi-query associative recall of --dataset=mqar checkpoints, and where their heads look

SHARE_BATCHES = 2  # batches of the answer-share measurement: its maps are (B, H, T, T) per layer


@torch.no_grad()
def recall_accuracy(model, task, length, batches, batch_size, seed, device, autocast):
    """answer_accuracy over batches × batch_size sequences of `length` tokens from a generator
    seeded with `seed` (the same sequences for every model of the same task). Only the answers'
    logits are computed: at long lengths the (T, vocab) logits would dwarf the model."""
    gen = torch.Generator().manual_seed(seed)
    right = torch.zeros((), device=device)
    for _ in range(batches):
        x, y = task.batch(batch_size, length, gen)
        x = x.to(device)
        y = y.to(device)
        answers = y != -1
        with autocast:
            logits = model.logits(model.features(x)[answers])  # (batch_size·pairs, vocab)
        right += data.answer_accuracy(logits.float(), y[answers])
    return right.item() / batches  # each batch holds batch_size·pairs answers: the mean is exact


def answer_share(att, x, y, pairs):
    """The attention on the answer: at each query i (y != -1), the share sum_{j in pair} |a_ij| /
    sum_j |a_ij|, where the pair is the queried key's position in the context and the value after
    it. att (B, H, T, T); x, y (B, T) -> (H,) the mean over every query of the batch."""
    b, i = (y != -1).nonzero(as_tuple=True)  # (Q,) each query's row and position
    key_at = 2 * (x[b, 0 : 2 * pairs : 2] == x[b, i][:, None]).long().argmax(dim=1)  # (Q,)
    rows = att[b, :, i].abs()  # (Q, H, T): each query's attention row, head by head
    pair = torch.stack([key_at, key_at + 1], dim=1)[:, None, :].expand(-1, rows.size(1), -1)
    return (rows.gather(2, pair).sum(-1) / rows.sum(-1)).mean(dim=0)  # pair: (Q, H, 2)


@torch.no_grad()
def answer_shares(model, task, length, batch_size, seed, device):
    """answer_share of every layer and head -> (n_layer, heads), over SHARE_BATCHES batches, from
    the captured maps (GPT.attention_maps; diff: the effective map A1 − λ·A2). fp32."""
    gen = torch.Generator().manual_seed(seed)
    heads = {layer: list(range(b.attn.n_head)) for layer, b in enumerate(model.transformer.h)}
    total = 0
    for _ in range(SHARE_BATCHES):
        x, y = task.batch(batch_size, length, gen)
        maps = model.attention_maps(x.to(device), heads)[2]  # {layer: (B, heads, T, T)}
        shares = [answer_share(maps[layer].float().cpu(), x, y, task.pairs) for layer in heads]
        total = total + torch.stack(shares)
    return total / SHARE_BATCHES


def recall_job(cfg, path, device):
    """One checkpoint loaded with its task and its (pairs, lengths) grid, checked."""
    model, run = load_model(path, device)
    task = data.mqar_task(run["dataset"])
    if task is None:
        raise ConfigError(
            f"{path} was trained on --dataset={run['dataset']}, not mqar; --mode=recall scores "
            "checkpoints of `python train.py --dataset=mqar`"
        )
    pairs = numbers(cfg.pairs) if cfg.pairs else [task.pairs]
    lengths = numbers(cfg.lengths) if cfg.lengths else [model.config.block_size]
    learned_limit(path, model, lengths)
    for p in pairs:
        if p > task.keys:
            raise ConfigError(
                f"--pairs={cfg.pairs}: {p} distinct keys cannot be drawn from the {task.keys} keys "
                f"{path} was trained on; keep --pairs <= {task.keys}"
            )
        if min(lengths) < (need := data.MQAR(p, task.keys).min_length):
            raise ConfigError(
                f"--pairs={p} needs sequences of >= 4 x pairs = {need} tokens (the pairs, then a "
                f"query and a filler per pair), but length {min(lengths)} is asked for; drop it "
                f"from --lengths or keep --pairs <= {min(lengths) // 4}"
            )
    return path, model, run, task, pairs, lengths


def recall_run(cfg, path, model, run, task, pairs, lengths, device, autocast, named):
    """One checkpoint's points (a line each) and its answer-share table -> its recall.json entry."""
    model.set_q_chunk(cfg.q_chunk)
    prefix = f"{checkpoint_name(path)} " if named else ""
    points = []
    for p in pairs:
        at = data.MQAR(p, task.keys)
        for n in lengths:
            acc = recall_accuracy(
                model, at, n, cfg.batches, cfg.batch_size, cfg.seed, device, autocast
            )
            points.append(dict(pairs=p, length=n, accuracy=acc, chance=at.chance))
            where = f"{prefix}pairs {p} length {n}: " if named else ""
            print(where + at.recall_text(acc), flush=True)
    share = answer_shares(model, task, model.config.block_size, cfg.batch_size, cfg.seed, device)
    layer, head = divmod(share.argmax().item(), share.size(1))
    if named:  # the plain `--mode=recall` prints its one accuracy line; the shares are in the json
        print(
            f"{prefix.strip()}: attention on the answer pair: best head L{layer}.H{head} "
            f"{share.max().item():.2f}, mean over heads {share.mean().item():.2f}"
        )
    return dict(
        ckpt=str(path),
        label=checkpoint_name(path),
        attention=run["attention"],
        pos=model.config.pos,
        type=f"{run['attention']}/{model.config.pos}",
        params=model.num_params(),
        **{k: run[k] for k in ("seed", "preset", "n_layer", "n_embd", "n_head", "dataset")},
        tokens=run["max_iters"] * tokens_per_step(run),
        block_size=model.config.block_size,
        pairs=task.pairs,
        keys=task.keys,
        points=points,
        answer_share=share.tolist(),
        answer_share_at=dict(pairs=task.pairs, length=model.config.block_size),
    )


# ------------------------------------------------------------------------------------------------
# the modes: each measures --ckpt and prints (and writes) its result


def report_loss(cfg, device, autocast):
    model, run = load_model(cfg.ckpt[0], device)
    block_size = model.config.block_size
    eval_len = cfg.eval_len or block_size
    if eval_len > max_length(model):
        raise ConfigError(
            f"--eval_len={eval_len} is longer than block_size={block_size}, the limit of learned "
            f"positions; use --eval_len<={block_size}"
        )
    tokens, folder = split_tokens(cfg, cfg.dataset or run["dataset"], run, cfg.split, eval_len)
    meta = data.load_meta(folder)
    loss, n = eval_loss(model, tokens, eval_len, cfg.batch_size, cfg.max_tokens, device, autocast)
    bpb = data.bits_per_byte(loss, meta, cfg.split)
    print(
        f"{cfg.split}_loss {loss:.4f} | perplexity {math.exp(loss):.3f} | {bpb:.4f} bits/byte | "
        f"{n:,} tokens of {folder}/{cfg.split}.bin in windows of {eval_len}"
    )


def print_samples(cfg, device, autocast):
    model, run = load_model(cfg.ckpt[0], device)
    tokenizer = data.get_tokenizer(run["tokenizer"])
    ids = tokenizer.encode(cfg.prompt) if cfg.prompt else [tokenizer.eot]
    if len(ids) > max_length(model):
        raise ConfigError(
            f"the prompt is {len(ids)} tokens, longer than block_size={model.config.block_size}, "
            "the limit of learned positions; shorten --prompt"
        )
    torch.manual_seed(cfg.seed)
    x = torch.tensor([ids] * cfg.num_samples, device=device)
    with autocast:
        out = model.generate(x, cfg.max_new_tokens, cfg.temperature, cfg.top_k or None)
    for row in out.tolist():
        text = tokenizer.decode([t for t in row if t < tokenizer.n_vocab and t != tokenizer.eot])
        print(text + "\n" + "-" * 40)


def report_outliers(cfg, device, autocast):
    model, run = load_model(cfg.ckpt[0], device)
    eval_len = cfg.eval_len or model.config.block_size  # learned positions refuse longer ones
    tokens, folder = split_tokens(cfg, cfg.dataset or run["dataset"], run, cfg.split, eval_len)
    stats, n = outlier_stats(model, tokens, eval_len, cfg.batch_size, cfg.batches, device, autocast)
    logit, where, median = stats["logit"]
    act, act_where, act_median = stats["hidden"]
    print(
        f"top attention logit {logit:.2f} ({where}; median {median:.2f}) | q·k/√d before softmax, "
        f"{n} windows of {eval_len} tokens of {folder}/{cfg.split}.bin"
    )
    print(
        f"top hidden activation {act:.2f} ({act_where}; median |x| {act_median:.3f}) | residual "
        f"stream, {model.config.attention} attention"
    )


def extrapolate(cfg, device, autocast):
    """Every checkpoint at every length (a progress line each), a markdown table, then
    extrapolation.json and extrapolation.png."""
    loaded = [load_model(p, device) for p in cfg.ckpt]
    first_block = loaded[0][0].config.block_size
    if cfg.lengths:
        lengths = numbers(cfg.lengths)
    else:
        doubled = [first_block * 2**i for i in range(6)]
        lengths = [n for n in doubled if n <= max(8192, first_block)]
    for path, (model, _) in zip(cfg.ckpt, loaded):
        learned_limit(path, model, lengths)
    tail = min(cfg.tail, min(lengths))
    if tail < cfg.tail:
        print(
            f"note: the shortest length is {min(lengths)}, so every length scores its last "
            f"{tail} tokens"
        )
    runs = [
        extrapolation_run(cfg, path, model, run, lengths, tail, device, autocast)
        for path, (model, run) in zip(cfg.ckpt, loaded)
    ]
    names = [f"{r['attention']}/{r['pos']}" for r in runs]
    for r, name in zip(runs, names):  # the run folder's name where two runs would share a label
        r["label"] = name if names.count(name) == 1 else checkpoint_path(r["ckpt"]).parent.name
    print(f"\nperplexity of the last {tail} tokens, {cfg.windows} val windows ({device}):\n")
    print("| length | " + " | ".join(f"{r['label']} ({r['block_size']})" for r in runs) + " |")
    print("| ---: | " + " | ".join("---:" for _ in runs) + " |")
    for i, n in enumerate(lengths):
        print(f"| {n} | " + " | ".join(f"{r['ppl'][i]:.3f}" for r in runs) + " |")
    out = out_folder(cfg)
    res = dict(
        lengths=lengths,
        tail=tail,
        windows=cfg.windows,
        q_chunk=cfg.q_chunk,
        device=str(device),
        runs=runs,
    )
    (out / "extrapolation.json").write_text(json.dumps(res, indent=2))
    plot_extrapolation(out / "extrapolation.json")
    print(f"\nwrote {out}/extrapolation.json and {out}/extrapolation.png")


def draw_maps(cfg, device, autocast):
    """Every checkpoint loaded and checked before the first figure; a figure per checkpoint."""
    prompt = cfg.prompt or DEFAULT_PROMPT
    files = map_files(cfg, cfg.ckpt)
    jobs = [map_job(cfg, path, prompt, device) for path in cfg.ckpt]
    for path, file, (model, run, tokenizer, ids, pairs) in zip(cfg.ckpt, files, jobs):
        idx = torch.tensor([ids], device=device)
        parts = layer_map_parts(model, idx, sorted({layer for layer, _ in pairs}))
        blocks = enumerate(model.transformer.h)
        lams = {layer: b.attn.lam().item() for layer, b in blocks if hasattr(b.attn, "lam")}
        tokens = [tokenizer.decode([i]) for i in ids]
        title = map_title(checkpoint_name(path), model.config, run, prompt, len(ids))
        plot_maps(parts, pairs, tokens, lams, title, file)
    for file in files:
        print(f"wrote {file}")


def recall(cfg, device, autocast):
    """Every checkpoint at every (pairs, length), its answer shares, recall.json and recall.png."""
    jobs = [recall_job(cfg, path, device) for path in cfg.ckpt]
    named = len(cfg.ckpt) > 1 or bool(cfg.pairs or cfg.lengths)  # one line alone needs no name
    runs = [recall_run(cfg, *job, device, autocast, named) for job in jobs]
    out = out_folder(cfg)
    res = dict(
        seed=cfg.seed,
        batches=cfg.batches,
        batch_size=cfg.batch_size,
        share_batches=SHARE_BATCHES,
        device=str(device),
        runs=runs,
    )
    (out / "recall.json").write_text(json.dumps(res, indent=2))
    plot_recall(out / "recall.json")
    if named:
        print(f"wrote {out}/recall.json and {out}/recall.png")


ONE_CHECKPOINT = dict(loss=report_loss, sample=print_samples, outliers=report_outliers)
SEVERAL = dict(extrapolate=extrapolate, maps=draw_maps, recall=recall)  # any number of --ckpt
MODES = {**ONE_CHECKPOINT, **SEVERAL}

# ------------------------------------------------------------------------------------------------
# the config: flags, declared checks, main


@dataclass
class EvalConfig:
    ckpt: list = field(default_factory=list)  # ckpt.pt files or run folders (repeat or commas)
    mode: str = "loss"  # the run-folder ones go to compare.py (python compare.py --help)
    out: str = ""  # extrapolate, maps, recall: where the files go (default: the first run's folder)
    # loss, outliers
    dataset: str = ""  # default: the checkpoint's
    data_dir: str = "data"
    split: str = "val"
    eval_len: int = 0  # window length; default the checkpoint's block_size
    max_tokens: int = 1 << 20
    batch_size: int = 8
    batches: int = 4  # outliers: batches of windows; recall: of generated sequences per point
    # sample, maps
    # sample: default the end-of-text token; maps: a short line of code, or repeat:N (N random
    # tokens twice: induction heads show as a diagonal N keys left of the main one)
    prompt: str = ""
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 200
    num_samples: int = 1
    seed: int = 1337
    # extrapolate, recall
    lengths: str = ""  # extrapolate: block_size × 1, 2, .. 32 up to 8192; recall: block_size
    windows: int = 8  # val windows per length, the same ones at every length
    tail: int = 256  # tokens scored at the end of each window
    q_chunk: int = 128  # DAPE query rows per chunk; 0: all at once
    pairs: str = ""  # recall: comma-separated key-value pairs per sequence; default the run's
    # maps
    layers: str = ""  # comma-separated layer indices; default the first and the last layer
    heads: str = ""  # comma-separated head indices (diff: differential heads); default 0, 1
    # system
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        check_declared(self, CHOICES, RANGES)
        check_lists(self)
        if not self.ckpt:
            raise ConfigError("--ckpt is required: a ckpt.pt or a run folder, e.g. --ckpt=out/run")
        if len(self.ckpt) > 1 and self.mode in ONE_CHECKPOINT:
            *most, last = SEVERAL
            raise ConfigError(
                f"--mode={self.mode} evaluates one checkpoint; several are for "
                f"--mode={', '.join(most)} or {last}"
            )


RANGES = dict(
    eval_len="[0, inf)",
    max_tokens="[1, inf)",
    batch_size="[1, inf)",
    batches="[1, inf)",
    max_new_tokens="[0, inf)",
    temperature="[0, inf)",
    top_k="[0, inf)",
    num_samples="[1, inf)",
    seed="[0, inf)",
    windows="[1, inf)",
    tail="[1, inf)",
    q_chunk="[0, inf)",
)  # [ includes the end
CHOICES = dict(
    mode=(*MODES, *compare.MODES),
    split=("train", "val"),
    device=RUN_CHOICES["device"],
    dtype=RUN_CHOICES["dtype"],
)
LISTS = dict(  # comma-separated integer flags: (smallest item, what they are, an example)
    lengths=(1, "token counts", "128,256,512"),
    pairs=(1, "numbers of key-value pairs (integers >= 1)", "4,8,16"),
    layers=(0, "layer indices (integers >= 0)", "0,1"),
    heads=(0, "head indices (integers >= 0)", "0,1"),
)


def check_lists(cfg):
    """LISTS: a ConfigError naming the flag and what it takes."""
    for key, (low, what, example) in LISTS.items():
        text = getattr(cfg, key)
        if text and not all(n.isdigit() and int(n) >= low for n in text.split(",")):
            raise ConfigError(
                f"--{key}={text} is not a comma-separated list of {what}; e.g. --{key}={example}"
            )


def main(argv):
    modes = [arg.partition("=")[2] for arg in argv if arg.startswith("--mode=")]
    if modes and modes[-1] in compare.MODES:  # the last --mode wins, as in parse_flags
        return compare.main(argv)
    cfg = EvalConfig(**parse_flags(argv, EvalConfig, CHOICES))
    device, _, autocast = setup_device(cfg.device, cfg.dtype)
    MODES[cfg.mode](cfg, device, autocast)


if __name__ == "__main__":
    cli(main)
