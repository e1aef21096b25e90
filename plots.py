"""Every figure of the project; the only file that imports matplotlib (headless, Agg: figures are
files, never windows). Each figure is redrawn from a run folder's files, or from what its caller
computed (the lr curve, the maps, the seeds' groups): plots draws, the other files compute.

loss.png                plot_losses              a training run: train / val loss, bits per byte
                                                 (mqar: recall accuracy), the lr, decays shaded
schedules.png           plot_schedules           every registered schedule (`python schedules.py`)
val_compare.png         plot_val_curves          val loss of several runs against tokens
schedules_compare.png   plot_schedules_compare   finished models' val loss against compute
seeds.png               plot_seeds               final val loss against a config field, mean ± std
extrapolation.png       plot_extrapolation       perplexity against length (extrapolation.json)
maps_<run>.png          plot_maps                one checkpoint's attention maps, a row per piece
recall.png              plot_recall              MQAR accuracy vs pairs and length (recall.json)
R.png, acc_over_time.png, heads.png   plot_results   a continual run's results.json
"""

import json
from pathlib import Path

import numpy as np

from plumbing import mean_std, read_log, tokens_per_step


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------------------------------
# a training run (loss.png) and the schedules (schedules.png)


def plot_losses(out_dir, lr_curve, decays, unigram=None):
    """loss.png, redrawn from log.jsonl: train and val loss against tokens (zoomed past the first
    steps' drop), the same in bits per byte on the right axis with the unigram baseline (mqar: the
    val recall accuracy there instead), the budgets and decays marked, and the learning rate below.
    lr_curve: the main branch's lr at steps 0..max_iters-1; decays: [(start, end)] of its decays;
    unigram: the corpus's unigram baseline in bits per byte (None: not drawn)."""
    plt = pyplot()
    rows = read_log(out_dir)
    cfg = json.loads((Path(out_dir) / "config.json").read_text())
    per_step = tokens_per_step(cfg) / 1e6
    rows = [r for r in rows if "branch" not in r]  # the main branch; compare.py draws the branches
    train_rows = [(r["iter"] * per_step, r["loss"]) for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_loss" in r and ("budget" not in r or not cfg["budgets"])]
    fig, (ax, ax_lr) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw=dict(height_ratios=[3, 1])
    )
    if train_rows:
        ax.plot(*zip(*train_rows), label="train", alpha=0.6, lw=1)
    if val_rows:
        val_x = [r["iter"] * per_step for r in val_rows]
        ax.plot(val_x, [r["val_loss"] for r in val_rows], "o-", label="val")
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
    bpb, acc = right_axes(ax, train_rows, val_rows, per_step, unigram)
    budgets = [int(b) for b in cfg["budgets"].split(",")] if cfg["budgets"] else []
    ax_lr.plot([s * per_step for s in range(len(lr_curve))], lr_curve, "k", lw=1)
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
        f"{cfg['preset'] or 'custom'}: {cfg['n_layer']}x{cfg['n_embd']} "
        f"{cfg['attention']}/{cfg['pos']}, {cfg['dataset']}, {cfg['schedule']}"
        f"{' (shaded: decay)' if decays else ''}{' (dotted: budgets)' if budgets else ''}, "
        f"seed {cfg['seed']}",
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


def right_axes(ax, train_rows, val_rows, per_step, unigram):
    """loss.png's right axis: bits per byte with the unigram baseline (text), or the val recall
    accuracy (mqar) -> (bits per byte per nat or None, the recall axis or None). Also zooms the
    loss axis past the first steps' drop."""
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
    return bpb, acc


