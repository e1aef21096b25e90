"""seekr.py: every piece against a hand-computed or naive case, then tiny continual runs of every
method."""

import copy
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import naive_attention_probs, one_line_error, tiny

import continual
import plots
import seekr
import tasks
import train
from model import ATTENTIONS, GPT, GPTConfig
from plumbing import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POS = [(name, kind.default_pos) for name, kind in ATTENTIONS.items()]  # each at its own


def test_pad_batch_masks_everything_but_the_answer():
    x, y = tasks.pad_batch([([5, 6, 7], [8, 9, 0]), ([1], [2, 0])], pad=0, device="cpu")
    assert x.tolist() == [[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]]
    # answer tokens and the end token, nothing else
    assert y.tolist() == [
        [-1, -1, 8, 9, 0],
        [2, 0, -1, -1, -1],
    ]


@pytest.mark.parametrize("attention,pos", DEFAULT_POS)
def test_captured_rows_sum_to_one_or_one_minus_lambda(attention, pos):
    torch.manual_seed(0)
    model = GPT(tiny(attention=attention, pos=pos)).eval()
    idx = torch.randint(0, 64, (2, 10))
    _, _, maps = seekr.capture(model, idx, [(0, 1), (1, 0)])
    L, H = seekr.map_heads(model)
    assert (L, H) == (2, 2 if ATTENTIONS[attention].paired_heads else 4)
    for (layer, head), m in maps.items():
        assert m.shape == (2, 10, 10) and torch.all(m.triu(1) == 0)  # causal
        attn = model.transformer.h[layer].attn
        want = 1 - attn.lam().item() if ATTENTIONS[attention].signed_maps else 1.0  # diff: 1 − λ
        assert torch.allclose(m.sum(-1), torch.full((2, 10), want), atol=1e-5)


def test_captured_map_matches_naive_softmax():
    torch.manual_seed(0)
    model = GPT(tiny(pos="nope")).eval()
    idx = torch.randint(0, 64, (1, 8))
    _, _, maps = seekr.capture(model, idx, [(0, 2)])
    want = naive_attention_probs(
        model.transformer.h[0].ln_1(model.transformer.wte(idx))[0],
        model.transformer.h[0].attn,
        "nope",
    )
    assert torch.allclose(maps[(0, 2)][0], want[2], atol=1e-5)


def test_task_sensitivity_matches_finite_differences():
    """S̃(l, h) = mean over queries and keys of (∂LM/∂A)², each layer normalised to sum 1; ∂LM/∂A by
    central differences on every entry of every map, perturbing the map inside the forward pass."""
    torch.manual_seed(0)
    model = GPT(tiny(n_layer=1, n_head=2, n_embd=16)).double().eval()
    record = {"prompt": [3, 4, 5], "answer": [6, 0], "rows": torch.arange(4)}
    same = seekr.all_maps(model, record, 0, "cpu")
    sens, forget, after = seekr.score_heads(model, [record], [same], 0, "cpu")
    # unchanged model: nothing forgotten
    assert torch.allclose(forget, torch.zeros(1, 2), atol=1e-12)
    x, y = tasks.pad_batch([(record["prompt"], record["answer"])], 0, "cpu")
    attn = model.transformer.h[0].attn
    T = x.size(1)
    eps = 1e-6
    delta = torch.zeros(1, 2, T, T, dtype=torch.float64)
    plain = attn.capture
    attn.capture = lambda att: plain(att + delta)  # the model computes its output from A + delta
    attn.capture_heads = [0, 1]
    g = torch.zeros(2, T, T, dtype=torch.float64)
    for h in range(2):
        for q in range(T):
            for k in range(T):
                delta[0, h, q, k] = eps
                up = model(x, y)[1].item()
                delta[0, h, q, k] = -eps
                down = model(x, y)[1].item()
                delta[0, h, q, k] = 0
                g[h, q, k] = (up - down) / (2 * eps)
    s = g.pow(2).mean(dim=(1, 2))
    assert torch.allclose(sens[0].double(), s / s.sum(), rtol=1e-4)
    # autograd.grad left no .grad behind
    assert model.transformer.h[0].attn.c_attn.weight.grad is None


