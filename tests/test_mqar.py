"""Multi-query associative recall (Zoology, arXiv 2312.04927): the generator against a plain loop
over its layout, the loss on the answers only, seeds and DDP slices, recall accuracy of scripted
models, the attention-on-the-answer share on hand-built maps, and train.py / eval.py --mode=recall
end to end."""

import dataclasses
import json
import re
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import one_line_error, tiny

import eval as evaluate
import plots
import train
from data import MQAR, DataError, answer_accuracy, load_dataset, mqar_task
from model import ATTENTIONS, GPT, model_config
from plumbing import ConfigError, read_log, save_atomic

ROOT = Path(__file__).resolve().parent.parent


def batch(pairs=6, keys=20, B=16, T=40, seed=0, rows=None):
    return MQAR(pairs, keys).batch(B, T, torch.Generator().manual_seed(seed), rows)


# --------------------------------------------------------------------------------------------------
# the generator


@pytest.mark.parametrize(
    "T", [24, 25, 40]
)  # 24: exactly 4N, every query slot taken; 25: an odd query region
def test_every_answer_is_the_value_paired_with_its_key_earlier(T):
    N, K = 6, 20
    x, y = batch(N, K, T=T)
    assert x.shape == y.shape == (16, T) and x.dtype == y.dtype == torch.int64
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        keys, values = row_x[0 : 2 * N : 2], row_x[1 : 2 * N : 2]
        assert len(set(keys)) == N and all(1 <= k <= K for k in keys)
        assert len(set(values)) == N and all(K + 1 <= v <= 2 * K for v in values)
        answers = [t for t in range(T) if row_y[t] != -1]
        assert len(answers) == N
        for t in answers:
            assert t >= 2 * N and (t - 2 * N) % 2 == 0  # an even offset of the query region
            paired = [row_x[2 * j + 1] for j in range(N) if row_x[2 * j] == row_x[t]]
            # its key appears once in the context, and the target is its value
            assert paired == [row_y[t]]
        assert sorted(row_x[t] for t in answers) == sorted(keys)  # each key queried exactly once
        # filler, the value not written
        assert all(row_x[t] == 0 for t in range(2 * N, T) if t not in answers)
        assert all(row_y[t] == -1 for t in range(2 * N))  # no answer inside the context


def test_queries_come_in_random_order_at_random_offsets():
    x, y = batch(pairs=4, keys=30, B=64, T=64)
    order = {tuple(row[row_y != -1].tolist()) for row, row_y in zip(x, y)}
    places = {tuple((row_y != -1).nonzero().flatten().tolist()) for row_y in y}
    assert len(order) > 32 and len(places) > 32


def test_seeds_decide_the_batch_and_ddp_slices_rebuild_it():
    x, y = batch(seed=3)
    assert torch.equal(x, batch(seed=3)[0]) and torch.equal(y, batch(seed=3)[1])
    assert not torch.equal(x, batch(seed=4)[0])
    # two ranks, one shared generator
    halves = [batch(seed=3, rows=slice(0, 8)), batch(seed=3, rows=slice(8, 16))]
    assert torch.equal(torch.cat([h[0] for h in halves]), x) and torch.equal(
        torch.cat([h[1] for h in halves]), y
    )
    task = MQAR(6, 20)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    door = load_dataset(task.name, "bytes", "unused", 40).train  # the training loop's door
    got = door.batch(16, 40, gen_a, slice(8, 16))
    assert torch.equal(got[0], task.batch(16, 40, gen_b)[0][8:16])
    # every rank draws the whole batch: still in step
    assert torch.equal(gen_a.get_state(), gen_b.get_state())


