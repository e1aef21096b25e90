"""Compare run folders: `python compare.py --mode=... --run=DIR --run=DIR2 ...` (or `python eval.py`
with the same flags, which hands these modes over).

schedules  every finished model's val loss against the compute spent on it (schedules_compare.png)
compare    val loss curves of several runs overlaid: val_compare.png
seeds      runs that differ only in --seed pooled: val loss mean ± std per group and budget
           (with --x=FIELD also seeds.png, against that field)
continual  `train.py --mode=continual` runs side by side from their results.json: a markdown table

Figures go to --out (a .png path, or a folder) or the first run's folder; plots.py draws them from
the runs' config.json and log.jsonl.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from attention import ATTENTIONS
from model import HOW_COMPUTED, GPTConfig
from plots import plot_schedules_compare, plot_seeds, plot_val_curves
from plumbing import ConfigError, check_declared, cli, mean_std, parse_flags, read_log
from schedules import SCHEDULES

# ------------------------------------------------------------------------------------------------
# reading run folders


def read_run(run_dir):
    """(config, log rows) of a run folder written by train.py."""
    run_dir = Path(run_dir)
    if not (run_dir / "log.jsonl").exists():
        raise ConfigError(
            f"--run={run_dir} holds no log.jsonl; pass run folders written by train.py"
        )
    return json.loads((run_dir / "config.json").read_text()), read_log(run_dir)


def finished_models(run_dir):
    """(config, budget rows): a run folder's config and its finished models."""
    cfg, rows = read_run(run_dir)
    return cfg, [r for r in rows if "budget" in r]


def finished_runs(runs):
    """[(config, budget rows)] of run folders, each holding at least one finished model."""
    loaded = []
    for run in runs:
        cfg, budgets = finished_models(run)
        if not budgets:
            raise ConfigError(
                f"--run={run} has no finished model yet (no budget row in its log.jsonl)"
            )
        loaded.append((cfg, budgets))
    return loaded


# ------------------------------------------------------------------------------------------------
# schedules and curves


def run_label(run_dir, cfg):
    """A run by its folder and schedule, with the decay shape where the schedule has one."""
    shaped = SCHEDULES[cfg["schedule"]].decay_shaped
    shape = f" {cfg['decay_shape']}" if shaped else ""
    return f"{Path(run_dir).name} ({cfg['schedule']}{shape})"


def compare_schedules(cfg):
    """--mode=schedules: a row per finished model (budget, tokens spent, val loss and bpb), then the
    figure."""
    labels = []
    print(f"{'run':<34} {'budget':>7} {'tokens (M)':>11} {'val loss':>9} {'val bpb':>8}")
    for run_dir in cfg.run:
        run, budgets = finished_models(run_dir)
        label = run_label(run_dir, run)
        for r in budgets:
            print(
                f"{label:<34} {r['budget']:>7} {r['tokens'] / 1e6:>11.2f} "
                f"{r['val_loss']:>9.4f} {r['val_bpb']:>8.3f}"
            )
        labels.append(label)
    print(f"wrote {plot_schedules_compare(cfg.run, labels, cfg.out)}")


def compare_curves(cfg):
    """--mode=compare: the runs' val loss curves in one figure."""
    for run in cfg.run:
        _, rows = read_run(run)
        if not any("val_loss" in r and not r.get("branch") for r in rows):
            raise ConfigError(f"--run={run} has no val_loss rows in its log.jsonl yet")
    print(f"wrote {plot_val_curves(cfg.run, cfg.out)}")


# ------------------------------------------------------------------------------------------------
# seeds: runs that differ only in --seed, pooled

# what a config.json written before a model field existed meant
MODEL_DEFAULTS = asdict(GPTConfig())
# the seed, and fields that change no number: a resumed seed pools too
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
)


def model_reads(attention, key):
    """False for a field only another attention type reads (diff_subln in a standard run): it
    changes nothing there."""
    others = [kind for name, kind in ATTENTIONS.items() if name != attention]
    return all(key not in kind.own_fields for kind in others)