def test_forgettability_is_mean_squared_map_change_against_naive_maps():
    torch.manual_seed(0)
    before_model = GPT(tiny(n_layer=1, pos="nope"))
    after_model = GPT(tiny(n_layer=1, pos="nope"))
    # a query budget of 2 rows
    records = [
        {"prompt": [1, 2, 3], "answer": [4, 0], "rows": torch.arange(4)},
        {"prompt": [9, 8], "answer": [7, 6, 0], "rows": torch.tensor([1, 3])},
    ]
    before = [seekr.all_maps(before_model, r, 0, "cpu") for r in records]
    _, forget, _ = seekr.score_heads(after_model, records, before, 0, "cpu")
    want = torch.zeros(4)
    for r in records:
        idx = torch.tensor([r["prompt"] + r["answer"][:-1]])
        maps = [
            naive_attention_probs(
                m.transformer.h[0].ln_1(m.transformer.wte(idx))[0], m.transformer.h[0].attn, "nope"
            )
            for m in (before_model, after_model)
        ]
        want += (maps[0] - maps[1])[:, r["rows"]].pow(2).mean(dim=(1, 2)) / len(records)
    assert torch.allclose(forget[0], want, atol=1e-6) and forget.min() > 0


def test_selection_is_layers_first_then_heads():
    importance = torch.tensor(
        [
            [0.9, 0.0, 0.0, 0.0],  # layer sums 0.9, 1.2, 1.0, 0.1
            [0.35, 0.3, 0.3, 0.25],
            [0.5, 0.45, 0.05, 0.0],
            [0.1, 0.0, 0.0, 0.0],
        ]
    )
    # (0, 0) is the top head, not chosen
    assert seekr.select_heads(importance, 2, 3) == [
        (1, 0),
        (2, 0),
        (2, 1),
    ]
    # layer 1 is chosen but keeps no head
    assert seekr.select_heads(importance, 2, 2) == [
        (2, 0),
        (2, 1),
    ]
    chosen = seekr.select_heads(importance, 3, 5)
    assert len(chosen) == 5 and {l for l, _ in chosen} <= {0, 1, 2}


def test_attention_kl_and_logit_distillation_by_hand():
    a = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0]])
    b = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    assert seekr.attention_distill(a, a).item() == pytest.approx(0.0, abs=1e-6)
    # row 0 adds 0
    kl = (0.25 * math.log(0.25 / (0.5 + 1e-8)) + 0.75 * math.log(0.75 / (0.5 + 1e-8))) / 2
    assert seekr.attention_distill(a, b).item() == pytest.approx(kl, rel=1e-5) and kl > 0
    assert seekr.attention_distill(a, b, signed=True).item() == pytest.approx(2 * 0.25**2 / 2)

    logits = torch.tensor([[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0]]])  # (1, 2, V)
    y = torch.tensor([[-1, 1]])  # only position 1 is an answer position
    teacher = F.log_softmax(torch.tensor([[1.0, 1.0, -1.0]]), -1)
    p, s = teacher.exp()[0], F.log_softmax(torch.tensor([2.0, 0.0, 0.0]), -1)
    assert seekr.logit_distill(logits, y, teacher).item() == pytest.approx(
        -(p * s).sum().item(), rel=1e-6
    )
    same = seekr.logit_distill(logits, y, F.log_softmax(logits[y != -1], -1)).item()
    entropy = -(F.softmax(logits[0, 1], -1) * F.log_softmax(logits[0, 1], -1)).sum().item()
    assert same == pytest.approx(entropy, rel=1e-6)  # CE to itself is the entropy, its minimum


def test_op_and_bwt_on_a_known_matrix():
    R = [[0.8, 0.1, 0.0], [0.6, 0.9, 0.2], [0.5, 0.7, 1.0]]
    m = tasks.metrics(R)
    assert m["OP"] == pytest.approx((0.5 + 0.7 + 1.0) / 3)
    assert m["BWT"] == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)
    assert m["BWT_over_T"] == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 3)


