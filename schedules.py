"""Learning-rate schedules: pure functions of the step: make_schedule(...) -> lr(step, branch).

constant  warmup, then lr
cosine    warmup, then min_lr + (lr − min_lr)·½(1 + cos πx) over the rest of the run (nanoGPT)
wsd       warmup, stable at lr, then decay over the last decay_frac of the run (Hägele et al.
          arXiv 2405.18392): linear lr − (lr − min_lr)·x, cosine min_lr + (lr − min_lr)·½(1 +
          cos πx), sqrt lr − (lr − min_lr)·√x ("1-sqrt"). With budgets b1 < … < bK = max_iters
          the main branch stays at lr; for each earlier b a decay branch forks at b − decay_frac·b
          and decays to min_lr at b (train.py runs it, then resumes the main branch)
wsd-s     WSD-Simplified (Wen et al. arXiv 2410.05192): cycles [b_{k−1}, b_k], each ending with a
          decay over the last decay_frac of the cycle (decay_of="budget": of the whole budget b_k,
          as long as wsd's branch); the next cycle continues from the decayed weights, back at
          peak (re-warmed linearly from min_lr over rewarmup_iters if > 0)
cyclic    cyclic cosine: each cycle [b_{k−1}, b_k] a full cosine from lr to min_lr, then a restart

x runs from 0 at the start of a decay to 1 at its end. Warmup is linear,
lr·(step+1)/(warmup_iters+1), reaching the peak exactly at step = warmup_iters. Nothing here
touches the optimizer.

SCHEDULES is the registry: name -> Schedule(lr function, what it declares). Adding a schedule is
its function, its entry, its test and its docs line; train.py, schedule_problem, loss.png and
`python schedules.py [--out=PATH]` (every schedule in one figure, default out/schedules.png) read
the declarations, never the name. ScheduleConfig declares the schedule's settings (train.py's
Config inherits them) and checks them (schedule_problem).
"""

import bisect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from plumbing import ConfigError, check_declared, cli

DECAY_SHAPES = ("linear", "cosine", "sqrt")
DECAY_OF = ("cycle", "budget")  # wsd-s: what decay_frac is a share of


def decay_fraction(x, shape):
    """How far the lr has fallen from peak to floor at decay progress x ∈ [0, 1]: 0 at 0, 1 at 1."""
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
    """Steps of a wsd-s decay in the cycle [start, end]: decay_frac of the cycle or budget."""
    return decay_len(end - start if decay_of == "cycle" else end, decay_frac)


def cosine_from(step, lr, min_lr, warmup_iters, end, start=0):
    """Warmup (first cycle only), then a cosine from lr at `start`+warmup to min_lr at `end`."""
    if step < warmup_iters:
        return warmup(step, lr, warmup_iters)
    begin = max(start, warmup_iters)
    return lr - (lr - min_lr) * decay_fraction((step - begin) / max(1, end - begin), "cosine")


def stable_then_decay(step, lr, min_lr, warmup_iters, end, decay_iters, decay_shape):
    """Warmup, stable at lr, then decay over the decay_iters steps that end at `end`."""
    if step < warmup_iters:
        return warmup(step, lr, warmup_iters)
    x = (step - (end - decay_iters)) / max(1, decay_iters)  # < 0 during the stable phase
    return lr - (lr - min_lr) * decay_fraction(x, decay_shape)


# ------------------------------------------------------------------------------------------------
# the schedules: lr(step, branch, p), p holding make_schedule's arguments (Params)


def constant(step, branch, p):
    return warmup(step, p.lr, p.warmup_iters) if step < p.warmup_iters else p.lr


def cosine(step, branch, p):
    return cosine_from(step, p.lr, p.min_lr, p.warmup_iters, p.max_iters)


def wsd(step, branch, p):
    end = branch or p.max_iters  # a decay branch ends at its budget, the main branch at max_iters
    decay = decay_len(end, p.decay_frac)
    return stable_then_decay(step, p.lr, p.min_lr, p.warmup_iters, end, decay, p.decay_shape)


