"""Schedules against their formulas at the points that define them."""

import math

import pytest

from schedules import (
    DECAY_SHAPES,
    FIGURE,
    FIGURE_BUDGETS,
    SCHEDULES,
    Schedule,
    decay_fraction,
    figure_curves,
    main_branch_decays,
    make_schedule,
    schedule_problem,
    warmup,
)

LR, MIN_LR, WARMUP, MAX = 1e-3, 1e-4, 10, 100


def test_warmup_is_linear_and_reaches_peak():
    for name in SCHEDULES:
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


@pytest.mark.parametrize("shape", DECAY_SHAPES)
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


BUDGETS = [40, 60, 100]  # cycles [0, 40], [40, 60], [60, 100]


def test_wsd_s_returns_to_peak_after_each_budget():
    lr = make_schedule(
        "wsd-s", LR, MIN_LR, WARMUP, MAX, decay_frac=0.2, decay_shape="sqrt", budgets=BUDGETS
    )
    assert lr(WARMUP) == pytest.approx(LR)
    # each cycle decays over its last 20%: [32, 40], [56, 60], [92, 100]
    for start, end, decay_start in ((0, 40, 32), (40, 60, 56), (60, 100, 92)):
        assert lr(decay_start) == pytest.approx(LR)  # x = 0: still at peak
        assert lr(decay_start - 1) == LR  # stable phase
        assert (
            lr(end) == pytest.approx(LR) if end < MAX else lr(end) == pytest.approx(MIN_LR)
        )  # peak again after b
        d = end - decay_start
        assert lr(end - 1) == pytest.approx(
            LR - (LR - MIN_LR) * math.sqrt((d - 1) / d)
        )  # 1-sqrt near the end
    assert lr(MAX) == pytest.approx(MIN_LR)


def test_wsd_s_decay_of_budget_matches_the_wsd_branches():
    """--decay_of=budget: each wsd-s decay as long as the wsd branch of its budget, step for step
    the same lr."""
    budgets = [40, 80, 160]  # decays of 0.2·b: 8, 16, 32 steps, each inside its cycle
    s = make_schedule("wsd-s", LR, MIN_LR, WARMUP, 160, 0.2, "sqrt", budgets, decay_of="budget")
    w = make_schedule("wsd", LR, MIN_LR, WARMUP, 160, 0.2, "sqrt", budgets)
    for b, d in ((40, 8), (80, 16), (160, 32)):
        assert s(b - d - 1) == LR
        for step in range(b - d, b):
            x = (step - (b - d)) / d
            assert s(step) == pytest.approx(
                LR - (LR - MIN_LR) * math.sqrt(x)
            )  # 1-sqrt over 0.2·b steps
            assert s(step) == pytest.approx(w(step, branch=b if b < 160 else None))
    assert schedule_problem("wsd-s", WARMUP, 100, 0.5, BUDGETS, decay_of="budget").startswith(
        "the decay of budget 60"
    )


def test_wsd_s_rewarmup():
    lr = make_schedule("wsd-s", LR, MIN_LR, WARMUP, MAX, 0.2, "sqrt", BUDGETS, rewarmup_iters=4)
    assert lr(40) == pytest.approx(MIN_LR + (LR - MIN_LR) * 1 / 5)
    assert lr(43) == pytest.approx(MIN_LR + (LR - MIN_LR) * 4 / 5)
    assert lr(44) == pytest.approx(LR)


def test_wsd_branches_and_cyclic():
    lr = make_schedule(
        "wsd", LR, MIN_LR, WARMUP, MAX, decay_frac=0.25, decay_shape="linear", budgets=BUDGETS
    )
    assert lr(50) == LR and lr(74) == LR  # the main branch holds the peak until its own decay at 75
    assert lr(30, branch=40) == pytest.approx(
        LR
    )  # branch of budget 40 decays over 0.25·40 = 10 steps from 30
    assert lr(35, branch=40) == pytest.approx(LR - (LR - MIN_LR) * 0.5)
    assert lr(40, branch=40) == pytest.approx(MIN_LR)
    assert lr(100) == pytest.approx(MIN_LR)
    cyc = make_schedule("cyclic", LR, MIN_LR, WARMUP, MAX, budgets=BUDGETS)
    assert (
        cyc(WARMUP) == pytest.approx(LR)
        and cyc(40) == pytest.approx(LR)
        and cyc(60) == pytest.approx(LR)
    )
    assert cyc(50) == pytest.approx((LR + MIN_LR) / 2)  # halfway through the cosine of [40, 60]
    assert cyc(100) == pytest.approx(MIN_LR)
    one = make_schedule("cosine", LR, MIN_LR, WARMUP, MAX)
    assert all(
        make_schedule("cyclic", LR, MIN_LR, WARMUP, MAX)(s) == pytest.approx(one(s))
        for s in range(MAX)
    )