def plot_schedules(path, curves, budgets, lr, min_lr, warmup_iters, max_iters, decay_frac):
    """Every schedule on one figure, for teaching. curves: [(panel, steps, lrs, fmt, style)] from
    schedules.figure_curves; panel 0 one run to one finished model, panel 1 several from one run."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for panel, steps, lrs, fmt, style in curves:
        axes[panel].plot(steps, lrs, *fmt, **style)
    for ax in axes:
        for b in budgets:
            ax.axvline(b, color="grey", lw=0.5)
        ax.set_ylabel("learning rate")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.grid(alpha=0.3)
    axes[0].set_title(
        f"single-budget schedules (peak {lr}, floor {min_lr}, warmup {warmup_iters}, "
        f"decay_frac {decay_frac})"
    )
    axes[1].set_title(f"several finished models from one run: budgets {budgets} (grey lines)")
    axes[1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# eval.py's and compare.py's figures


AXIS_NOTES = {
    "n_head": "n_head (the baseline's heads; diff pairs them into n_head / 2 differential heads)"
}


def smooth(values, k=3):
    """Centered moving average (shorter at the ends): per-step losses are noisy."""
    windows = [values[max(0, i - k // 2) : i + k // 2 + 1] for i in range(len(values))]
    return [sum(w) / len(w) for w in windows]


def shared_title(cfgs):
    """What every run of a comparison shares (preset, shape, heads, data, seed); how many runs."""
    first = cfgs[0]
    same = lambda *keys: all(len({str(c[k]) for c in cfgs}) == 1 for k in keys)
    parts = [
        first["preset"] or "custom" if same("preset") else "",
        f"{first['n_layer']}x{first['n_embd']}" if same("n_layer", "n_embd") else "",
        f"{first['n_head']} heads" if same("n_head") else "",
        first["dataset"] if same("dataset") else "",
        f"seed {first['seed']}" if same("seed") else "",
    ]
    runs = f" ({len(cfgs)} run{'s' if len(cfgs) != 1 else ''})"
    return ", ".join(p for p in parts if p) + runs


def figure_path(out, run_dir, name):
    """Where a comparison's figure goes: --out itself when it names a .png, else `name` in the
    folder --out (default: the first run's folder); its folder is made."""
    path = Path(out) if out.endswith(".png") else Path(out or run_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def run_files(run_dir):
    """(config.json, log.jsonl rows) of a run folder."""
    return json.loads((Path(run_dir) / "config.json").read_text()), read_log(Path(run_dir))


def plot_val_curves(runs, out):
    """val_compare.png (or --out): val loss against tokens of several runs overlaid, main branch
    only (no wsd decay branches), a line per run labelled by its folder and attention type; the
    title holds what the runs share. Returns the figure's path."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    second = []  # the y axis starts at each run's second eval: the first (random init) squashes
    cfgs = []
    for run in runs:
        cfg, rows = run_files(run)
        tokens_per_iter = tokens_per_step(cfg)
        val = [
            (r["iter"] * tokens_per_iter / 1e6, r["val_loss"])
            for r in rows
            if "val_loss" in r and not r.get("branch")
        ]
        ax.plot(
            *zip(*val),
            "o-",
            label=f"{Path(run).name}: {cfg['attention']} ({cfg['pos']}), final {val[-1][1]:.4f}",
        )
        second.append(val[min(1, len(val) - 1)][1])
        cfgs.append(cfg)
    lows = [line.get_ydata().min() for line in ax.get_lines()]
    spread = max(second) - min(lows)
    ax.set_ylim(min(lows) - 0.05 * spread, max(second) + 0.1 * spread)
    ax.set_xlabel("tokens (millions)")
    tokenizers = "/".join(sorted({c["tokenizer"] for c in cfgs}))
    ax.set_ylabel(f"val loss (nats per token, {tokenizers} tokenizer)")
    ax.set_title(shared_title(cfgs), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = figure_path(out, runs[0], "val_compare.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_schedules_compare(runs, labels, out):
    """schedules_compare.png (or --out): each run's finished models (budget rows) as val loss
    against the compute spent on them, and its train loss (dotted: wsd decay branches), a colour
    per run, labelled by `labels`. Returns the figure's path."""
    plt = pyplot()
    fig, (ax_val, ax_train) = plt.subplots(1, 2, figsize=(13, 5))
    for i, (run_dir, label) in enumerate(zip(runs, labels)):
        _, rows = run_files(run_dir)
        budgets = [r for r in rows if "budget" in r]
        train = [r for r in rows if "loss" in r]
        color = f"C{i}"
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
    cfg = run_files(runs[0])[0]
    shape = f"{cfg['n_layer']}x{cfg['n_embd']}"
    fig.suptitle(f"{cfg['preset'] or 'custom'} {shape}, {cfg['dataset']}, seed {cfg['seed']}")
    fig.tight_layout()
    path = figure_path(out, runs[0], "schedules_compare.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_seeds(groups, cfgs, x, out, first_run):
    """seeds.png (or --out): the final val loss against config field x, a line per group of the
    other fields (groups: [(label, {x value: [final val loss of each seed]})]), mean ± std error
    bars; cfgs: the runs' configs, for the ticks and the title. Returns the figure's path."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, by_x in groups:
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
    path = figure_path(out, first_run, "seeds.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_extrapolation(path):
    """extrapolation.png beside extrapolation.json: perplexity against evaluation length, a line per
    run, its training length dotted."""
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
    r0 = res["runs"][0]
    ax.set_xlabel(
        f"evaluation length in tokens ({r0['tokenizer']} tokenizer; dotted: training length)"
    )
    ax.set_ylabel(f"perplexity of the last {res['tail']} tokens")
    ax.set_title(
        f"{r0['preset'] or 'custom'} {r0['shape']}, {r0['dataset']} ({r0['tokenizer']}), trained "
        f"on {r0['tokens'] / 1e6:.1f}M tokens, seed {r0['seed']}; {res['windows']} val windows",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(path).with_suffix(".png"), dpi=100)
    plt.close(fig)


def token_label(text):
    """A token as a tick label: a space as ␣, a newline, tab or other control character as its
    escape sequence, at most 6 characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text.replace(" ", "␣"))
    return text if len(text) <= 6 else text[:5] + "…"


def map_title(label, c, run, prompt, T):
    """The maps' title: what was run (c: its GPTConfig; attention, positions, shape, preset,
    data, tokens, seed) and the prompt."""
    prompt_line = f"prompt ({T} tokens): {prompt!r}   grey: future keys (the causal mask)"
    shape = f"{c.attention} attention, {c.pos} positions, {c.n_layer}x{c.n_embd}"
    if run.get("mode") == "gpt2":  # GPT-2's weights as released (gpt2.py)
        return f"{label}: GPT-2's weights ({run['weights']}), {shape}\n{prompt_line}"
    if run.get("mode") != "continual":
        trained = f"{run['max_iters'] * tokens_per_step(run) / 1e6:.2f}M tokens"
    else:
        trained = f"continual fine-tuning ({run['method']})"
    return (
        f"{label}: {shape}, {run['preset'] or 'custom'} preset, {run['dataset']} "
        f"({run['tokenizer']}), {trained}, seed {run['seed']}\n{prompt_line}"
    )


def plot_maps(parts, pairs, tokens, lams, title, path):
    """One checkpoint's maps: a row per piece of parts ({layer: {piece: (n_head, T, T)}}, future
    NaN), a column per (layer, head) of pairs, the tokens on both axes, λ per layer in the
    title of a λ piece. A row shares one colour scale and bar; one with negative entries is
    diverging (RdBu_r) and centred at 0."""
    plt = pyplot()
    names = list(parts[pairs[0][0]])
    labels = [token_label(t) for t in tokens]
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
        )  # (panels, T, T)
        signed = np.nanmin(row) < 0
        # not query 0: its one key has weight 1, which would set the scale
        top = np.nanmax(np.abs(row[:, 1:] if T > 1 else row))
        if signed:
            scale = dict(cmap="RdBu_r", vmin=-top, vmax=top)
        else:
            scale = dict(cmap="viridis", vmin=0, vmax=top)
        clipped = np.nanmax(np.abs(row)) > top
        for c, ((layer, head), panel) in enumerate(zip(pairs, row)):
            ax = axes[r, c]
            im = ax.imshow(panel, interpolation="nearest", **scale)
            ax.set_facecolor("0.85")
            lam = f", λ = {lams[layer]:.3f}" if "λ" in name else ""
            ax.set_title(f"{name}{lam} | layer {layer}, head {head}", fontsize=8)
            fs = max(4, min(8, 54 * size / T))  # points: 3/4 of the 72 per inch each token gets
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


def recall_curve(res, kind, axis, fixed):
    """{x: [accuracy of each checkpoint of this attention type]} and {x: chance} along `axis`
    (pairs or length), at each checkpoint's training value of `fixed` (its pairs or block_size)."""
    accs = {}
    chance = {}
    for r in res["runs"]:
        at = r["block_size"] if fixed == "length" else r["pairs"]
        for p in r["points"]:
            if r["type"] == kind and p[fixed] == at:
                accs.setdefault(p[axis], []).append(p["accuracy"])
                chance[p[axis]] = p["chance"]
    return accs, chance


def plot_recall(path):
    """recall.png beside recall.json: accuracy against pairs (at the training length) and against
    length (at the training pairs), a line per attention type, the mean ± std over its checkpoints
    (seeds), chance dashed."""
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
        f"MQAR recall (keys={r0['keys']}): {shared_title(res['runs'])}, trained on "
        f"{r0['tokens'] / 1e6:.2f}M tokens; {res['batches']}x{res['batch_size']} sequences per "
        f"point, seed {res['seed']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(Path(path).with_suffix(".png"), dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# continual learning (R.png, acc_over_time.png, heads.png)


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
    """R[t][i] as a grid; a task not trained yet (i > t) is grey and unnumbered: its accuracy there
    is zero-shot."""
    R = res["R"]
    names = res["tasks"]
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
    """Each task's accuracy from the step it was trained on (a large marker) to the end of the
    sequence; lines are dodged sideways and marked differently, so tasks that all sit at zero stay
    apart."""
    R = res["R"]
    names = res["tasks"]
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
    title = f"{what}: accuracy of each task from when it was trained (large marker) on"
    ax.set_title(f"{title}; seed {res['seed']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="task", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_heads(plt, res, what, path):
    """The importance I of every layer x head after each task, its own colour scale per panel (I
    accumulates), the selected heads boxed."""
    from matplotlib.ticker import MaxNLocator

    names = res["tasks"]
    k = len(res["heads"])
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