def test_figures_redraw_from_results_json_with_untrained_tasks_blank(tmp_path, monkeypatch):
    """R.png numbers only the tasks trained so far (i <= t); acc_over_time.png starts each task's
    line at the step it was trained; heads.png has a colour bar per task."""
    R = [[0.9, 0.3, 0.0], [0.1, 0.8, 0.0], [0.0, 0.0, 0.7]]
    res = dict(
        method="seekr",
        replay=0.01,
        tasks=["a", "b", "c"],
        R=R,
        OP=0.23,
        BWT=-0.8,
        seed=1,
        heads=[[[0, 1]], [[1, 0]], [[1, 1]]],
        importance=[[[1e-6, 2e-6], [3e-6, 4e-6]]] * 3,
    )
    (tmp_path / "results.json").write_text(json.dumps(res))
    import matplotlib.pyplot as plt

    figures = {}
    savefig = plt.Figure.savefig
    monkeypatch.setattr(
        plt.Figure,
        "savefig",
        lambda fig, path, **kw: (figures.update({Path(path).name: fig}), savefig(fig, path, **kw)),
    )
    plots.plot_results(tmp_path)
    assert all(
        (tmp_path / name).stat().st_size > 0 for name in ("R.png", "acc_over_time.png", "heads.png")
    )
    # no 0.30: b not trained yet
    assert sorted(t.get_text() for t in figures["R.png"].axes[0].texts) == [
        "0.00",
        "0.00",
        "0.10",
        "0.70",
        "0.80",
        "0.90",
    ]
    lines = [
        line
        for line in figures["acc_over_time.png"].axes[0].get_lines()
        if len(line.get_xdata()) > 1
    ]
    # a from step 1, b from 2; c is one point
    assert [round(min(line.get_xdata())) for line in lines] == [
        1,
        2,
    ]
    assert len(figures["heads.png"].axes) == 6  # three panels, three colour bars


class Successor(torch.nn.Module):
    """A stub language model with scripted greedy choices: after byte c comes c + 1, after "e" the
    end token."""

    def __init__(self, block_size):
        super().__init__()
        self.config = GPTConfig(
            vocab_size=320, block_size=block_size, n_layer=1, n_head=1, n_embd=8
        )

    def forward(self, idx):
        nxt = torch.where(idx == ord("e"), 256, idx + 1)
        # 300: padding id
        return F.one_hot(nxt, 320).float() + 0.5 * F.one_hot(torch.full_like(idx, 300), 320), None


def test_batched_greedy_decoding_stops_per_row():
    from data import get_tokenizer

    tok = get_tokenizer("bytes")
    prompts = [b"ab", b"xyz: c", b"e", b"0123", b"d"]
    got = tasks.greedy_answers(
        Successor(block_size=9),
        tok,
        [list(p) for p in prompts],
        5,
        "cpu",
        torch.autocast("cpu", enabled=False),
        batch_size=3,
    )
    want = []
    for p in prompts:  # the same rule, one prompt at a time, within block_size 9
        out = b""
        last = p[-1]
        while len(out) < 5 and len(p) + len(out) < 9 and last != ord("e"):
            last += 1
            out += bytes([last])
        want.append(out.decode())
    # "0123": 5 new tokens; "xyz: c": the block's end
    assert got == want == ["cde", "de", "", "45678", "e"]


@pytest.mark.parametrize("attention,pos", DEFAULT_POS)
def test_stored_teacher_lines_up_with_a_padded_replay_batch(attention, pos):
    """Right after a task is stored, a replay batch of records of different lengths has AD = 0 and
    LD = the teacher's entropy (its minimum): teacher maps and logits taken record by record line up
    with the batch's."""
    torch.manual_seed(0)
    model = GPT(tiny(attention=attention, pos=pos)).eval()
    heads = [[(0, 1), (1, 0)], [(1, 1)]]
    batch = [
        {"prompt": [1, 2, 3, 4, 5, 6], "answer": [7, 63], "task": 0},
        {"prompt": [9, 8], "answer": [7, 63], "task": 1},
        {"prompt": [5, 5, 5], "answer": [2, 3, 4, 63], "task": 0},
    ]
    entropy = []
    for r in batch:
        n = len(r["prompt"]) + len(r["answer"]) - 1
        r["rows"] = torch.arange(n) if r["task"] else torch.tensor([0, n - 1])
        maps = seekr.all_maps(model, r, 63, "cpu")
        r["maps"] = torch.stack([maps[l, h][r["rows"]] for l, h in heads[r["task"]]])
        x, y = tasks.pad_batch([(r["prompt"], r["answer"])], 63, "cpu", seekr.pad_tail(model))
        r["logp"] = F.log_softmax(model(x)[0][y != -1], -1).detach()
        entropy += (-(r["logp"].exp() * r["logp"]).sum(-1)).tolist()
    terms, parts = seekr.replay_loss(
        model,
        batch,
        continual.METHODS["seekr"],
        heads,
        0.5,
        1000.0,
        63,
        "cpu",
        torch.autocast("cpu", enabled=False),
    )
    assert parts["ad"] == pytest.approx(0.0, abs=1e-7)
    assert parts["ld"] == pytest.approx(sum(entropy) / len(entropy), rel=1e-6)
    # the weighted terms: β·AD, α·LD
    assert terms["ad"].item() == pytest.approx(1000.0 * parts["ad"], abs=1e-4)
    assert (
        terms["ld"].item() == pytest.approx(0.5 * parts["ld"], rel=1e-6)
        and terms["lm"].requires_grad
    )