def test_options_defaults_and_one_line_errors():
    assert mqar_task("stdlib") is None
    assert (mqar_task("mqar").pairs, mqar_task("mqar").keys) == (8, 64)
    assert vars(mqar_task("mqar:keys=10,pairs=3")) == {"pairs": 3, "keys": 10}
    assert mqar_task("mqar:pairs=5").name == "mqar:pairs=5,keys=64"
    for spec, words in (
        ("mqar:pairs=0", "pairs=0 must be a whole number >= 1"),
        ("mqar:foo=1", "'foo=1' is not an"),
        ("mqar:pairs", "pairs=N, keys=N"),
        ("mqar:keys=x", "keys=x must be"),
        ("mqar:pairs=9,keys=8", "keys >= pairs"),
    ):
        with pytest.raises(DataError, match=re.escape(words)) as e:
            mqar_task(spec)
        # an example to copy
        assert "\n" not in str(e.value) and "mqar:pairs=8,keys=64" in str(e.value)
    with pytest.raises(DataError, match=r"--block_size >= 4 x pairs = 32 .* --block_size=31"):
        MQAR(8, 64).check(31, 257)
    MQAR(8, 64).check(32, 257)
    with pytest.raises(DataError, match=r"ids 0\.\.258 .* 257 ids; pass keys<=128"):
        MQAR(8, 129).check(64, 257)
    MQAR(8, 128).check(64, 257)


# --------------------------------------------------------------------------------------------------
# the loss and the accuracy count the answers only


def test_loss_is_the_cross_entropy_of_the_answers_alone():
    torch.manual_seed(0)
    model = GPT(tiny(vocab_size=64, block_size=24)).eval()
    x, y = batch(pairs=5, keys=12, B=3, T=24)
    logits, loss = model(x, y)
    naive = []
    for b in range(3):
        for t in range(24):
            if y[b, t] != -1:
                naive.append(-torch.log_softmax(logits[b, t], dim=0)[y[b, t]])
    assert len(naive) == 15
    assert torch.allclose(loss, torch.stack(naive).mean(), atol=1e-6)


class Scripted(nn.Module):
    """A model that answers by rule, not by weights: at each position, `pick(context keys, values,
    token)` -> the id it puts all its logit on. It has GPT's two doors that recall_accuracy uses,
    features and logits."""

    def __init__(self, pairs, vocab, pick):
        super().__init__()
        self.pairs = pairs
        self.vocab = vocab
        self.pick = pick
        self.logits = nn.Identity()

    def features(self, idx):
        out = torch.zeros(*idx.shape, self.vocab)
        for b, row in enumerate(idx.tolist()):
            keys, values = row[0 : 2 * self.pairs : 2], row[1 : 2 * self.pairs : 2]
            for t, token in enumerate(row):
                out[b, t, self.pick(keys, values, token)] = 1.0
        return out


def look_up(keys, values, token):
    return values[keys.index(token)] if token in keys else 0


def test_recall_accuracy_of_scripted_models():
    N, K = 8, 40
    task = MQAR(N, K)
    rng = torch.Generator().manual_seed(0)
    # in context, blind
    guess = lambda keys, values, token: values[torch.randint(N, (1,), generator=rng).item()]
    score = lambda pick, batches=2: evaluate.recall_accuracy(
        Scripted(N, 2 * K + 1, pick), task, 48, batches, 16, 7, "cpu", nullcontext()
    )
    assert score(look_up) == 1.0
    # one fixed value
    assert score(lambda keys, values, token: K + 1 if values[0] != K + 1 else K + 2) < 1 / (2 * N)
    assert score(lambda keys, values, token: 0) == 0.0  # the filler is never an answer
    assert abs(score(guess, batches=20) - task.chance) < 0.03  # 2560 answers: std of the mean 0.007


def test_answer_accuracy_counts_only_the_targets():
    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 1] = logits[0, 1, 2] = logits[0, 2, 3] = logits[0, 3, 4] = 1.0  # argmax 1, 2, 3, 4
    assert answer_accuracy(logits, torch.tensor([[1, -1, 0, -1]])).item() == 0.5
    assert answer_accuracy(logits, torch.tensor([[-1, 2, 3, 4]])).item() == 1.0


# --------------------------------------------------------------------------------------------------
# the attention on the answer


