"""Evaluate a checkpoint or compare runs: `python eval.py --mode=... [--key=value ...]`.

loss         val loss, perplexity and bits per byte over non-overlapping windows of the split (default: the
             checkpoint's dataset, windows of its block_size, at most max_tokens tokens)
sample       text generated from --prompt (default: from the end-of-text token)
outliers     the Diff Transformer paper's outlier statistics on the first --batches batches of the loss
             windows: the largest attention logit (q·k/√d before softmax) and the largest hidden activation |x|
extrapolate  (--ckpt=A,B,...) DAPE's length-extrapolation protocol: at each of
             --lengths the whole window is fed and perplexity is scored on its last --tail (256) tokens, over
             --windows fixed val windows that end at the same places for every length (so every length scores
             the same text, with more or less context before it). Prints a table, writes extrapolation.json and
             extrapolation.png (redrawn from the json by plot_extrapolation) into the first run's folder or --out.
             No autograd graph is kept, only the tail's logits are computed, and DAPE runs --q_chunk query rows at
             a time, so memory stays small at 8K tokens.
maps         (--ckpt=A,B,...) the attention of --prompt (default: a short line of code) as PNG heatmaps, the
             prompt's tokens on both axes (spaces shown as ␣, newlines and tabs escaped), the future keys grey. One
             figure per checkpoint, maps_<run>.png in the first run's folder or --out (a folder, or a .png path for
             one checkpoint): the attention types have different pieces and diff half the heads, so their panels
             would not line up in one grid. In a figure, a row per piece, as the module's map_parts names them
             (standard: softmax; diff: A1, A2, A1 − λ·A2 with λ in the title; dape: S + B, the conv's correction,
             softmax(S')), and a column per --layers × --heads (default: the first and last layer, heads 0 and 1).
             A row shares one colour scale, diverging and centred at 0 where it has negative entries.
recall       (--ckpt=A,B,...) multi-query associative recall for `--dataset=mqar` checkpoints: the fraction of
             answers whose argmax is the right value, over --batches × --batch_size sequences generated from --seed
             (the same for every checkpoint), at each --pairs × --lengths (default: the checkpoint's own pairs and
             block_size; longer lengths test recall past the training length, refused for learned positions).
             Also, at the checkpoint's own pairs and length, the attention on the answer: for every layer and head,
             the share of |a_ij| at each query that falls on the queried pair (its key and its value), from the
             captured maps (diff: the effective A1 − λ·A2, whose negative entries count by magnitude), on 2
             batches. One checkpoint at its own task prints one line, `recall accuracy 0.874 (chance 0.125)`;
             otherwise a line per point named by run, pairs and length, then a line per checkpoint with its best
             head's share. Either way recall.json (every point and the share table) and recall.png (redrawn from
             the json by plot_recall: accuracy against pairs and against length, mean ± sample std over the
             checkpoints of each attention type) in the first run's folder or --out.
schedules    (--run=DIR --run=DIR2 ...) every finished model's val loss against the compute spent to get it
             (tokens, decay branches included), as a table and schedules_compare.png with a second panel of the
             train-loss curves, where each decay's drop shows
compare      (--run=a,b) val loss curves from log.jsonl overlaid in one PNG (--out: a .png path, or a folder for
             val_compare.png; default the first run's folder)
seeds        (--run=DIR,... [--x=FIELD]) runs that differ only in --seed pooled (fields that change no number, such
             as --resume or --log_interval, are no difference): every finished model's val loss as mean ± std over
             the seeds, a row per group and budget, the group named by the config fields that differ;
             with --x (a numeric field such as n_head) also seeds.png, final val loss against it, std error bars
continual    (--run=DIR --run=DIR2 ...) `train.py --mode=continual` runs side by side from their results.json: OP,
             BWT (TRACE's, and over T as SEEKR's script), accuracy right after each task, general val loss, seconds

Design choices: flags are parsed from EvalConfig exactly as train.py parses its Config; the model is rebuilt from
the GPTConfig stored in the checkpoint, so eval needs nothing from the run folder but ckpt.pt. Bits per byte use
the split's bytes-per-token ratio from meta.json, which makes byte and BPE runs comparable.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data import (
    MQAR,
    answer_accuracy,
    bits_per_byte,
    check_block,
    get_tokenizer,
    load_meta,
    load_split,
    mqar_task,
    prepare,
)
from model import ATTENTIONS, GPT, HOW_COMPUTED, GPTConfig
from plumbing import (
    ConfigError,
    check_choice,
    check_ranges,
    checkpoint_path,
    cli,
    load_checkpoint,
    parse_flags,
    pyplot,
    read_log,
    setup_device,
    tokens_per_step,
)


@dataclass
class EvalConfig:
    ckpt: list = field(
        default_factory=list
    )  # ckpt.pt files or run folders; several (repeat or commas) for extrapolate
    mode: str = "loss"
    run: list = field(
        default_factory=list
    )  # schedules, compare, seeds, continual: run folders (repeat or commas)
    x: str = ""  # seeds: a numeric config field to plot the final val loss against (e.g. n_head)
    out: str = ""  # schedules, compare, extrapolate, maps: where the figures go (default: the first run's folder)
    # loss
    dataset: str = ""  # default: the checkpoint's
    data_dir: str = "data"
    split: str = "val"
    eval_len: int = 0  # window length; default the checkpoint's block_size
    max_tokens: int = 1 << 20
    batch_size: int = 8
    batches: int = (
        4  # outliers: how many batches of windows; recall: of generated sequences per point
    )
    # sample, maps
    prompt: str = ""  # sample: default the end-of-text token; maps: default a short line of code (DEFAULT_PROMPT)
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 200
    num_samples: int = 1
    seed: int = 1337
    # extrapolate
    lengths: str = ""  # comma-separated; extrapolate: block_size × 1, 2, ... 32, up to 8192; recall: block_size
    windows: int = 8  # val windows per length, the same ones at every length
    tail: int = 256  # tokens scored at the end of each window
    q_chunk: int = 128  # DAPE query rows per chunk; 0: all at once
    # recall
    pairs: str = ""  # comma-separated key-value pairs per sequence; default the checkpoint's
    # maps
    layers: str = ""  # comma-separated layer indices; default the first and the last layer
    heads: str = (
        ""  # comma-separated head indices (diff: its differential heads); default the first two
    )
    # system
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        for key, allowed in CHOICES.items():
            check_choice(key, getattr(self, key), allowed)
        check_ranges(self, RANGES)
        for key, low, what, example in (
            ("lengths", 1, "token counts", "128,256,512"),
            ("pairs", 1, "numbers of key-value pairs (integers >= 1)", "4,8,16"),
            ("layers", 0, "layer indices (integers >= 0)", "0,1"),
            ("heads", 0, "head indices (integers >= 0)", "0,1"),
        ):
            text = getattr(self, key)
            if text and not all(n.isdigit() and int(n) >= low for n in text.split(",")):
                raise ConfigError(
                    f"--{key}={text} is not a comma-separated list of {what}; e.g. --{key}={example}"
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
    mode=(
        "loss",
        "sample",
        "outliers",
        "extrapolate",
        "maps",
        "recall",
        "schedules",
        "compare",
        "seeds",
        "continual",
    ),
    split=("train", "val"),
    device=("auto", "cpu", "cuda", "mps"),
    dtype=("auto", "float32", "bfloat16", "float16"),
)


def load_model(path, device):
    """-> (GPT in eval mode on device, the run's training config as a dict)."""
    ckpt = load_checkpoint(path, device)
    try:
        model = GPT(GPTConfig(**ckpt["model_config"]))
    except TypeError:  # a model_config with fields this GPTConfig does not know
        raise ConfigError(
            f"{path}: its model_config does not describe a GPT of this version; pass a checkpoint "
            "written by train.py"
        ) from None
    model.load_weights(ckpt["model"], path)
    return model.to(device).eval(), ckpt["config"]


@torch.no_grad()
def eval_loss(model, tokens, eval_len, batch_size, max_tokens, device, autocast):
    """Mean next-token loss over non-overlapping windows of eval_len tokens -> (loss, tokens scored)."""
    n_windows = max(1, min(len(tokens) - 1, max_tokens) // eval_len)
    total, count = 0.0, 0
    for start in range(0, n_windows, batch_size):
        rows = range(start, min(start + batch_size, n_windows))
        chunk = torch.stack(
            [
                torch.from_numpy(tokens[w * eval_len : w * eval_len + eval_len + 1].astype("int64"))
                for w in rows
            ]
        ).to(device)
        with autocast:
            _, loss = model(chunk[:, :-1], chunk[:, 1:])
        total, count = total + loss.item() * chunk[:, 1:].numel(), count + chunk[:, 1:].numel()
    return total / count, count


def read_run(run_dir):
    """(config, log rows) of a run folder written by train.py."""
    run_dir = Path(run_dir)
    if not (run_dir / "log.jsonl").exists():
        raise ConfigError(
            f"--run={run_dir} holds no log.jsonl; pass run folders written by train.py"
        )
    return json.loads((run_dir / "config.json").read_text()), read_log(run_dir)


def figure_path(out, run_dir, name):
    """Where a comparison's figure goes: --out itself when it names a .png, else `name` in the folder --out (default:
    the first run's folder); its folder is made."""
    path = Path(out) if out.endswith(".png") else Path(out or run_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def finished_models(run_dir):
    """(config, budget rows, train rows) of a run folder: the finished models and the loss curve."""
    cfg, rows = read_run(run_dir)
    return cfg, [r for r in rows if "budget" in r], [r for r in rows if "loss" in r]


def run_label(run_dir, cfg):
    shape = f" {cfg['decay_shape']}" if cfg["schedule"] in ("wsd", "wsd-s") else ""
    return f"{Path(run_dir).name} ({cfg['schedule']}{shape})"


def compare_schedules(runs, out):
    """Print the table of finished models and draw schedules_compare.png; returns the figure's path."""
    plt = pyplot()
    fig, (ax_val, ax_train) = plt.subplots(1, 2, figsize=(13, 5))
    print(f"{'run':<34} {'budget':>7} {'tokens (M)':>11} {'val loss':>9} {'val bpb':>8}")
    for i, run_dir in enumerate(runs):
        cfg, budgets, train = finished_models(run_dir)
        label, color = run_label(run_dir, cfg), f"C{i}"
        for r in budgets:
            print(
                f"{label:<34} {r['budget']:>7} {r['tokens'] / 1e6:>11.2f} {r['val_loss']:>9.4f} {r['val_bpb']:>8.3f}"
            )
        ax_val.plot(
            [r["tokens"] / 1e6 for r in budgets],
            [r["val_loss"] for r in budgets],
            "o-",
            color=color,
            label=label,
        )
        for branch in sorted({r.get("branch") for r in train}, key=lambda b: b or 0):
            part = [r for r in train if r.get("branch") == branch]
            ax_train.plot(
                [r["iter"] for r in part],
                smooth([r["loss"] for r in part]),
                color=color,
                ls=":" if branch else "-",
                lw=1,
                label=label if branch is None else None,
            )
    late = [
        y
        for line in ax_train.get_lines()
        for x, y in zip(*line.get_data())
        if x >= 0.2 * max(line.get_xdata())
    ]
    if late:  # zoom past the initial drop, where the decays are
        ax_train.set_ylim(min(late) - 0.05, max(late) + 0.05)
    ax_val.set(
        xlabel="compute spent to get the model (million tokens, decay branches included)",
        ylabel="val loss (nats/token)",
        title="finished models: val loss against compute",
    )
    ax_train.set(
        xlabel="step",
        ylabel="train loss (smoothed; dotted: wsd decay branches)",
        title="train loss: the drop at each decay",
    )
    for ax in (ax_val, ax_train):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    cfg = finished_models(runs[0])[0]
    fig.suptitle(
        f"{cfg['preset'] or 'custom'} {cfg['n_layer']}x{cfg['n_embd']}, {cfg['dataset']}, seed {cfg['seed']}"
    )
    fig.tight_layout()
    path = figure_path(out, runs[0], "schedules_compare.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


AXIS_NOTES = {
    "n_head": "n_head (the baseline's heads; diff pairs them into n_head / 2 differential heads)"
}


def finished_runs(runs):
    """[(config, budget rows)] of run folders, each holding at least one finished model."""
    loaded = []
    for run in runs:
        cfg, budgets, _ = finished_models(run)
        if not budgets:
            raise ConfigError(
                f"--run={run} has no finished model yet (no budget row in its log.jsonl)"
            )
        loaded.append((cfg, budgets))
    return loaded


MODEL_DEFAULTS = asdict(
    GPTConfig()
)  # what a config.json written before a model field existed meant
POOLED_OVER = (
    "seed",
    "out_dir",
    "preset",
    "resume",
    "data_dir",
    "log_interval",
    "ckpt_interval",
    "sample_tokens",
    "peak_tflops",
    *HOW_COMPUTED,
)  # the seed, and fields that change no number: a resumed seed pools too


def model_reads(attention, key):
    """False for a field named for another attention type (diff_subln in a standard run): it changes nothing there."""
    kind = key.split("_")[0]
    return kind not in ATTENTIONS or kind == attention


def pooled(loaded, ignore):
    """finished_runs grouped by their config apart from the `ignore` fields -> [(label, [(config, budget rows)])],
    in the order first seen; the label names every field whose value differs between the groups. Fields a run's
    model does not read (model_reads) are left out of its group's key; missing model fields take their defaults."""
    groups = {}
    for cfg, budgets in loaded:
        full = {**MODEL_DEFAULTS, **cfg}
        key = tuple(
            sorted(
                (k, str(v))
                for k, v in full.items()
                if k not in ignore and model_reads(full["attention"], k)
            )
        )
        groups.setdefault(key, []).append((cfg, budgets))
    fields = [dict(key) for key in groups]
    differ = sorted(
        {k for f in fields for k in f if len({other[k] for other in fields if k in other}) > 1}
    )
    label = lambda key: (
        ", ".join(f"{k}={dict(key)[k]}" for k in differ if k in dict(key)) or "all runs"
    )
    return [(label(key), members) for key, members in groups.items()]


def mean_std(values):
    """(mean, sample standard deviation; 0 for a single value)."""
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(
        values
    ) > 1 else 0.0


def seeds_report(runs, x, out):
    """Runs that differ only in --seed pooled: every finished model's val loss as mean ± std over the seeds, printed
    as a table. With x (a numeric config field) also seeds.png: the final val loss against x, one line per group of
    the other fields, std error bars. Returns the figure's path or None."""
    loaded = finished_runs(runs)
    for cfg, _ in (
        loaded if x else []
    ):  # before the table, so that a bad --x prints nothing but its error
        if not isinstance(cfg.get(x), (int, float)) or isinstance(cfg.get(x), bool):
            raise ConfigError(f"--x={x} is not a numeric field of {cfg['out_dir']}'s config")
    print(
        f"{'runs (the fields that differ)':<58} {'budget':>6} {'tokens (M)':>10} {'seeds':>5} {'val loss':>17}  each seed"
    )
    for label, members in pooled(loaded, POOLED_OVER):
        for i, row in enumerate(members[0][1]):
            losses = [budgets[i]["val_loss"] for _, budgets in members if len(budgets) > i]
            m, s = mean_std(losses)
            print(
                f"{label:<58} {row['budget']:>6} {row['tokens'] / 1e6:>10.2f} {len(losses):>5} {m:>8.4f} ± {s:.4f}  "
                + " ".join(f"{v:.4f}" for v in losses)
            )
    if not x:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cfgs = []
    for label, members in pooled(loaded, (*POOLED_OVER, x)):
        by_x = {}
        for cfg, budgets in members:
            by_x.setdefault(cfg[x], []).append(budgets[-1]["val_loss"])
            cfgs.append(cfg)
        xs = sorted(by_x)
        stats = [mean_std(by_x[v]) for v in xs]
        ax.errorbar(
            xs,
            [m for m, _ in stats],
            yerr=[s for _, s in stats],
            marker="o",
            capsize=4,
            label=f"{label} ({min(len(by_x[v]) for v in xs)}+ seeds)",
        )
    ax.set_xticks(sorted({c[x] for c in cfgs}))
    ax.set(
        xlabel=AXIS_NOTES.get(x, x),
        ylabel="final val loss (nats/token), mean ± std over seeds",
        title=f"{shared_title(cfgs)}: val loss against {x}",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = figure_path(out, runs[0], "seeds.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def smooth(values, k=3):
    """Centered moving average (shorter at the ends): per-step losses are noisy."""
    return [
        sum(values[max(0, i - k // 2) : i + k // 2 + 1])
        / len(values[max(0, i - k // 2) : i + k // 2 + 1])
        for i in range(len(values))
    ]


@torch.no_grad()
def outlier_stats(model, tokens, eval_len, batch_size, batches, device, autocast):
    """The paper's outlier statistics (arXiv 2410.05258 §3.8, Table 6) on the first batches × batch_size windows,
    read through forward hooks: the top attention logit (max q·k/√d over layers, heads, positions) and the top
    hidden activation (max |x| of the residual stream after each block), each with the median of the per-layer
    medians for scale. -> ({"logit"|"hidden": (top, where, median)}, windows used)."""
    seen = {"logit": [], "hidden": []}  # (max, median, where) per layer and batch

    def on_attention(layer):
        def hook(attn, args):
            att = attn.attention_logits(args[0]).float()  # (B, q/k heads, T, T)
            per_head = att.amax(dim=(0, 2, 3))
            seen["logit"].append(
                (
                    per_head.max().item(),
                    att[att > -math.inf].median().item(),
                    f"layer {layer}, q/k head {per_head.argmax().item()}",
                )
            )

        return hook

    def on_block(layer):
        def hook(block, args, out):
            a = out.float().abs()
            seen["hidden"].append((a.max().item(), a.median().item(), f"after block {layer}"))

        return hook

    hooks = [
        b.attn.register_forward_pre_hook(on_attention(l)) for l, b in enumerate(model.transformer.h)
    ]
    hooks += [b.register_forward_hook(on_block(l)) for l, b in enumerate(model.transformer.h)]
    n_windows = max(1, min(batches * batch_size, (len(tokens) - 1) // eval_len))
    try:
        for start in range(0, n_windows, batch_size):
            rows = range(start, min(start + batch_size, n_windows))
            x = torch.stack(
                [
                    torch.from_numpy(tokens[w * eval_len : (w + 1) * eval_len].astype("int64"))
                    for w in rows
                ]
            )
            with autocast:
                model(x.to(device))
    finally:
        for h in hooks:
            h.remove()
    stats = {}
    for kind, rows in seen.items():
        top, _, where = max(rows)
        medians = sorted(m for _, m, _ in rows)
        stats[kind] = (top, where, medians[len(medians) // 2])
    return stats, n_windows


def shared_title(cfgs):
    """What every run of a comparison shares (preset, shape, heads, data, seed), and how many runs there are."""
    first = cfgs[0]
    same = lambda *keys: all(len({str(c[k]) for c in cfgs}) == 1 for k in keys)
    parts = [
        first["preset"] or "custom" if same("preset") else "",
        f"{first['n_layer']}x{first['n_embd']}" if same("n_layer", "n_embd") else "",
        f"{first['n_head']} heads" if same("n_head") else "",
        first["dataset"] if same("dataset") else "",
        f"seed {first['seed']}" if same("seed") else "",
    ]
    return ", ".join(p for p in parts if p) + f" ({len(cfgs)} run{'s' if len(cfgs) != 1 else ''})"


def plot_val_curves(runs, out):
    """Val loss against tokens of several runs overlaid, redrawn from their log.jsonl and config.json (main branch
    only, no wsd decay branches). out: a .png path, or a folder for val_compare.png. Returns the figure's path.
    Each line is labelled by its run folder and attention type; the title holds what all the runs share."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    second, cfgs = (
        [],
        [],
    )  # the first eval (random init) would squash the curves; the y axis starts at the second
    for run in runs:
        cfg, rows = read_run(run)
        tokens_per_iter = tokens_per_step(cfg)
        val = [
            (r["iter"] * tokens_per_iter / 1e6, r["val_loss"])
            for r in rows
            if "val_loss" in r and not r.get("branch")
        ]
        if not val:
            raise ConfigError(f"--run={run} has no val_loss rows in its log.jsonl yet")
        ax.plot(
            *zip(*val),
            "o-",
            label=f"{Path(run).name}: {cfg['attention']} ({cfg['pos']}), final {val[-1][1]:.4f}",
        )
        second.append(val[min(1, len(val) - 1)][1])
        cfgs.append(cfg)
    lows = [line.get_ydata().min() for line in ax.get_lines()]
    ax.set_ylim(
        min(lows) - 0.05 * (max(second) - min(lows)), max(second) + 0.1 * (max(second) - min(lows))
    )
    ax.set_xlabel("tokens (millions)")
    ax.set_ylabel(
        f"val loss (nats per token, {'/'.join(sorted({c['tokenizer'] for c in cfgs}))} tokenizer)"
    )
    ax.set_title(shared_title(cfgs), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = figure_path(out, runs[0], "val_compare.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.no_grad()
def tail_loss(model, tokens, n, ends, tail, device, autocast):
    """Mean loss on the last `tail` tokens of the windows of n + 1 tokens that end at `ends`, each fed whole."""
    total = 0.0
    for end in ends:
        chunk = torch.from_numpy(tokens[end - n - 1 : end].astype(np.int64)).to(device)[
            None
        ]  # (1, n + 1)
        with autocast:
            logits = model.lm_head(
                model.features(chunk[:, :-1])[:, -tail:]
            )  # only the scored tail: no (n, vocab)
        total += F.cross_entropy(logits[0].float(), chunk[0, -tail:], reduction="sum").item()
    return total / (len(ends) * tail)


def plot_extrapolation(path):
    """extrapolation.png beside extrapolation.json: perplexity against evaluation length, one line per run."""
    plt = pyplot()
    from matplotlib.ticker import FormatStrFormatter

    res = json.loads(Path(path).read_text())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in res["runs"]:
        ax.plot(res["lengths"], r["ppl"], "o-", label=f"{r['label']} ({r['params'] / 1e6:.2f}M)")
    for bs in sorted({r["block_size"] for r in res["runs"]}):
        ax.axvline(bs, color="gray", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis(FormatStrFormatter("%g"))
    ax.set_xticks(res["lengths"], [str(n) for n in res["lengths"]])
    ax.set_xlabel(
        f"evaluation length in tokens ({res['runs'][0]['tokenizer']} tokenizer; dotted: training length)"
    )
    ax.set_ylabel(f"perplexity of the last {res['tail']} tokens")
    r0 = res["runs"][0]
    ax.set_title(
        f"{r0['preset'] or 'custom'} {r0['shape']}, {r0['dataset']} ({r0['tokenizer']}), trained on "
        f"{r0['tokens'] / 1e6:.1f}M tokens, seed {r0['seed']}; {res['windows']} val windows",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(path).with_suffix(".png"), dpi=100)
    plt.close(fig)


def extrapolate(cfg, paths, device, autocast):
    """The sweep over checkpoints and lengths: a progress line per point, a markdown table at the end,
    extrapolation.json and extrapolation.png on disk."""
    loaded = [load_model(p, device) for p in paths]
    first_block = loaded[0][0].config.block_size
    lengths = (
        [int(n) for n in cfg.lengths.split(",")]
        if cfg.lengths
        else [first_block * 2**i for i in range(6) if first_block * 2**i <= max(8192, first_block)]
    )
    for path, (model, _) in zip(paths, loaded):
        if model.config.pos == "learned" and max(lengths) > model.config.block_size:
            raise ConfigError(
                f"{path} uses learned positions, which stop at block_size={model.config.block_size}; "
                f"drop it or keep --lengths <= {model.config.block_size}"
            )
    tail = min(cfg.tail, min(lengths))
    if tail < cfg.tail:
        print(
            f"note: the shortest length is {min(lengths)}, so every length scores its last {tail} tokens"
        )
    runs = []
    for path, (model, run) in zip(paths, loaded):
        model.set_q_chunk(cfg.q_chunk)
        folder = prepare(run["dataset"], run["tokenizer"], cfg.data_dir)
        tokens = load_split(folder, "val")
        check_block(tokens, max(lengths) + cfg.windows, "val", folder)
        ends = np.linspace(max(lengths) + 1, len(tokens), cfg.windows).astype(
            np.int64
        )  # same text at every length
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
        runs.append(r)
    names = [f"{r['attention']}/{r['pos']}" for r in runs]
    for r, name in zip(runs, names):  # the run folder's name where two runs would share a label
        r["label"] = name if names.count(name) == 1 else checkpoint_path(r["ckpt"]).parent.name

    print(f"\nperplexity of the last {tail} tokens, {cfg.windows} val windows ({device}):\n")
    print("| length | " + " | ".join(f"{r['label']} ({r['block_size']})" for r in runs) + " |")
    print("| ---: | " + " | ".join("---:" for _ in runs) + " |")
    for i, n in enumerate(lengths):
        print(f"| {n} | " + " | ".join(f"{r['ppl'][i]:.3f}" for r in runs) + " |")
    out = Path(cfg.out) if cfg.out else checkpoint_path(paths[0]).parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "extrapolation.json").write_text(
        json.dumps(
            dict(
                lengths=lengths,
                tail=tail,
                windows=cfg.windows,
                q_chunk=cfg.q_chunk,
                device=str(device),
                runs=runs,
            ),
            indent=2,
        )
    )
    plot_extrapolation(out / "extrapolation.json")
    print(f"\nwrote {out}/extrapolation.json and {out}/extrapolation.png")


def continual_table(runs):
    """The methods of `train.py --mode=continual` runs side by side, from their results.json."""
    lines = [
        "| run | method | replay | OP | BWT | BWT/T | learned | general val loss | train s | total s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run_dir in runs:
        path = Path(run_dir) / "results.json"
        if not path.exists():
            raise ConfigError(
                f"--run={run_dir} holds no results.json; pass folders of finished "
                "`train.py --mode=continual` runs"
            )
        r = json.loads(path.read_text())
        learned = sum(r["R"][i][i] for i in range(len(r["R"]))) / len(
            r["R"]
        )  # accuracy right after each task
        lines.append(
            f"| {Path(run_dir).name} | {r['method']} | {100 * r['replay']:g}% | {r['OP']:.3f} | "
            f"{r['BWT']:+.3f} | {r['BWT_over_T']:+.3f} | {learned:.3f} | {r['general_before']:.3f} -> "
            f"{r['general_after']:.3f} | {sum(r['seconds_train']):.0f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# maps: the prompt's attention, piece by piece, as each attention module names its pieces (Attention.map_parts)

DEFAULT_PROMPT = "def add(a, b):\n    return a + b\n"  # code, like the default corpus; its spaces and newlines show
MAX_MAP_TOKENS = 64  # tokens per axis beyond which the tick labels no longer read


def chosen_heads(cfg, model, path):
    """The (layer, head)s that --layers and --heads pick in this model, checked against its sizes (diff counts its
    differential heads) -> [(layer, head), ...], layer by layer."""
    n_layer, n_head = model.config.n_layer, model.transformer.h[0].attn.n_head
    kind = "differential head" if model.config.attention == "diff" else "head"
    layers = [int(n) for n in cfg.layers.split(",")] if cfg.layers else sorted({0, n_layer - 1})
    heads = [int(n) for n in cfg.heads.split(",")] if cfg.heads else list(range(min(2, n_head)))
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
    """{layer: {piece: (n_head, T, T)}} for one prompt idx (1, T): a forward pre-hook hands each chosen layer's input
    to its attention's map_parts (as outlier_stats reads attention_logits). fp32, no autocast: maps are small."""
    parts = {}

    def on_attention(layer):
        def hook(attn, args):
            parts[layer] = {
                name: piece[0].float().cpu() for name, piece in attn.map_parts(args[0]).items()
            }

        return hook

    hooks = [
        model.transformer.h[layer].attn.register_forward_pre_hook(on_attention(layer))
        for layer in layers
    ]
    try:
        model.features(idx)
    finally:
        for h in hooks:
            h.remove()
    return parts


def token_label(text):
    """A token as a tick label: a space as ␣, a newline, tab or other control character as its escape sequence,
    at most 6 characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text.replace(" ", "␣"))
    return text if len(text) <= 6 else text[:5] + "…"


def map_title(label, model, run, prompt, T):
    """What was run (attention, positions, shape, preset, data, tokens, seed) and the prompt, for the suptitle."""
    c = model.config
    trained = (
        f"{run['max_iters'] * tokens_per_step(run) / 1e6:.2f}M tokens"
        if run.get("mode") != "continual"
        else f"continual fine-tuning ({run['method']})"
    )
    return (
        f"{label}: {c.attention} attention, {c.pos} positions, {c.n_layer}x{c.n_embd}, "
        f"{run['preset'] or 'custom'} preset, {run['dataset']} ({run['tokenizer']}), {trained}, seed {run['seed']}"
        f"\nprompt ({T} tokens): {prompt!r}   grey: future keys (the causal mask)"
    )


def plot_maps(parts, pairs, labels, lams, title, path):
    """One figure per checkpoint: a row per piece (standard: softmax; diff: A1, A2, A1 − λ·A2; dape: S + B, the
    conv's correction, softmax(S')), a column per chosen (layer, head), tokens on both axes. A row shares one colour
    scale and one colour bar; a row with negative entries is diverging (RdBu_r) and centred at 0."""
    plt = pyplot()
    names = list(parts[pairs[0][0]])
    T = len(labels)
    size = max(3.0, 0.13 * T)  # inches per panel: room for T tick labels
    fig, axes = plt.subplots(
        len(names),
        len(pairs),
        figsize=(size * len(pairs) + 1.2, size * len(names) + 1.1),
        squeeze=False,
        layout="constrained",
    )
    for r, name in enumerate(names):
        row = np.stack(
            [parts[layer][name][head].numpy() for layer, head in pairs]
        )  # (panels, T, T), future NaN
        signed = np.nanmin(row) < 0
        top = np.nanmax(
            np.abs(row[:, 1:] if T > 1 else row)
        )  # not query 0: one key, weight 1, would set the scale
        scale = (
            dict(cmap="RdBu_r", vmin=-top, vmax=top)
            if signed
            else dict(cmap="viridis", vmin=0, vmax=top)
        )
        clipped = np.nanmax(np.abs(row)) > top
        for c, ((layer, head), panel) in enumerate(zip(pairs, row)):
            ax = axes[r, c]
            im = ax.imshow(panel, interpolation="nearest", **scale)
            ax.set_facecolor("0.85")
            lam = f", λ = {lams[layer]:.3f}" if "λ" in name else ""
            ax.set_title(f"{name}{lam} | layer {layer}, head {head}", fontsize=8)
            fs = max(
                4, min(8, 54 * size / T)
            )  # points: three quarters of the 72 per inch each token gets
            ax.set_xticks(range(T), labels, rotation=90, fontsize=fs)
            ax.set_yticks(range(T), labels, fontsize=fs)
            ax.set_xlabel("key (token)" if r == len(names) - 1 else "", fontsize=8)
            ax.set_ylabel("query (token)" if c == 0 else "", fontsize=8)
        fig.colorbar(
            im,
            ax=list(axes[r]),
            shrink=0.85,
            pad=0.01,
            label=name,
            extend=("both" if signed else "max") if clipped else "neither",
        )
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def checkpoint_name(path):
    """A checkpoint by its run folder: `run` for run/ckpt.pt, `run_budget_100` for run/budget_100.pt."""
    p = checkpoint_path(path)
    return p.parent.name if p.name == "ckpt.pt" else f"{p.parent.name}_{p.stem}"


def map_files(cfg, paths):
    """The figure each checkpoint gets: maps_<run folder>.png (maps_<run>_<file>.png for a checkpoint other than
    ckpt.pt) in --out or the first run's folder; --out=NAME.png names the figure of a single checkpoint."""
    if cfg.out.endswith(".png"):
        if len(paths) > 1:
            raise ConfigError(
                f"--out={cfg.out} names one figure, but --ckpt names {len(paths)} checkpoints; pass a "
                "folder as --out"
            )
        return [Path(cfg.out)]
    out = Path(cfg.out) if cfg.out else checkpoint_path(paths[0]).parent
    files = []
    for path in paths:
        name = checkpoint_name(path)
        while out / f"maps_{name}.png" in files:  # two runs whose folders share a name
            name += "_"
        files.append(out / f"maps_{name}.png")
    return files


def draw_maps(cfg, paths, device):
    """--mode=maps: every checkpoint loaded and checked (--layers, --heads, prompt length) before the first figure
    is drawn; one figure per checkpoint. Returns the paths written."""
    prompt = cfg.prompt or DEFAULT_PROMPT
    jobs = []
    for path, file in zip(paths, map_files(cfg, paths)):
        model, run = load_model(path, device)
        tokenizer = get_tokenizer(run["tokenizer"])
        ids = tokenizer.encode(prompt)
        if len(ids) > MAX_MAP_TOKENS:
            raise ConfigError(
                f"--prompt is {len(ids)} tokens for {path} ({run['tokenizer']} tokenizer), and a map "
                f"reads up to {MAX_MAP_TOKENS} per axis; shorten --prompt"
            )
        if model.config.pos == "learned" and len(ids) > model.config.block_size:
            raise ConfigError(
                f"--prompt is {len(ids)} tokens, longer than block_size={model.config.block_size} of "
                f"{path}, the limit of learned positions; shorten --prompt"
            )
        jobs.append((path, file, model, run, tokenizer, ids, chosen_heads(cfg, model, path)))
    for path, file, model, run, tokenizer, ids, pairs in jobs:
        parts = layer_map_parts(
            model, torch.tensor([ids], device=device), sorted({layer for layer, _ in pairs})
        )
        lams = (
            {layer: block.attn.lam().item() for layer, block in enumerate(model.transformer.h)}
            if model.config.attention == "diff"
            else {}
        )
        labels = [token_label(tokenizer.decode([i])) for i in ids]
        plot_maps(
            parts,
            pairs,
            labels,
            lams,
            map_title(checkpoint_name(path), model, run, prompt, len(ids)),
            file,
        )
    return [file for _, file, *_ in jobs]


# ----------------------------------------------------------------------------------------------------------------
# recall: multi-query associative recall of --dataset=mqar checkpoints, and where their heads look

SHARE_BATCHES = (
    2  # batches of the answer-share measurement: the maps are (B, heads, T, T) per layer
)


@torch.no_grad()
def recall_accuracy(model, task, length, batches, batch_size, seed, device, autocast):
    """answer_accuracy over batches × batch_size sequences of `length` tokens from a generator seeded with `seed`
    (the same sequences for every model of the same task). Only the answers' logits are computed: at long lengths
    the (T, vocab) logits would dwarf the model."""
    gen = torch.Generator().manual_seed(seed)
    right = torch.zeros((), device=device)
    for _ in range(batches):
        x, y = task.batch(batch_size, length, gen)
        x, y = x.to(device), y.to(device)
        answers = y != -1
        with autocast:
            logits = model.lm_head(model.features(x)[answers])  # (batch_size·pairs, vocab)
        right += answer_accuracy(logits.float(), y[answers])
    return (
        right.item() / batches
    )  # every batch holds batch_size·pairs answers: the batches' mean is the whole's


def answer_share(att, x, y, pairs):
    """The attention on the answer: at each query i (y != -1), the share sum_{j in pair} |a_ij| / sum_j |a_ij|,
    where the pair is the queried key's position in the context and the value after it. att (B, H, T, T); x, y
    (B, T) -> (H,) the mean over every query of the batch."""
    b, i = (y != -1).nonzero(as_tuple=True)  # (Q,) each query's row and position
    key_at = 2 * (x[b, 0 : 2 * pairs : 2] == x[b, i][:, None]).long().argmax(
        dim=1
    )  # (Q,) where its key sits
    rows = att[b, :, i].abs()  # (Q, H, T): each query's attention row, head by head
    pair = torch.stack([key_at, key_at + 1], dim=1)[:, None, :].expand(
        -1, rows.size(1), -1
    )  # (Q, H, 2)
    return (rows.gather(2, pair).sum(-1) / rows.sum(-1)).mean(dim=0)


@torch.no_grad()
def answer_shares(model, task, length, batch_size, seed, device):
    """answer_share of every layer and head -> (n_layer, heads) tensor, over SHARE_BATCHES batches at the task and
    length given, from the captured maps (GPT.attention_maps; diff: the effective map A1 − λ·A2). fp32."""
    gen = torch.Generator().manual_seed(seed)
    heads = {
        layer: list(range(block.attn.n_head)) for layer, block in enumerate(model.transformer.h)
    }
    total = 0
    for _ in range(SHARE_BATCHES):
        x, y = task.batch(batch_size, length, gen)
        maps = model.attention_maps(x.to(device), heads)[2]  # {layer: (B, heads, T, T)}
        total = total + torch.stack(
            [answer_share(maps[layer].float().cpu(), x, y, task.pairs) for layer in heads]
        )
    return total / SHARE_BATCHES


def recall_jobs(cfg, paths, device):
    """Every checkpoint loaded with its task and its (pairs, lengths) grid, all checked before the first point runs
    -> [(path, model, run, task, pairs, lengths)]."""
    jobs = []
    for path in paths:
        model, run = load_model(path, device)
        task = mqar_task(run["dataset"])
        if task is None:
            raise ConfigError(
                f"{path} was trained on --dataset={run['dataset']}, not mqar; --mode=recall scores "
                "checkpoints of `python train.py --dataset=mqar`"
            )
        pairs = [int(n) for n in cfg.pairs.split(",")] if cfg.pairs else [task.pairs]
        lengths = (
            [int(n) for n in cfg.lengths.split(",")] if cfg.lengths else [model.config.block_size]
        )
        if model.config.pos == "learned" and max(lengths) > model.config.block_size:
            raise ConfigError(
                f"{path} uses learned positions, which stop at block_size={model.config.block_size}; "
                f"drop it or keep --lengths <= {model.config.block_size}"
            )
        for p in pairs:
            if p > task.keys:
                raise ConfigError(
                    f"--pairs={cfg.pairs}: {p} distinct keys cannot be drawn from the {task.keys} keys "
                    f"{path} was trained on; keep --pairs <= {task.keys}"
                )
            if min(lengths) < (need := MQAR(p, task.keys).min_length):
                raise ConfigError(
                    f"--pairs={p} needs sequences of >= 4 x pairs = {need} tokens (the pairs, then a "
                    f"query and a filler per pair), but length {min(lengths)} is asked for; drop it "
                    f"from --lengths or keep --pairs <= {min(lengths) // 4}"
                )
        jobs.append((path, model, run, task, pairs, lengths))
    return jobs


def recall_run(cfg, path, model, run, task, pairs, lengths, device, autocast, named):
    """One checkpoint's points (a line each) and its answer-share table (a line) -> its entry in recall.json."""
    model.set_q_chunk(cfg.q_chunk)
    prefix = f"{checkpoint_name(path)} " if named else ""
    points = []
    for p in pairs:
        at = MQAR(p, task.keys)
        for n in lengths:
            acc = recall_accuracy(
                model, at, n, cfg.batches, cfg.batch_size, cfg.seed, device, autocast
            )
            points.append(dict(pairs=p, length=n, accuracy=acc, chance=at.chance))
            where = f"{prefix}pairs {p} length {n}: " if named else ""
            print(where + at.recall_text(acc), flush=True)
    share = answer_shares(model, task, model.config.block_size, cfg.batch_size, cfg.seed, device)
    layer, head = divmod(share.argmax().item(), share.size(1))
    if (
        named
    ):  # the plain `--mode=recall` prints its one accuracy line only; the shares are in recall.json
        print(
            f"{prefix.strip()}: attention on the answer pair: best head L{layer}.H{head} {share.max().item():.2f}, "
            f"mean over heads {share.mean().item():.2f}"
        )
    return dict(
        ckpt=str(path),
        label=checkpoint_name(path),
        attention=run["attention"],
        pos=model.config.pos,
        type=f"{run['attention']}/{model.config.pos}",
        params=model.num_params(),
        seed=run["seed"],
        preset=run["preset"],
        n_layer=run["n_layer"],
        n_embd=run["n_embd"],
        n_head=run["n_head"],
        dataset=run["dataset"],
        tokens=run["max_iters"] * tokens_per_step(run),
        block_size=model.config.block_size,
        pairs=task.pairs,
        keys=task.keys,
        points=points,
        answer_share=share.tolist(),
        answer_share_at=dict(pairs=task.pairs, length=model.config.block_size),
    )


def recall(cfg, paths, device, autocast):
    """--mode=recall: every checkpoint at every (pairs, length), its answer shares, recall.json and recall.png."""
    jobs = recall_jobs(cfg, paths, device)
    named = len(paths) > 1 or bool(cfg.pairs or cfg.lengths)  # one line alone needs no name
    runs = [recall_run(cfg, *job, device, autocast, named) for job in jobs]
    out = Path(cfg.out) if cfg.out else checkpoint_path(paths[0]).parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "recall.json").write_text(
        json.dumps(
            dict(
                seed=cfg.seed,
                batches=cfg.batches,
                batch_size=cfg.batch_size,
                share_batches=SHARE_BATCHES,
                device=str(device),
                runs=runs,
            ),
            indent=2,
        )
    )
    plot_recall(out / "recall.json")
    if named:
        print(f"wrote {out}/recall.json and {out}/recall.png")


def recall_curve(res, kind, axis, fixed):
    """{x: [accuracy of each checkpoint of this attention type]} and {x: chance} along `axis` (pairs or length),
    at each checkpoint's training value of `fixed` (its pairs, or its block_size)."""
    accs, chance = {}, {}
    for r in res["runs"]:
        at = r["block_size"] if fixed == "length" else r["pairs"]
        for p in r["points"]:
            if r["type"] == kind and p[fixed] == at:
                accs.setdefault(p[axis], []).append(p["accuracy"])
                chance[p[axis]] = p["chance"]
    return accs, chance


def plot_recall(path):
    """recall.png beside recall.json: accuracy against pairs (at the training length) and against length (at the
    training pairs), one line per attention type, the mean over its checkpoints (seeds) with std error bars, chance
    dashed."""
    plt = pyplot()
    res = json.loads(Path(path).read_text())
    types = list(dict.fromkeys(r["type"] for r in res["runs"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, axis, fixed, xlabel in (
        (axes[0], "pairs", "length", "key-value pairs per sequence"),
        (axes[1], "length", "pairs", "sequence length (tokens)"),
    ):
        chance = {}
        for i, kind in enumerate(types):
            accs, c = recall_curve(res, kind, axis, fixed)
            chance.update(c)
            xs = sorted(accs)
            n = sum(r["type"] == kind for r in res["runs"])
            stats = [mean_std(accs[x]) for x in xs]
            ax.errorbar(
                xs,
                [m for m, _ in stats],
                yerr=[sd for _, sd in stats],
                fmt="o-",
                capsize=3,
                color=f"C{i}",
                label=f"{kind} (mean ± std of {n} checkpoint{'s' * (n > 1)})",
            )
        xs = sorted(chance)
        ax.plot(xs, [chance[x] for x in xs], "--", color="gray", label="chance (1 / pairs)")
        if axis == "length" and xs and xs[-1] >= 4 * xs[0]:
            ax.set_xscale("log", base=2)
        if xs:
            ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_ylim(0, 1.02)
        ax.set(
            xlabel=xlabel,
            ylabel="recall accuracy (fraction of answers right)",
            title=f"against {axis}, at the training {fixed}" + ("" if xs else " (none evaluated)"),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    r0 = res["runs"][0]
    fig.suptitle(
        f"MQAR recall (keys={r0['keys']}): {shared_title(res['runs'])}, trained on {r0['tokens'] / 1e6:.2f}M "
        f"tokens; {res['batches']}x{res['batch_size']} sequences per point, seed {res['seed']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(Path(path).with_suffix(".png"), dpi=100)
    plt.close(fig)


def main(argv):
    cfg = EvalConfig(**parse_flags(argv, EvalConfig, CHOICES))
    if cfg.mode in (
        "schedules",
        "compare",
        "seeds",
        "continual",
    ):  # these read run folders, not checkpoints
        if not cfg.run:
            raise ConfigError(f"--mode={cfg.mode} needs run folders: --run=out/a --run=out/b ...")
        if cfg.mode == "schedules":
            print(f"wrote {compare_schedules(cfg.run, cfg.out)}")
        elif cfg.mode == "compare":
            print(f"wrote {plot_val_curves(cfg.run, cfg.out)}")
        elif cfg.mode == "seeds":
            path = seeds_report(cfg.run, cfg.x, cfg.out)
            print(
                f"wrote {path}"
                if path
                else "(--x=FIELD also draws the final val loss against that field)"
            )
        else:
            print(continual_table(cfg.run))
        return
    if not cfg.ckpt:
        raise ConfigError("--ckpt is required: a ckpt.pt or a run folder, e.g. --ckpt=out/run")
    device, _, autocast = setup_device(cfg.device, cfg.dtype)
    if cfg.mode == "extrapolate":
        return extrapolate(cfg, cfg.ckpt, device, autocast)
    if cfg.mode == "maps":
        for path in draw_maps(cfg, cfg.ckpt, device):
            print(f"wrote {path}")
        return
    if cfg.mode == "recall":
        return recall(cfg, cfg.ckpt, device, autocast)
    if len(cfg.ckpt) > 1:
        raise ConfigError(
            f"--mode={cfg.mode} evaluates one checkpoint; several are for --mode=extrapolate, maps or "
            "recall"
        )
    model, run = load_model(cfg.ckpt[0], device)
    if cfg.mode == "loss":
        report_loss(cfg, model, run, device, autocast)
    elif cfg.mode == "sample":
        print_samples(cfg, model, run, device, autocast)
    else:
        report_outliers(cfg, model, run, device, autocast)


def report_loss(cfg, model, run, device, autocast):
    block_size = model.config.block_size
    eval_len = cfg.eval_len or block_size
    if model.config.pos == "learned" and eval_len > block_size:
        raise ConfigError(
            f"--eval_len={eval_len} is longer than block_size={block_size}, the limit of learned "
            f"positions; use --eval_len<={block_size}"
        )
    folder = prepare(cfg.dataset or run["dataset"], run["tokenizer"], cfg.data_dir)
    tokens, meta = load_split(folder, cfg.split), load_meta(folder)
    check_block(tokens, eval_len, cfg.split, folder)
    loss, n = eval_loss(model, tokens, eval_len, cfg.batch_size, cfg.max_tokens, device, autocast)
    bpb = bits_per_byte(loss, meta, cfg.split)
    print(
        f"{cfg.split}_loss {loss:.4f} | perplexity {math.exp(loss):.3f} | {bpb:.4f} bits/byte | "
        f"{n:,} tokens of {folder}/{cfg.split}.bin in windows of {eval_len}"
    )


def print_samples(cfg, model, run, device, autocast):
    tokenizer, block_size = get_tokenizer(run["tokenizer"]), model.config.block_size
    ids = tokenizer.encode(cfg.prompt) if cfg.prompt else [tokenizer.eot]
    if model.config.pos == "learned" and len(ids) > block_size:
        raise ConfigError(
            f"the prompt is {len(ids)} tokens, longer than block_size={block_size}, the limit of "
            "learned positions; shorten --prompt"
        )
    torch.manual_seed(cfg.seed)
    x = torch.tensor([ids] * cfg.num_samples, device=device)
    with autocast:
        out = model.generate(x, cfg.max_new_tokens, cfg.temperature, cfg.top_k or None)
    for row in out.tolist():
        text = tokenizer.decode([t for t in row if t < tokenizer.n_vocab and t != tokenizer.eot])
        print(text + "\n" + "-" * 40)


def report_outliers(cfg, model, run, device, autocast):
    eval_len = (
        cfg.eval_len or model.config.block_size
    )  # learned positions refuse longer windows themselves
    folder = prepare(cfg.dataset or run["dataset"], run["tokenizer"], cfg.data_dir)
    tokens = load_split(folder, cfg.split)
    check_block(tokens, eval_len, cfg.split, folder)
    stats, n = outlier_stats(model, tokens, eval_len, cfg.batch_size, cfg.batches, device, autocast)
    (logit, where, median), (act, act_where, act_median) = stats["logit"], stats["hidden"]
    print(
        f"top attention logit {logit:.2f} ({where}; median {median:.2f}) | q·k/√d before softmax, "
        f"{n} windows of {eval_len} tokens of {folder}/{cfg.split}.bin"
    )
    print(
        f"top hidden activation {act:.2f} ({act_where}; median |x| {act_median:.3f}) | residual stream, "
        f"{model.config.attention} attention"
    )


if __name__ == "__main__":
    cli(main)