# --------------------------------------------------------------------------------------------------
# end to end: a tiny base, three tiny tasks in TRACE's layout, every method


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny pretrained base (tiny preset, 20 steps) and a three-task folder in TRACE's layout."""
    tmp = tmp_path_factory.mktemp("continual")
    import argparse

    (tmp / "corpus.txt").write_text(Path(argparse.__file__).read_text())
    train.main(
        [
            "--preset=tiny",
            f"--dataset=text:{tmp / 'corpus.txt'}",
            f"--data_dir={tmp / 'data'}",
            f"--out_dir={tmp / 'base'}",
            "--max_iters=20",
            "--sample_tokens=0",
            "--device=cpu",
        ]
    )
    for name, fn in (
        ("add", lambda a, b: str(a + b)),
        ("first", lambda a, b: str(a)),
        ("max", lambda a, b: str(max(a, b))),
    ):
        rec = [
            {"prompt": f"{name} {a} {b}: ", "answer": fn(a, b)} for a in range(8) for b in range(8)
        ]
        (tmp / "tasks" / name).mkdir(parents=True)
        (tmp / "tasks" / name / "train.json").write_text(json.dumps(rec[:56]))
        (tmp / "tasks" / name / "test.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rec[56:])
        )
    return tmp


def continual_args(base, out, *extra):
    return [
        "--mode=continual",
        f"--init_from={base / 'base'}",
        f"--tasks={base / 'tasks'}",
        f"--out_dir={out}",
        "--iters_per_task=6",
        "--batch_size=4",
        "--device=cpu",
        "--replay=0.1",
        "--replay_cycle=2",
        "--log_interval=3",
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(base):
    """One tiny continual run per method, same base and seed."""
    for method in continual.METHODS:
        train.main(continual_args(base, base / "runs" / method, f"--method={method}"))
    return base / "runs"


@pytest.mark.parametrize("method", continual.METHODS)
def test_every_method_runs_end_to_end(runs, method):
    res = json.loads((runs / method / "results.json").read_text())
    assert (
        res["tasks"] == ["add", "first", "max"]
        and len(res["R"]) == 3
        and all(len(r) == 3 for r in res["R"])
    )
    assert all(0 <= a <= 1 for r in res["R"] for a in r)
    assert res["OP"] == pytest.approx(sum(res["R"][-1]) / 3)
    assert res["general_before"] > 0 and res["general_after"] > 0 and res["seconds"] > 0
    spec = continual.METHODS[method]
    for png in ("R.png", "acc_over_time.png") + (("heads.png",) if spec.distill_attention else ()):
        assert (runs / method / png).stat().st_size > 0
    rows = [json.loads(line) for line in (runs / method / "log.jsonl").read_text().splitlines()]
    if spec.distill_attention:  # tiny preset: 2 layers x 2 heads -> budgets 2 layers, 1 head
        assert len(res["heads"]) == 3 and all(len(h) == 1 for h in res["heads"])
    else:
        assert res["heads"] == []
    if spec.distill_logits:  # distillation ran on replay steps from the second task on
        assert any("replay_ld" in r for r in rows if r["task"] > 0)
        assert all("replay_ld" not in r for r in rows if r["task"] == 0)
        assert any("replay_ad" in r for r in rows) == spec.distill_attention
    if spec.distill_previous:
        assert all("ld" not in r for r in rows if r["task"] == 0) and any(
            "ld" in r for r in rows if r["task"] > 0
        )


def test_same_first_task_for_every_method_and_the_table(runs):
    """Before any buffer or teacher exists every method is plain fine-tuning: identical first rows
    of R."""
    import compare

    first = {
        m: json.loads((runs / m / "results.json").read_text())["R"][0] for m in continual.METHODS
    }
    plain = first[
        next(iter(continual.METHODS))
    ]  # the first method keeps nothing: plain fine-tuning
    assert not any(dataclasses.astuple(continual.METHODS[next(iter(continual.METHODS))]))
    assert all(r == plain for r in first.values()), first
    table = compare.continual_table([runs / m for m in continual.METHODS]).splitlines()
    assert len(table) == 2 + len(continual.METHODS) and all(
        f"| {m} |" in table[2 + k] for k, m in enumerate(continual.METHODS)
    )


@pytest.mark.parametrize("attention", list(ATTENTIONS)[1:])  # the first runs in `runs`
def test_seekr_runs_on_every_other_attention_type(base, attention, tmp_path):
    train.main(
        [
            "--preset=tiny",
            f"--dataset=text:{base / 'corpus.txt'}",
            f"--data_dir={base / 'data'}",
            f"--out_dir={tmp_path / 'base'}",
            "--max_iters=4",
            "--sample_tokens=0",
            "--device=cpu",
            f"--attention={attention}",
        ]
    )
    train.main(
        [
            "--mode=continual",
            f"--init_from={tmp_path / 'base'}",
            f"--tasks={base / 'tasks'}",
            f"--out_dir={tmp_path / 'cl'}",
            "--task_order=add,max",
            "--iters_per_task=4",
            "--batch_size=4",
            "--device=cpu",
            "--replay=0.1",
            "--replay_cycle=1",
            "--method=seekr",
        ]
    )
    res = json.loads((tmp_path / "cl" / "results.json").read_text())
    assert len(res["R"]) == 2 and len(res["heads"]) == 2
    rows = [json.loads(line) for line in (tmp_path / "cl" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["replay_ad"]) for r in rows if "replay_ad" in r) and any(
        "replay_ad" in r for r in rows
    )


def test_budgets_and_query_rows_are_respected(base, tmp_path):
    train.main(
        continual_args(
            base,
            tmp_path / "s",
            "--method=seekr",
            "--seekr_layer_budget=1",
            "--seekr_head_budget=2",
            "--seekr_query_budget=3",
        )
    )
    res = json.loads((tmp_path / "s" / "results.json").read_text())
    assert all(len(h) == 2 and len({l for l, _ in h}) == 1 for h in res["heads"])
    buffers = torch.load(tmp_path / "s" / "ckpt.pt", weights_only=True)["buffers"]
    for r in (r for buffer in buffers for r in buffer):
        # 2 heads x 3 query rows x keys
        assert len(r["rows"]) == 3 and r["maps"].shape[:2] == (2, 3)


def test_resume_after_a_task_matches_an_uninterrupted_run(base, tmp_path, monkeypatch):
    args = ("--method=seekr", "--seed=3")
    train.main(continual_args(base, tmp_path / "whole", *args))
    saves = []

    def save_then_die(obj, path):
        real_save(obj, path)
        saves.append(obj["task"])
        if obj["task"] == 1:
            raise KeyboardInterrupt  # killed right after the first task's checkpoint

    real_save = continual.save_atomic
    monkeypatch.setattr(continual, "save_atomic", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.main(continual_args(base, tmp_path / "cut", *args))
    monkeypatch.undo()
    train.main(continual_args(base, tmp_path / "cut", *args, "--resume"))
    whole, cut = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "cut"))
    assert (
        cut["R"] == whole["R"]
        and cut["heads"] == whole["heads"]
        and cut["importance"] == whole["importance"]
    )
    a, b = (
        torch.load(tmp_path / d / "ckpt.pt", weights_only=True)["model"] for d in ("whole", "cut")
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "nan_after, seen_at",
    [
        (8, r"the loss is nan at task 2 \(first\) iter 3"),  # caught at a log line
        (12, r"the weights hold nan or inf at task 2 \(first\)"),  # after the last, at the save
    ],
    ids=["log line", "save"],
)
def test_a_diverging_task_stops_and_keeps_the_last_checkpoint(
    base, tmp_path, monkeypatch, nan_after, seen_at
):
    """Every weight turns nan after the nan_after-th step (task 2 of 6-step tasks): the run stops
    in one line naming where; ckpt.pt stays task 1's, no results or figures are written."""
    saved = []
    real_save = continual.save_atomic

    def save(obj, path):
        real_save(obj, path)
        saved.append(Path(path).read_bytes())

    real_step = continual.ContinualRun.optimizer_step
    steps = []

    def step(self, optimizer):
        real_step(self, optimizer)
        steps.append(1)
        if len(steps) == nan_after:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))

    monkeypatch.setattr(continual, "save_atomic", save)
    monkeypatch.setattr(continual.ContinualRun, "optimizer_step", step)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="training diverged: " + seen_at) as e:
        train.main(continual_args(base, out, "--method=seqft"))
    assert "\n" not in str(e.value) and "--lr" in str(e.value)
    assert len(saved) == 1 and (out / "ckpt.pt").read_bytes() == saved[0]
    assert not (out / "results.json").exists() and not list(out.glob("*.png"))