def wsd_s(step, branch, p):
    start, end = p.cycle(step)
    if start and step - start < p.rewarmup_iters:  # optional re-warm from the decayed lr to peak
        return p.min_lr + (p.lr - p.min_lr) * (step - start + 1) / (p.rewarmup_iters + 1)
    decay = cycle_decay_len(start, end, p.decay_frac, p.decay_of)
    return stable_then_decay(step, p.lr, p.min_lr, p.warmup_iters, end, decay, p.decay_shape)


def cyclic(step, branch, p):
    start, end = p.cycle(step)
    return cosine_from(step, p.lr, p.min_lr, p.warmup_iters, end, start)


@dataclass(frozen=True)
class Schedule:
    """A schedule and what it declares, read by train.py, schedule_problem, the figures:
    budgets   several finished models from one run, one per --budgets step
    branches  the earlier budgets decay in branches forked from the main branch (train.py
              runs them, then returns to the main branch)
    decay     (start, end, decay_frac, decay_of) -> steps of the decay phase that ends at budget
              `end` of the cycle [start, end]; None: no decay phase (and no --decay_shape)"""

    lr: Callable
    budgets: bool = False
    branches: bool = False
    decay: Callable | None = None

    @property
    def decay_shaped(self):
        return self.decay is not None


SCHEDULES = {
    "constant": Schedule(constant),
    "cosine": Schedule(cosine),
    # a wsd branch decays over decay_frac of its whole budget, wherever the cycle starts
    "wsd": Schedule(
        wsd, budgets=True, branches=True, decay=lambda start, end, frac, of: decay_len(end, frac)
    ),
    "wsd-s": Schedule(wsd_s, budgets=True, decay=cycle_decay_len),
    "cyclic": Schedule(cyclic, budgets=True),
}