def test_answer_share_on_hand_built_maps():
    N, T = 3, 16
    x, y = batch(pairs=N, keys=9, B=2, T=T, seed=1)
    att = torch.zeros(2, 3, T, T)
    b, i = (y != -1).nonzero(as_tuple=True)
    for q in range(len(b)):
        key_at = [j for j in range(0, 2 * N, 2) if x[b[q], j] == x[b[q], i[q]]][0]
        att[b[q], 0, i[q], key_at + 1] = 1.0  # head 0: all on the value
        # head 2: signed, as diff
        att[b[q], 2, i[q], key_at + 1], att[b[q], 2, i[q], 0 if key_at else 2] = (
            0.5,
            -0.5,
        )
    for t in range(T):
        att[:, 1, t, : t + 1] = 1 / (t + 1)  # head 1: uniform over the causal row
    share = evaluate.answer_share(att, x, y, N)
    uniform = sum(2 / (t + 1) for t in i.tolist()) / len(i)
    assert torch.allclose(share, torch.tensor([1.0, uniform, 0.5]))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_answer_shares_has_a_share_per_layer_and_head(attention):
    heads = 1 if ATTENTIONS[attention].paired_heads else 2  # diff: one differential head of two
    torch.manual_seed(0)
    model = GPT(tiny(vocab_size=64, block_size=24, n_head=2, attention=attention)).eval()
    share = evaluate.answer_shares(model, MQAR(4, 12), 24, 3, 0, "cpu")
    assert share.shape == (2, heads) and ((share > 0) & (share <= 1)).all()


# --------------------------------------------------------------------------------------------------
# train.py and eval.py --mode=recall


def script(*args):
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def a_checkpoint(path, **config):
    """A freshly initialised run of the tiny preset on mqar, saved as train.py saves one (no
    training)."""
    cfg = train.Config(
        **{**train.PRESETS["tiny"], "dataset": "mqar", "out_dir": str(path), **config}
    )
    model = GPT(model_config(cfg, 257))
    Path(path).mkdir(parents=True)
    save_atomic(
        {
            "model": model.state_dict(),
            "model_config": dataclasses.asdict(model.config),
            "config": dataclasses.asdict(cfg),
            "iter": 0,
        },
        Path(path) / "ckpt.pt",
    )
    return Path(path)