def test_bad_continual_flags_give_one_line(base, tmp_path):
    def err(*args):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        one_line_error(proc)
        return proc.stderr

    assert "--init_from" in err("--mode=continual")
    assert ", ".join(continual.METHODS) in err("--mode=continual", "--method=ewc")
    assert "--replay" in err(*continual_args(base, tmp_path / "r", "--method=replay", "--replay=0"))
    assert "no such folder" in err(
        *continual_args(base, tmp_path / "t", "--tasks=" + str(tmp_path / "nowhere"))
    )
    (tmp_path / "long" / "essay").mkdir(parents=True)  # the tiny base's block_size is 64 tokens
    for split in ("train", "test"):
        (tmp_path / "long" / "essay" / f"{split}.json").write_text(
            json.dumps([{"prompt": "x" * 80, "answer": "y"}])
        )
    assert "--block_size=64" in err(
        *continual_args(base, tmp_path / "b", f"--tasks={tmp_path / 'long'}")
    )


def test_the_block_size_advice_runs_the_builtin_tasks_from_the_tiny_preset(base, tmp_path):
    """The tiny base (block 64, rope) is too short for the builtin tasks: the error names the block
    every record fits, and that flag then runs under --init_from (rope learns no positions)."""
    args = ["--mode=continual", f"--init_from={base / 'base'}", "--method=seqft", "--device=cpu"]
    args += ["--iters_per_task=1", "--batch_size=2", "--eval_records=2"]
    with pytest.raises(DataError, match=r"--block_size=64; pass --block_size=(\d+) or more") as e:
        train.main([*args, f"--out_dir={tmp_path / 'refused'}"])
    need = int(re.search(r"pass --block_size=(\d+) or more", str(e.value)).group(1))
    train.main([*args, f"--out_dir={tmp_path / 'cl'}", f"--block_size={need}"])
    res = json.loads((tmp_path / "cl" / "results.json").read_text())
    assert len(res["R"]) == len(tasks.BUILTIN_TASKS)
    assert json.loads((tmp_path / "cl" / "config.json").read_text())["block_size"] == need


