"""Schedules against their formulas at the points that define them."""
import math

import pytest

from schedules import decay_fraction, make_schedule

LR, MIN_LR, WARMUP, MAX = 1e-3, 1e-4, 10, 100


def test_warmup_is_linear_and_reaches_peak():
    for name in ("constant", "cosine", "wsd"):
        lr = make_schedule(name, LR, MIN_LR, WARMUP, MAX)
        assert lr(0) == pytest.approx(LR / (WARMUP + 1))
        assert lr(4) == pytest.approx(LR * 5 / (WARMUP + 1))
        assert lr(WARMUP) == pytest.approx(LR)  # warmup ends at the peak


def test_constant_and_cosine():
    assert make_schedule("constant", LR, MIN_LR, WARMUP, MAX)(77) == LR
    lr = make_schedule("cosine", LR, MIN_LR, WARMUP, MAX)
    mid = WARMUP + (MAX - WARMUP) // 2
    assert lr(mid) == pytest.approx((LR + MIN_LR) / 2)  # cos(π/2) = 0
    assert lr(MAX) == pytest.approx(MIN_LR)
    assert all(lr(s) >= lr(s + 1) for s in range(WARMUP, MAX))


@pytest.mark.parametrize("shape", ["linear", "cosine", "sqrt"])
def test_wsd_stable_then_decay(shape):
    lr = make_schedule("wsd", LR, MIN_LR, WARMUP, MAX, decay_frac=0.2, decay_shape=shape)
    assert all(lr(s) == LR for s in range(WARMUP, 80 + 1))  # stable until the decay starts at 80
    assert lr(MAX) == pytest.approx(MIN_LR)  # decay ends at the floor
    quarter = {"linear": 0.25, "cosine": 0.5 * (1 - math.cos(math.pi / 4)), "sqrt": 0.5}[shape]
    assert lr(85) == pytest.approx(LR - (LR - MIN_LR) * quarter)


def test_decay_shapes_at_quarters():
    for x in (0.0, 0.25, 0.5, 1.0):
        assert decay_fraction(x, "linear") == pytest.approx(x)
        assert decay_fraction(x, "cosine") == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi * x)))
        assert decay_fraction(x, "sqrt") == pytest.approx(math.sqrt(x))
    assert decay_fraction(-0.5, "sqrt") == 0.0 and decay_fraction(2.0, "linear") == 1.0  # clamped
