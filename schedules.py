"""Learning-rate schedules: pure functions of the step, built by make_schedule(...) -> lr(step, branch=None).

constant  warmup, then lr
cosine    warmup, then min_lr + (lr − min_lr)·½(1 + cos πx) over the rest of the run (nanoGPT)
wsd       warmup, stable at lr, then decay over the last decay_frac of the run (Hägele et al. arXiv 2405.18392):
            linear  lr − (lr − min_lr)·x
            cosine  min_lr + (lr − min_lr)·½(1 + cos πx)
            sqrt    lr − (lr − min_lr)·√x          ("1-sqrt", the best cooldown in that paper)
          with budgets b1 < … < bK = max_iters: the main branch stays at lr; for each earlier b a decay branch forks
          at b − decay_frac·b and decays to min_lr at b (train.py runs it, then resumes the main branch)
wsd-s     WSD-Simplified (Wen et al. arXiv 2410.05192): cycles [b_{k−1}, b_k], each ending with a decay over the
          last decay_frac of the cycle; the next cycle continues from the decayed weights, the lr back at peak
          (linearly re-warmed from min_lr over rewarmup_iters if > 0). decay_of="budget" decays over decay_frac of
          the whole budget b_k instead, exactly as long as the wsd branch of b_k (equal-decay comparisons)
cyclic    cyclic cosine: each cycle [b_{k−1}, b_k] is a full cosine from lr to min_lr, then a restart at peak

x runs from 0 at the start of a decay to 1 at its end. Warmup is linear, lr·(step+1)/(warmup_iters+1), reaching
the peak exactly at step = warmup_iters. Nothing here touches the optimizer; train.py sets the lr each step.
`python schedules.py [--out=PATH]` draws them all (default out/schedules.png, out/ is the runs' folder).
"""

import bisect
import math
from pathlib import Path

from plumbing import ConfigError, cli, pyplot

SCHEDULES = ("constant", "cosine", "wsd", "wsd-s", "cyclic")
DECAY_SHAPES = ("linear", "cosine", "sqrt")
DECAY_OF = ("cycle", "budget")  # wsd-s: what decay_frac is a share of
MULTI_BUDGET = (
    "wsd",
    "wsd-s",
    "cyclic",
)  # schedules that give several finished models from one run


def decay_fraction(x, shape):
    """How far the lr has fallen from peak to floor at decay progress x ∈ [0, 1]: 0 at x=0, 1 at x=1."""
    x = min(max(x, 0.0), 1.0)
    if shape == "linear":
        return x
    if shape == "cosine":
        return 0.5 * (1 - math.cos(math.pi * x))  # 1 − ½(1 + cos πx)
    if shape == "sqrt":
        return math.sqrt(x)  # 1-sqrt cooldown
    raise ValueError(f"unknown decay shape {shape!r}")


def warmup(step, lr, warmup_iters):
    return lr * (step + 1) / (warmup_iters + 1)


def decay_len(length, decay_frac):
    """Steps of decay at the end of a stretch of `length` steps."""
    return round(decay_frac * length)


def cycle_decay_len(start, end, decay_frac, decay_of="cycle"):
    """Steps of a wsd-s decay in the cycle [start, end]: decay_frac of the cycle, or of the whole budget `end`."""
    return decay_len(end - start if decay_of == "cycle" else end, decay_frac)


def constant(step, lr, warmup_iters):
    return warmup(step, lr, warmup_iters) if step < warmup_iters else lr


def cosine(step, lr, min_lr, warmup_iters, end, start=0):
    """Warmup (first cycle only), then a cosine from lr at `start`+warmup to min_lr at `end`."""
    if step < warmup_iters:
        return warmup(step, lr, warmup_iters)
    begin = max(start, warmup_iters)
    return lr - (lr - min_lr) * decay_fraction((step - begin) / max(1, end - begin), "cosine")


def wsd(step, lr, min_lr, warmup_iters, end, decay_iters, decay_shape):
    """Warmup, stable at lr, then decay over the decay_iters steps that end at `end`."""
    if step < warmup_iters:
        return warmup(step, lr, warmup_iters)
    x = (step - (end - decay_iters)) / max(1, decay_iters)  # < 0 during the stable phase
    return lr - (lr - min_lr) * decay_fraction(x, decay_shape)


def make_schedule(
    name,
    lr,
    min_lr,
    warmup_iters,
    max_iters,
    decay_frac=0.2,
    decay_shape="sqrt",
    budgets=None,
    rewarmup_iters=0,
    decay_of="cycle",
):
    """lr(step, branch=None) for one of SCHEDULES. `branch` is the budget of a wsd decay branch (None: the main
    branch). Arguments are checked by schedule_problem()."""
    budgets = list(budgets or [max_iters])

    def cycle(step):
        """(start, end) of the budget cycle holding step."""
        k = min(bisect.bisect_right(budgets, step), len(budgets) - 1)
        return (budgets[k - 1] if k else 0), budgets[k]

    def lr_at(step, branch=None):
        if name == "constant":
            return constant(step, lr, warmup_iters)
        if name == "cosine":
            return cosine(step, lr, min_lr, warmup_iters, max_iters)
        if name == "wsd":
            end = branch or max_iters
            return wsd(step, lr, min_lr, warmup_iters, end, decay_len(end, decay_frac), decay_shape)
        start, end = cycle(step)
        if name == "cyclic":
            return cosine(step, lr, min_lr, warmup_iters, end, start)
        if name == "wsd-s":
            if (
                start and step - start < rewarmup_iters
            ):  # optional re-warm from the decayed lr back to peak
                return min_lr + (lr - min_lr) * (step - start + 1) / (rewarmup_iters + 1)
            return wsd(
                step,
                lr,
                min_lr,
                warmup_iters,
                end,
                cycle_decay_len(start, end, decay_frac, decay_of),
                decay_shape,
            )
        raise ValueError(f"unknown schedule {name!r}")

    return lr_at