@pytest.fixture(scope="module")
def mqar_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mqar") / "run"
    proc = script(
        ROOT / "train.py",
        "--preset=tiny",
        "--dataset=mqar:pairs=4,keys=16",
        "--max_iters=6",
        "--eval_interval=3",
        f"--out_dir={out}",
        "--device=cpu",
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_train_logs_recall_accuracy_and_no_bits_per_byte(mqar_run):
    out, stdout = mqar_run
    assert "| data mqar:pairs=4,keys=16 (generated) | chance 0.250" in stdout.splitlines()[0]
    assert re.search(
        r"^eval 3: val loss \d+\.\d{4}, recall accuracy \d\.\d{3} \(chance 0\.250\)$", stdout, re.M
    )
    assert re.search(
        r"^budget 6 finished: val loss \d+\.\d{4}, recall accuracy \d\.\d{3} \(chance 0\.250\), "
        r"3,072 tokens of compute$",
        stdout,
        re.M,
    )
    assert "sample:" not in stdout and "bits/byte" not in stdout
    evals = [r for r in read_log(out) if "val_loss" in r]
    assert [r["iter"] for r in evals] == [0, 3, 6] and all(0 <= r["val_acc"] <= 1 for r in evals)
    assert not any("val_bpb" in r for r in evals) and "budget" in evals[-1]
    assert (out / "loss.png").exists() and not (ROOT / "data" / "mqar-bytes").exists()


def test_eval_recall_prints_one_line_and_writes_the_json(mqar_run, tmp_path):
    out, _ = mqar_run
    proc = script(
        ROOT / "eval.py", f"--ckpt={out}", "--mode=recall", "--batches=2", f"--out={tmp_path}"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"recall accuracy \d\.\d{3} \(chance 0\.250\)", lines[0])
    assert len(lines) == 1  # the one line; the answer shares go to recall.json
    res = json.loads((tmp_path / "recall.json").read_text())
    run = res["runs"][0]
    assert [(p["pairs"], p["length"]) for p in run["points"]] == [(4, 64)] and run[
        "type"
    ] == "standard/rope"
    assert (
        len(run["answer_share"]) == 2
        and len(run["answer_share"][0]) == 2
        and (tmp_path / "recall.png").exists()
    )
    assert f"{run['points'][0]['accuracy']:.3f}" in lines[0]


def test_eval_recall_grid_over_checkpoints(tmp_path, capsys):
    runs = [
        a_checkpoint(tmp_path / name, attention=attention, seed=seed)
        for name, attention, seed in (
            ("s1", "standard", 1),
            ("s2", "standard", 2),
            ("d1", "diff", 1),
        )
    ]
    evaluate.main(
        [
            f"--ckpt={','.join(map(str, runs))}",
            "--mode=recall",
            "--pairs=2,4",
            "--lengths=32,64,128",
            "--batches=1",
            "--batch_size=4",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("s1 pairs 2 length 32: recall accuracy ") and lines[0].endswith(
        "(chance 0.500)"
    )
    assert (
        sum("recall accuracy" in line for line in lines) == 3 * 6
        and "d1: attention on the answer pair" in lines[-2]
    )
    res = json.loads((tmp_path / "s1" / "recall.json").read_text())
    assert [r["type"] for r in res["runs"]] == ["standard/rope", "standard/rope", "diff/rope"]
    assert len(res["runs"][2]["answer_share"][0]) == 1  # diff: one differential head of two
    # at the training pairs: none
    accs, chance = plots.recall_curve(res, "standard/rope", "length", "pairs")
    assert accs == {} and chance == {}
    # at the training length 64
    accs, chance = plots.recall_curve(res, "standard/rope", "pairs", "length")
    assert sorted(accs) == [2, 4] and len(accs[4]) == 2 and chance == {2: 0.5, 4: 0.25}
    assert (tmp_path / "s1" / "recall.png").exists()


def test_recall_refusals_are_one_line(tmp_path):
    run = a_checkpoint(tmp_path / "run")
    for flags, words in (
        (["--pairs=17"], "needs sequences of >= 4 x pairs = 68 tokens"),
        (["--pairs=4", "--lengths=8"], "length 8 is asked for"),
        (["--pairs=65", "--lengths=512"], "cannot be drawn from the 64 keys"),
    ):
        with pytest.raises(ConfigError, match=re.escape(words)):
            evaluate.main([f"--ckpt={run}", "--mode=recall", *flags])
    learned = a_checkpoint(tmp_path / "learned", pos="learned")
    with pytest.raises(ConfigError, match="learned positions, which stop at block_size=64"):
        evaluate.main([f"--ckpt={learned}", "--mode=recall", "--lengths=128"])
    text = a_checkpoint(tmp_path / "text", dataset="stdlib")
    with pytest.raises(ConfigError, match="trained on --dataset=stdlib, not mqar"):
        evaluate.main([f"--ckpt={text}", "--mode=recall"])
    assert not (tmp_path / "run" / "recall.json").exists()


@pytest.mark.parametrize(
    "spec, words",
    [
        ("mqar:pairs=0", "pairs=0 must be a whole number >= 1"),
        ("mqar:foo=1", "'foo=1' is not an mqar option"),
        ("mqar:pairs=17", "--block_size >= 4 x pairs = 68"),
        ("mqar:keys=200", "pass keys<=128"),
    ],
)
def test_bad_mqar_flags_are_refused_before_anything_runs(spec, words, tmp_path):
    with pytest.raises(DataError, match=re.escape(words)) as e:
        train.build_config(["--preset=tiny", f"--dataset={spec}", f"--out_dir={tmp_path / 'run'}"])
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


def test_bad_mqar_flag_from_the_script_is_one_line_exit_2(tmp_path):
    one_line_error(
        script(
            ROOT / "train.py",
            "--preset=tiny",
            "--dataset=mqar:pairs=20",
            f"--out_dir={tmp_path / 'run'}",
        ),
        "mqar:pairs=20",
        "--block_size=64",
        "--block_size=80",
    )


def test_a_text_loss_of_an_mqar_model_is_refused_in_one_line(tmp_path):
    run = a_checkpoint(tmp_path / "run")
    with pytest.raises(
        DataError, match="generated batch by batch, not a text corpus .* --mode=recall"
    ):
        evaluate.main([f"--ckpt={run}", "--mode=loss", f"--data_dir={tmp_path / 'data'}"])