def test_settings_that_make_a_method_a_no_op_are_refused(base, tmp_path):
    """56 train records at batch 4 are 14 batches; a 10% buffer (6 records) is 2 replay batches, so
    by default a replay step comes every 14 // 2 = 7 steps: with 6 steps per task der would never
    replay, i.e. equal seqft."""
    for method in [m for m, spec in continual.METHODS.items() if spec.replay_steps]:
        with pytest.raises(
            ConfigError,
            match=f"--method={method} would take no replay step on task 2 \\(first\\): "
            "its replay cycle is 7 micro-batches, more than the 6 of a task "
            "\\(--iters_per_task=6 x --grad_accum=1\\)",
        ):
            train.main(
                continual_args(base, tmp_path / method, f"--method={method}", "--replay_cycle=0")
            )
        assert not (tmp_path / method / "ckpt.pt").exists()
    one_line_error(
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                *continual_args(base, tmp_path / "cut", "--method=der", "--replay_cycle=9"),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        ),
        "replay cycle is 9 micro-batches",
    )


# --------------------------------------------------------------------------------------------------
# the replay micro-batch inside the optimizer step, and the gradient-balance readout


def bare_run(method, grad_accum, replay_cycle, balance_interval=0, grad_clip=0.05):
    """A ContinualRun with only what train_task reads: a tiny model, task 0 finished (its 3-record
    buffer with stored logits), task 1 to train; progress() collects the logged rows instead of
    writing them."""
    torch.manual_seed(0)
    run = object.__new__(continual.ContinualRun)
    run.cfg = SimpleNamespace(
        weight_decay=0.1,
        lr=1e-2,
        beta1=0.9,
        beta2=0.95,
        method=method,
        grad_accum=grad_accum,
        batch_size=2,
        alpha=0.5,
        beta=10.0,
        balance_interval=balance_interval,
        log_interval=1,
        iters_per_task=1,
        grad_clip=grad_clip,
        replay_cycle=replay_cycle,
    )
    run.model = GPT(tiny())
    run.device = "cpu"
    run.autocast = torch.autocast("cpu", enabled=False)
    run.tok = SimpleNamespace(eot=63)
    records = [{"prompt": [1 + k, 2, 3], "answer": [4 + k, 63]} for k in range(6)]
    run.train_sets = [records[:3], records[3:]]
    buffer = [dict(r, task=0) for r in records[:3]]
    for r in buffer:
        x, y = seekr.record_batch(run.model, [r], 63, "cpu")
        r["logp"] = F.log_softmax(run.model(x)[0][y != -1], -1).detach()
    run.state = {"buffers": [buffer], "heads": []}
    run.batch_gen = torch.Generator().manual_seed(1)
    run.replay_gen = torch.Generator().manual_seed(2)
    run.rows = []
    run.progress = lambda t, step, row, dt: run.rows.append(row)
    return run