@dataclass
class Params:
    """make_schedule's arguments, as the schedule functions read them."""

    lr: float
    min_lr: float
    warmup_iters: int
    max_iters: int
    decay_frac: float
    decay_shape: str
    budgets: list
    rewarmup_iters: int
    decay_of: str

    def cycle(self, step):
        """(start, end) of the budget cycle holding step."""
        k = min(bisect.bisect_right(self.budgets, step), len(self.budgets) - 1)
        return (self.budgets[k - 1] if k else 0), self.budgets[k]


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
    """lr(step, branch=None) for one of SCHEDULES. `branch` is the budget of a decay branch (None:
    the main branch). Arguments are checked by schedule_problem()."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}")
    schedule = SCHEDULES[name].lr
    p = Params(
        lr,
        min_lr,
        warmup_iters,
        max_iters,
        decay_frac,
        decay_shape,
        list(budgets or [max_iters]),
        rewarmup_iters,
        decay_of,
    )
    return lambda step, branch=None: schedule(step, branch, p)


@dataclass
class ScheduleConfig:
    """The schedule's settings, declared once: train.py's Config inherits them (they are its flags)
    and __post_init__ holds their rules."""

    max_iters: int = 3000
    lr: float = 1e-3
    min_lr: float = 1e-4
    schedule: str = "cosine"
    warmup_iters: int = 100
    decay_frac: float = 0.2  # wsd / wsd-s: the decay's share of the run (of each budget, cycle)
    decay_shape: str = "sqrt"
    decay_of: str = "cycle"  # wsd-s: decay over decay_frac of each cycle, or of the whole budget
    budgets: str = ""  # "b1,b2,...,max_iters": steps at which a finished model is wanted
    rewarmup_iters: int = 0  # wsd-s: steps to climb back to the peak after each budget

    def __post_init__(self):
        check_declared(self, CHOICES, RANGES)
        if self.min_lr > self.lr:
            raise ConfigError(
                f"--min_lr={self.min_lr} is above --lr={self.lr}; "
                "the floor must not exceed the peak"
            )
        problem = schedule_problem(
            self.schedule,
            self.warmup_iters,
            self.max_iters,
            self.decay_frac,
            parse_budgets(self.budgets, self.max_iters) if self.budgets else [],
            self.rewarmup_iters,
            self.decay_of,
        )
        if problem:
            raise ConfigError(problem)

    def lr_schedule(self):
        """-> (lr(step, branch), the budgets, the decay branches {the step a branch forks at: its
        budget}; empty unless the schedule branches)."""
        budgets = parse_budgets(self.budgets, self.max_iters)
        lr_at = make_schedule(
            self.schedule,
            self.lr,
            self.min_lr,
            self.warmup_iters,
            self.max_iters,
            self.decay_frac,
            self.decay_shape,
            budgets,
            self.rewarmup_iters,
            self.decay_of,
        )
        spec = SCHEDULES[self.schedule]
        forks = {}
        if spec.branches:
            forks = {b - spec.decay(0, b, self.decay_frac, self.decay_of): b for b in budgets[:-1]}
        return lr_at, budgets, forks

    def main_branch(self):
        """(the lr at steps 0..max_iters-1, the decays [(start, end)]) of the main branch, for
        loss.png."""
        lr_at, budgets, _ = self.lr_schedule()
        decays = main_branch_decays(self.schedule, budgets, self.decay_frac, self.decay_of)
        return [lr_at(s) for s in range(self.max_iters)], decays


CHOICES = dict(schedule=SCHEDULES, decay_shape=DECAY_SHAPES, decay_of=DECAY_OF)
RANGES = dict(  # [ includes the end, ( excludes it
    max_iters="[1, inf)",
    lr="(0, inf)",
    min_lr="[0, inf)",
    warmup_iters="[0, inf)",
    decay_frac="[0, 1]",
    rewarmup_iters="[0, inf)",
)


def main_branch_decays(name, budgets, decay_frac, decay_of="cycle"):
    """[(start, end)] of the decays the main branch runs (budgets: the run's, [max_iters] for one);
    a schedule with branches runs only the last one there."""
    spec = SCHEDULES[name]
    if not spec.decay_shaped:
        return []
    spans = [
        (end - spec.decay(start, end, decay_frac, decay_of), end)
        for start, end in zip([0] + budgets[:-1], budgets)
    ]
    return spans[-1:] if spec.branches else spans


def schedule_problem(
    name, warmup_iters, max_iters, decay_frac, budgets, rewarmup_iters=0, decay_of="cycle"
):
    """A one-line description of what is wrong with this combination, or None."""
    spec = SCHEDULES[name]
    if not 0 <= decay_frac <= 1:
        return f"--decay_frac={decay_frac} must lie in [0, 1]"
    if not budgets:
        return None
    if any(b2 <= b1 for b1, b2 in zip(budgets, budgets[1:])) or budgets[0] <= 0:
        return f"--budgets={','.join(map(str, budgets))} must be positive and strictly increasing"
    if budgets[-1] != max_iters:
        kept = [b for b in budgets if b < max_iters] + [max_iters]
        return (
            f"--budgets must end at --max_iters={max_iters} (got {budgets[-1]}); "
            f"e.g. --budgets={','.join(map(str, kept))}"
        )
    if len(budgets) > 1 and not spec.budgets:
        several = ", ".join(n for n, s in SCHEDULES.items() if s.budgets)
        return (
            f"--budgets with --schedule={name} is not possible: use one {name} run per budget, "
            f"or one of {several}"
        )
    if spec.branches:
        forks = [b - spec.decay(0, b, decay_frac, decay_of) for b in budgets]
        if any(f2 <= f1 for f1, f2 in zip(forks, forks[1:])):
            return (
                f"--budgets={','.join(map(str, budgets))} are too close: two {name} decay branches "
                f"would fork at the same step ({forks}); space the budgets further apart"
            )
    for start, end in zip([0] + budgets[:-1], budgets):
        decay = spec.decay(start, end, decay_frac, decay_of) if spec.decay_shaped else 0
        if spec.decay_shaped and decay < 1:
            return (
                f"the decay of budget {end} would last 0 steps; "
                "use a larger --decay_frac or longer budgets"
            )
        if start == 0 and warmup_iters >= end:
            return f"--warmup_iters={warmup_iters} does not end before the first budget {end}"
        if spec.branches and end - decay < max(1, warmup_iters):
            # a branch forks from the main branch after its warmup
            return (
                f"the decay of budget {end} ({decay} steps) would start before the warmup "
                f"ends; use a smaller --decay_frac or --warmup_iters"
            )
        warm = warmup_iters if start == 0 else rewarmup_iters
        if spec.decay_shaped and not spec.branches and decay + warm > end - start:
            return (
                f"the decay of budget {end} ({decay} steps) does not fit in its cycle "
                f"[{start}, {end}] after {warm} warmup steps; use a smaller --decay_frac, "
                "further-apart --budgets or --decay_of=cycle"
            )
    return None


def parse_budgets(text, max_iters):
    """--budgets as a list of steps; by default the one finished model at max_iters."""
    try:
        return [int(b) for b in text.split(",")] if text else [max_iters]
    except ValueError:
        raise ConfigError(
            f"--budgets={text} is not a comma-separated list of steps, e.g. "
            f"--budgets={max_iters // 4},{max_iters // 2},{max_iters}"
        ) from None


# ------------------------------------------------------------------------------------------------
# `python schedules.py`: every registered schedule in one figure (plots.plot_schedules draws)

FIGURE = dict(lr=1e-3, min_lr=1e-4, warmup_iters=50, max_iters=1000, decay_frac=0.2)
FIGURE_BUDGETS = (250, 500, 1000)


def figure_curves(lr, min_lr, warmup_iters, max_iters, decay_frac, budgets):
    """Every schedule as curves [(panel, steps, lrs, fmt, style)]. Panel 0, one run to one
    finished model: the schedules without a decay phase (with the budgets if they take them), then
    each decay shape of those that branch. Panel 1, several finished models from one run: the
    decay-shaped schedules that decay inside the run (1-sqrt), then those that branch (main
    branch and branches)."""
    steps = range(max_iters + 1)
    args = (lr, min_lr, warmup_iters, max_iters, decay_frac)
    curves = []
    for name, spec in SCHEDULES.items():
        if not spec.decay_shaped:
            f = make_schedule(name, *args, budgets=budgets if spec.budgets else None)
            label = name + (f" budgets {budgets}" if spec.budgets else "")
            curves.append((0, steps, [f(s) for s in steps], (), dict(label=label)))
    for name, spec in SCHEDULES.items():
        if spec.branches:
            for shape in DECAY_SHAPES:
                f = make_schedule(name, *args, shape)
                curves.append(
                    (0, steps, [f(s) for s in steps], ("--",), dict(label=f"{name} {shape}"))
                )
    for name, spec in SCHEDULES.items():
        if spec.decay_shaped and not spec.branches:
            f = make_schedule(name, *args, "sqrt", budgets)
            label = f"{name} (one run, 1-sqrt decays)"
            curves.append((1, steps, [f(s) for s in steps], (), dict(label=label)))
    for name, spec in SCHEDULES.items():
        if spec.branches:
            f = make_schedule(name, *args, "sqrt", budgets)
            main = dict(color="k", alpha=0.6, label=f"{name} main branch")
            curves.append((1, steps, [f(s) for s in steps], (), main))
            for b in budgets[:-1]:
                branch = range(b - spec.decay(0, b, decay_frac, "cycle"), b + 1)
                label = f"{name} decay branches" if b == budgets[0] else None
                curves.append((1, branch, [f(s, b) for s in branch], ("k:",), dict(label=label)))
    return curves


USAGE = (
    "usage: python schedules.py [--out=PATH]  (draws every schedule into PATH, "
    "default out/schedules.png)"
)


def main(argv):
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        return
    if any(not a.startswith("--out=") or a == "--out=" for a in argv):
        raise ConfigError(f"unexpected argument {' '.join(argv)!r}; {USAGE}")
    from plots import plot_schedules  # matplotlib only when drawing

    path = Path(argv[-1].split("=", 1)[1] if argv else "out/schedules.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    curves = figure_curves(**FIGURE, budgets=FIGURE_BUDGETS)
    print(f"wrote {plot_schedules(path, curves, FIGURE_BUDGETS, **FIGURE)}")


if __name__ == "__main__":
    cli(main)