def schedule_problem(
    name, warmup_iters, max_iters, decay_frac, budgets, rewarmup_iters=0, decay_of="cycle"
):
    """A one-line description of what is wrong with this combination, or None."""
    if not 0 <= decay_frac <= 1:
        return f"--decay_frac={decay_frac} must lie in [0, 1]"
    if not budgets:
        return None
    if any(b2 <= b1 for b1, b2 in zip(budgets, budgets[1:])) or budgets[0] <= 0:
        return f"--budgets={','.join(map(str, budgets))} must be positive and strictly increasing"
    if budgets[-1] != max_iters:
        return (
            f"--budgets must end at --max_iters={max_iters} (got {budgets[-1]}); e.g. --budgets="
            + ",".join(map(str, [b for b in budgets if b < max_iters] + [max_iters]))
        )
    if len(budgets) > 1 and name not in MULTI_BUDGET:
        return (
            f"--budgets with --schedule={name} is not possible: use one {name} run per budget, or one of "
            f"{', '.join(MULTI_BUDGET)}"
        )
    if name == "wsd":
        forks = [b - decay_len(b, decay_frac) for b in budgets]
        if any(f2 <= f1 for f1, f2 in zip(forks, forks[1:])):
            return (
                f"--budgets={','.join(map(str, budgets))} are too close: two wsd decay branches would fork at the "
                f"same step ({forks}); space the budgets further apart"
            )
    starts = [0] + budgets[:-1]
    for start, end in zip(starts, budgets):
        decay = (
            decay_len(end, decay_frac)
            if name == "wsd"
            else cycle_decay_len(start, end, decay_frac, decay_of)
        )
        if name in ("wsd", "wsd-s") and decay < 1:
            return f"the decay of budget {end} would last 0 steps; use a larger --decay_frac or longer budgets"
        if start == 0 and warmup_iters >= end:
            return f"--warmup_iters={warmup_iters} does not end before the first budget {end}"
        if name == "wsd" and end - decay < max(1, warmup_iters):
            # a wsd branch decays over decay_frac of its whole budget, forking from the main branch after warmup
            return (
                f"the decay of budget {end} ({decay} steps) would start before the warmup "
                f"ends; use a smaller --decay_frac or --warmup_iters"
            )
        warm = warmup_iters if start == 0 else rewarmup_iters
        if name == "wsd-s" and decay + warm > end - start:
            return (
                f"the decay of budget {end} ({decay} steps) does not fit in its cycle [{start}, {end}] after "
                f"{warm} warmup steps; use a smaller --decay_frac, further-apart --budgets or --decay_of=cycle"
            )
    return None


def plot_schedules(
    path="schedules.png",
    lr=1e-3,
    min_lr=1e-4,
    warmup_iters=50,
    max_iters=1000,
    budgets=(250, 500, 1000),
    decay_frac=0.2,
):
    """Every schedule on one figure, for teaching."""
    plt = pyplot()
    steps = range(max_iters + 1)
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for name, kw in [("constant", {}), ("cosine", {}), ("cyclic", dict(budgets=budgets))]:
        f = make_schedule(name, lr, min_lr, warmup_iters, max_iters, budgets=kw.get("budgets"))
        axes[0].plot(
            steps, [f(s) for s in steps], label=name + (f" budgets {budgets}" if kw else "")
        )
    for shape in DECAY_SHAPES:
        f = make_schedule("wsd", lr, min_lr, warmup_iters, max_iters, decay_frac, shape)
        axes[0].plot(steps, [f(s) for s in steps], "--", label=f"wsd {shape}")
    f = make_schedule("wsd-s", lr, min_lr, warmup_iters, max_iters, decay_frac, "sqrt", budgets)
    axes[1].plot(steps, [f(s) for s in steps], label="wsd-s (one run, 1-sqrt decays)")
    f = make_schedule("wsd", lr, min_lr, warmup_iters, max_iters, decay_frac, "sqrt", budgets)
    axes[1].plot(steps, [f(s) for s in steps], color="k", alpha=0.6, label="wsd main branch")
    for b in budgets[:-1]:
        branch = range(b - decay_len(b, decay_frac), b + 1)
        axes[1].plot(
            branch,
            [f(s, b) for s in branch],
            "k:",
            label="wsd decay branches" if b == budgets[0] else None,
        )
    for ax in axes:
        for b in budgets:
            ax.axvline(b, color="grey", lw=0.5)
        ax.set_ylabel("learning rate")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.grid(alpha=0.3)
    axes[0].set_title(
        f"single-budget schedules (peak {lr}, floor {min_lr}, warmup {warmup_iters}, decay_frac {decay_frac})"
    )
    axes[1].set_title(f"several finished models from one run: budgets {budgets} (grey lines)")
    axes[1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


USAGE = "usage: python schedules.py [--out=PATH]  (draws every schedule into PATH, default out/schedules.png)"


def main(argv):
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        return
    if any(not a.startswith("--out=") or a == "--out=" for a in argv):
        raise ConfigError(f"unexpected argument {' '.join(argv)!r}; {USAGE}")
    path = Path(argv[-1].split("=", 1)[1] if argv else "out/schedules.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {plot_schedules(path)}")


if __name__ == "__main__":
    cli(main)