def test_a_replay_micro_batch_joins_the_step_it_falls_in():
    """grad_accum 2 and a replay micro-batch after every new-task one: one optimizer step holds 2
    new-task and 2 replay micro-batches, each loss divided by 4, one clip (active at 0.05) over the
    sum, one AdamW update."""
    run = bare_run("der", grad_accum=2, replay_cycle=1)
    model = copy.deepcopy(run.model)
    batch_gen, replay_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    pool = run.state["buffers"][0]
    data = run.train_sets[1]
    total = 0
    for _ in range(2):
        idx = torch.randint(len(data), (2,), generator=batch_gen).tolist()
        total = total + model(*seekr.record_batch(model, [data[i] for i in idx], 63, "cpu"))[1] / 4
    for _ in range(2):
        batch = [pool[i] for i in torch.randperm(len(pool), generator=replay_gen)[:2].tolist()]
        x, y = seekr.record_batch(model, batch, 63, "cpu")
        logits, lm = model(x, y)
        ld = seekr.logit_distill(logits, y, torch.cat([r["logp"] for r in batch]))
        total = total + ((1 - 0.5) * lm + 0.5 * ld) / 4  # (1 − α)·LM + α·LD, a quarter of the step
    total.backward()
    assert torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05) > 0.05  # the clip acts
    optimizer = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    optimizer.step()

    steps = []
    plain_step = torch.optim.AdamW.step
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            torch.optim.AdamW,
            "step",
            lambda self, *a, **k: (steps.append(1), plain_step(self, *a, **k))[1],
        )
        run.train_task(1)
    assert len(steps) == 1  # one optimizer step per new-task step, replay included
    for (name, want), got in zip(model.named_parameters(), run.model.parameters()):
        assert torch.allclose(got, want, atol=1e-6), name
    # the readout is off by default
    assert run.rows[0]["replay_ld"] > 0 and "grad_norm" not in run.rows[0]


def test_the_balance_readout_matches_gradients_by_hand():
    run = bare_run("der", grad_accum=1, replay_cycle=1, balance_interval=1)
    model = copy.deepcopy(run.model)
    batch_gen, replay_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    params = list(model.parameters())
    idx = torch.randint(3, (2,), generator=batch_gen).tolist()
    new_task = (
        model(*seekr.record_batch(model, [run.train_sets[1][i] for i in idx], 63, "cpu"))[1] / 2
    )
    pool = run.state["buffers"][0]
    batch = [pool[i] for i in torch.randperm(3, generator=replay_gen)[:2].tolist()]
    x, y = seekr.record_batch(model, batch, 63, "cpu")
    logits, lm = model(x, y)
    parts = {
        "lm": 0.5 * lm / 2,
        "ld": 0.5 * seekr.logit_distill(logits, y, torch.cat([r["logp"] for r in batch])) / 2,
    }
    grads = {
        k: torch.autograd.grad(v, params, retain_graph=True, allow_unused=True)
        for k, v in parts.items()
    }
    total = torch.autograd.grad(new_task + parts["lm"] + parts["ld"], params, allow_unused=True)
    flat = lambda gs: torch.cat([g.flatten() for g in gs if g is not None])
    g = flat(total)

    run.train_task(1)
    row = run.rows[0]
    assert row["grad_norm"] == pytest.approx(g.norm().item(), rel=1e-5)
    for k in ("lm", "ld"):
        assert row[f"grad_{k}"] == pytest.approx(flat(grads[k]).norm().item(), rel=1e-5)
        assert row[f"share_{k}"] == pytest.approx((flat(grads[k]) @ g / (g @ g)).item(), rel=1e-4)
    assert 0 < row["share_lm"] + row["share_ld"] < 1  # the new-task micro-batch holds the rest