def pooled(loaded, ignore):
    """finished_runs grouped by their config apart from the `ignore` fields -> [(label, [(config,
    budget rows)])], in the order first seen; the label names every field whose value differs
    between the groups. Fields a run's model does not read (model_reads) are left out of its
    group's key; missing model fields take their defaults."""
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


def seeds_report(runs, x, out):
    """Every finished model's val loss as mean ± std over the seeds of its group, as a table. With
    x (a numeric config field) also seeds.png: the final val loss against x, a line per group of
    the other fields. Returns the figure's path or None."""
    loaded = finished_runs(runs)
    for cfg, _ in loaded if x else []:  # before the table: a bad --x prints only its error
        if not isinstance(cfg.get(x), (int, float)) or isinstance(cfg.get(x), bool):
            raise ConfigError(f"--x={x} is not a numeric field of {cfg['out_dir']}'s config")
    print(
        f"{'runs (the fields that differ)':<58} {'budget':>6} {'tokens (M)':>10} {'seeds':>5} "
        f"{'val loss':>17}  each seed"
    )
    for label, members in pooled(loaded, POOLED_OVER):
        for i, row in enumerate(members[0][1]):
            losses = [budgets[i]["val_loss"] for _, budgets in members if len(budgets) > i]
            m, s = mean_std(losses)
            print(
                f"{label:<58} {row['budget']:>6} {row['tokens'] / 1e6:>10.2f} {len(losses):>5} "
                f"{m:>8.4f} ± {s:.4f}  " + " ".join(f"{v:.4f}" for v in losses)
            )
    if not x:
        return None
    groups = []
    cfgs = []
    for label, members in pooled(loaded, (*POOLED_OVER, x)):
        by_x = {}
        for cfg, budgets in members:
            by_x.setdefault(cfg[x], []).append(budgets[-1]["val_loss"])
            cfgs.append(cfg)
        groups.append((label, by_x))
    return plot_seeds(groups, cfgs, x, out, runs[0])


def compare_seeds(cfg):
    """--mode=seeds: the table, and with --x the figure."""
    path = seeds_report(cfg.run, cfg.x, cfg.out)
    print(
        f"wrote {path}" if path else "(--x=FIELD also draws the final val loss against that field)"
    )


# ------------------------------------------------------------------------------------------------
# continual learning


def continual_table(runs):
    """The methods of `train.py --mode=continual` runs side by side, from their results.json."""
    lines = [
        "| run | method | replay | OP | BWT | BWT/T | learned | general val loss | train s "
        "| total s |",
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
        T = len(r["R"])
        learned = sum(r["R"][i][i] for i in range(T)) / T  # accuracy right after each task
        lines.append(
            f"| {Path(run_dir).name} | {r['method']} | {100 * r['replay']:g}% | {r['OP']:.3f} | "
            f"{r['BWT']:+.3f} | {r['BWT_over_T']:+.3f} | {learned:.3f} | "
            f"{r['general_before']:.3f} -> {r['general_after']:.3f} | "
            f"{sum(r['seconds_train']):.0f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def compare_continual(cfg):
    """--mode=continual: the table."""
    print(continual_table(cfg.run))


# ------------------------------------------------------------------------------------------------
# the modes, the config, main

MODES = dict(
    schedules=compare_schedules,
    compare=compare_curves,
    seeds=compare_seeds,
    continual=compare_continual,
)
CHOICES = dict(mode=tuple(MODES))


@dataclass
class CompareConfig:
    mode: str = "compare"  # what to compare (see the file's map)
    run: list = field(default_factory=list)  # run folders written by train.py (repeat or commas)
    x: str = ""  # seeds: a numeric config field to plot the final val loss against (e.g. n_head)
    out: str = ""  # where the figure goes: a .png path, or a folder (default: the first run's)

    def __post_init__(self):
        check_declared(self, CHOICES)
        if not self.run:
            raise ConfigError(f"--mode={self.mode} needs run folders: --run=out/a --run=out/b ...")


def main(argv):
    cfg = CompareConfig(**parse_flags(argv, CompareConfig, CHOICES))
    MODES[cfg.mode](cfg)


if __name__ == "__main__":
    cli(main)