@pytest.mark.parametrize(
    "name, budgets, decay_frac, words",
    [
        ("wsd-s", [60, 40, 100], 0.2, "strictly increasing"),
        ("wsd-s", [40, 60, 90], 0.2, "must end at --max_iters=100"),
        ("cosine", [50, 100], 0.2, "one cosine run per budget"),
        ("wsd-s", [15, 100], 0.5, "does not fit"),
        ("wsd", [40, 100], 1.5, "[0, 1]"),
        ("wsd", [12, 100], 0.5, "before the warmup ends"),
        ("wsd-s", [5, 100], 0.2, "--warmup_iters=10 does not end"),
        ("wsd", [50, 100], 0.0, "would last 0 steps"),
        ("wsd-s", [50, 100], 0.001, "would last 0 steps"),
        ("wsd", [52, 53, 100], 0.2, "too close"),  # 52 − 10 = 53 − 11: one branch would be lost
    ],
)
def test_invalid_combinations_are_named(name, budgets, decay_frac, words):
    problem = schedule_problem(name, WARMUP, MAX, decay_frac, budgets)
    assert problem and words in problem


def test_valid_combinations_pass():
    several = [name for name, s in SCHEDULES.items() if s.budgets]
    for name in several:
        assert schedule_problem(name, WARMUP, MAX, 0.2, BUDGETS) is None
    for name in set(SCHEDULES) - set(several):  # the message names the ones that can
        assert schedule_problem(name, WARMUP, MAX, 0.2, BUDGETS).endswith(", ".join(several))
    assert schedule_problem("cosine", WARMUP, MAX, 0.2, [MAX]) is None
    assert (
        schedule_problem("wsd", WARMUP, MAX, 0.5, [30, 60, 100]) is None
    )  # branches may overlap earlier budgets
    assert (
        schedule_problem("cosine", 500, MAX, 0.2, []) is None
    )  # a plain run may end inside its warmup


def test_every_registered_schedule_is_drawn():
    """`python schedules.py` draws each schedule of the registry, each decay shape of those that
    branch, and the branches themselves."""
    labels = [
        style.get("label") for _, _, _, _, style in figure_curves(**FIGURE, budgets=FIGURE_BUDGETS)
    ]
    for name, spec in SCHEDULES.items():
        assert any(label and label.split()[0] == name for label in labels), name
        if spec.branches:
            assert all(f"{name} {shape}" in labels for shape in DECAY_SHAPES)
            assert f"{name} decay branches" in labels


def test_decays_on_the_main_branch():
    """loss.png shades the decays the main branch runs: every cycle's for wsd-s, the last one only
    for a schedule whose earlier budgets decay in branches, none for the others."""
    assert main_branch_decays("wsd-s", BUDGETS, 0.2) == [(32, 40), (56, 60), (92, 100)]
    assert main_branch_decays("wsd", BUDGETS, 0.2) == [(80, 100)]
    assert main_branch_decays("wsd", [MAX], 0.2) == [(80, 100)]
    for name, spec in SCHEDULES.items():
        if not spec.decay_shaped:
            assert main_branch_decays(name, BUDGETS, 0.2) == []


def test_a_new_schedule_is_its_function_and_its_entry(monkeypatch):
    """Linear decay to zero, registered: make_schedule runs it, the checks and the figure see it."""

    def linear_to_zero(step, branch, p):
        if step < p.warmup_iters:
            return warmup(step, p.lr, p.warmup_iters)
        return p.lr * (1 - (step - p.warmup_iters) / (p.max_iters - p.warmup_iters))

    monkeypatch.setitem(SCHEDULES, "linear", Schedule(linear_to_zero))
    lr = make_schedule("linear", LR, MIN_LR, WARMUP, MAX)
    assert lr(WARMUP) == pytest.approx(LR) and lr(MAX) == 0.0
    assert "one linear run per budget" in schedule_problem("linear", WARMUP, MAX, 0.2, BUDGETS)
    curves = figure_curves(**FIGURE, budgets=FIGURE_BUDGETS)
    assert "linear" in [style.get("label") for _, _, _, _, style in curves]