def test_a_dominant_replay_part_is_named(capsys):
    assert (
        seekr.dominant_part({"grad_norm": 5.0, "grad_lm": 1.0, "grad_ld": 2.0, "grad_ad": 45.0})
        == "ad"
    )
    assert (
        seekr.dominant_part({"grad_norm": 5.0, "grad_lm": 1.0, "grad_ld": 2.0, "grad_ad": 30.0})
        is None
    )
    assert seekr.dominant_part({"grad_norm": 5.0, "grad_lm": 1.0}) is None
    run = bare_run("der", grad_accum=1, replay_cycle=1)
    row = {"grad_lm": 1.0, "grad_ld": 50.0, "share_ld": 0.9}
    assert run.warn_balance(0, 3, row)
    # α = 0.5: unweighted |∇LM| = 1 / 0.5 = 2, |∇LD| = 50 / 0.5 = 100; α·100 = (1 − α)·2 at 2 / 102
    assert "to balance it, pass --alpha=0.0196" in capsys.readouterr().out


def test_the_balancing_flag_evens_the_dominant_part_by_hand():
    """β·AD at 80 against LM 1, LD 2 with β = 100: β·2/80 = 2.5 brings it to LD's size; α·LD at 50
    against (1 − α)·LM at 1, α = 0.5: the α at which both are equal, 2/102."""
    row = {"grad_lm": 1.0, "grad_ld": 2.0, "grad_ad": 80.0}
    assert seekr.balancing_flag("ad", row, alpha=0.5, beta=100.0) == "--beta=2.5"
    row = {"grad_lm": 1.0, "grad_ld": 50.0}
    flag = seekr.balancing_flag("ld", row, alpha=0.5, beta=100.0)
    alpha = float(flag.removeprefix("--alpha="))
    assert flag == "--alpha=0.0196"
    assert alpha * 50.0 / 0.5 == pytest.approx((1 - alpha) * 1.0 / 0.5, rel=1e-2)  # balanced


def test_the_default_replay_cycle_draws_every_buffered_record_five_times_a_task():
    """The defaults (docs/seekr.md, "Defaults"): 200 steps of 16 records a task, 1% of each task's
    2,000 train records kept, a replay micro-batch after every 6 new-task ones: on the sixth task
    200 // 6 = 33 replay micro-batches draw 528 records from the 100 buffered, 5.28 draws each.
    The official rule (--replay_cycle=0): 125 task batches // 7 buffer batches = 17, 176 draws,
    1.76 each."""
    cfg = continual.ContinualConfig()
    batch = continual.CONTINUAL_DEFAULTS["batch_size"]
    run = object.__new__(continual.ContinualRun)
    run.cfg = SimpleNamespace(batch_size=batch, replay_cycle=cfg.replay_cycle, method="seekr")
    run.train_sets = [[{}] * 2000] * 6
    pool = 5 * max(1, round(cfg.replay * 2000))
    draws = cfg.iters_per_task // run.replay_cycle(5, pool) * batch
    assert (pool, run.replay_cycle(5, pool), draws) == (100, 6, 528)
    assert draws / pool >= 5
    run.cfg.replay_cycle = 0
    assert cfg.iters_per_task // run.replay_cycle(5, pool) * batch == 176


def test_a_continual_run_with_only_init_from_and_method_reaches_its_end(tmp_path):
    """The defaults alone (lr, replay cycle, β, 200 steps a task, the six builtin tasks) run to
    results.json from a tiny base whose block holds the builtin records."""
    base = tmp_path / "base"
    train.main(
        [
            "--preset=tiny",
            "--block_size=128",
            f"--data_dir={tmp_path / 'data'}",
            f"--out_dir={base}",
            "--max_iters=10",
            "--sample_tokens=0",
            "--device=cpu",
        ]
    )
    args = ["--mode=continual", f"--init_from={base}", "--method=seekr"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-500:]
    results = json.loads((tmp_path / "out" / "continual" / "results.json").read_text())
    assert len(results["R"]) == 6 and all(len(row) == 6 for row in results["R"])
