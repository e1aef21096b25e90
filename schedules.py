"""Learning-rate schedules: pure functions of the step, built by make_schedule(...) -> lr(step).

constant  warmup, then lr
cosine    warmup, then min_lr + (lr − min_lr)·½(1 + cos πx) over the rest of the run (nanoGPT)
wsd       warmup, stable at lr, then decay over the last decay_frac of the run (Hägele et al. arXiv 2405.18392):
            linear  lr − (lr − min_lr)·x
            cosine  min_lr + (lr − min_lr)·½(1 + cos πx)
            sqrt    lr − (lr − min_lr)·√x          ("1-sqrt", the best cooldown in that paper)
x runs from 0 at the start of a decay to 1 at its end. Warmup is linear, lr·(step+1)/(warmup_iters+1), reaching
the peak exactly at step = warmup_iters. Nothing here touches the optimizer; train.py sets the lr each step.
"""

import math

SCHEDULES = ("constant", "cosine", "wsd")
DECAY_SHAPES = ("linear", "cosine", "sqrt")


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


def constant(step, lr, warmup_iters):
    return warmup(step, lr, warmup_iters) if step < warmup_iters else lr


def cosine(step, lr, min_lr, warmup_iters, max_iters):
    if step < warmup_iters:
        return warmup(step, lr, warmup_iters)
    x = (step - warmup_iters) / max(1, max_iters - warmup_iters)
    return lr - (lr - min_lr) * decay_fraction(x, "cosine")


def wsd(step, lr, min_lr, warmup_iters, max_iters, decay_frac, decay_shape):
    if step < warmup_iters:
        return warmup(step, lr, warmup_iters)
    decay_iters = round(decay_frac * max_iters)
    x = (step - (max_iters - decay_iters)) / max(1, decay_iters)  # < 0 during the stable phase
    return lr - (lr - min_lr) * decay_fraction(x, decay_shape)


def make_schedule(name, lr, min_lr, warmup_iters, max_iters, decay_frac=0.2, decay_shape="sqrt"):
    """lr(step) for one of SCHEDULES; arguments are validated by the caller (train.py)."""
    if name == "constant":
        return lambda step: constant(step, lr, warmup_iters)
    if name == "cosine":
        return lambda step: cosine(step, lr, min_lr, warmup_iters, max_iters)
    if name == "wsd":
        return lambda step: wsd(step, lr, min_lr, warmup_iters, max_iters, decay_frac, decay_shape)
    raise ValueError(f"unknown schedule {name!r}")
