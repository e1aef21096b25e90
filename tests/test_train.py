"""train.py and eval.py end to end (subprocesses, tiny preset, a small text corpus): flags, one-line
errors, exact resume after SIGKILL, Ctrl-C, --init_from, and DDP on CPU matching one process."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import one_line_error

from plumbing import ConfigError, flag_fields, parse_flags, read_log
from train import CHOICES, Config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """~150 KB of real text (stdlib sources) and a data folder private to this module."""
    import argparse
    import dataclasses
    import difflib
    import json as js

    tmp = tmp_path_factory.mktemp("corpus")
    text = "".join(
        Path(m.__file__).read_text() for m in (argparse, dataclasses, difflib, js.decoder)
    )
    (tmp / "corpus.txt").write_text(text)
    return tmp


def run(args, cwd, timeout=600, env=None, **kw):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        **kw,
    )


def train_args(corpus, out, *extra):
    return [
        str(ROOT / "train.py"),
        "--preset=tiny",
        f"--dataset=text:{corpus / 'corpus.txt'}",
        f"--data_dir={corpus / 'data'}",
        f"--out_dir={out}",
        "--sample_tokens=0",
        *extra,
    ]


def rows_of(out):
    return read_log(out)


def losses(out):
    return {r["iter"]: r["loss"] for r in read_log(out) if "loss" in r and "branch" not in r}


def test_flag_parsing():
    assert parse_flags(
        ["--max_iters=7", "--lr=3e-4", "--resume", "--bias=false"], Config, CHOICES
    ) == dict(max_iters=7, lr=3e-4, resume=True, bias=False)
    with pytest.raises(ConfigError, match="did you mean --max_iters"):
        parse_flags(["--max_iter=5"], Config, CHOICES)
    with pytest.raises(ConfigError, match="not an integer"):
        parse_flags(["--batch_size=lots"], Config, CHOICES)
    unknown = "no-such-schedule"  # a name no registry entry could take
    with pytest.raises(ConfigError, match=f"--schedule={unknown} is not one of "):
        parse_flags([f"--schedule={unknown}"], Config, CHOICES)
    with pytest.raises(ConfigError, match="did you mean tiny"):
        parse_flags(["--preset=tiyn"], Config, CHOICES)
    assert set(parse_flags(["--n_layer=3"], Config, CHOICES)) <= set(Config.__dataclass_fields__)
    for derived in Config.not_flags:  # vocab_size comes from the tokenizer: no flag sets it
        with pytest.raises(ConfigError, match=f"unknown flag --{derived}"):
            parse_flags([f"--{derived}=100"], Config, CHOICES)


def test_help_lists_every_flag_with_default_and_comment(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_flags(["--max_iters=5", "--help"], Config, CHOICES)
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert all(f"--{f.name}=" in printed for f in flag_fields(Config))
    assert not any(f"--{name}=" in printed for name in Config.not_flags)
    assert "--grad_accum=1  # micro-steps per optimizer step" in printed
    for key, allowed in CHOICES.items():  # the choices, from their registries
        assert ", ".join(str(a) for a in allowed if a != "") in printed, key


def test_train_eval_sample_and_bad_input(corpus, tmp_path):
    out = tmp_path / "run"
    proc = run(train_args(corpus, out, "--max_iters=20"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("config.json", "log.jsonl", "ckpt.pt", "loss.png"):
        assert (out / name).exists()
    rows = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert rows[0]["iter"] == 0 and {"loss", "lr", "val_loss", "val_bpb"} <= set(rows[0])
    assert rows[-1]["iter"] == 20 and rows[-1]["val_loss"] < rows[0]["val_loss"]
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["iter"] == 20 and {"batch", "torch"} <= set(ckpt["rng"][0])

    ev = run([str(ROOT / "eval.py"), f"--ckpt={out}", f"--data_dir={corpus / 'data'}"], tmp_path)
    assert ev.returncode == 0 and "val_loss" in ev.stdout and "bits/byte" in ev.stdout, ev.stderr
    sample = run(
        [
            str(ROOT / "eval.py"),
            f"--ckpt={out}",
            "--mode=sample",
            "--prompt=def ",
            "--max_new_tokens=10",
        ],
        tmp_path,
    )
    assert sample.returncode == 0 and sample.stdout.startswith("def "), sample.stderr

    mtime = (out / "ckpt.pt").stat().st_mtime_ns
    one_line_error(run(train_args(corpus, out), tmp_path), "already holds a checkpoint", "--resume")
    assert (out / "ckpt.pt").stat().st_mtime_ns == mtime  # nothing overwritten
    one_line_error(run(train_args(corpus, out, "--max_itres=3"), tmp_path), "--max_iters")
    one_line_error(run(train_args(corpus, out, "--pos=rotary"), tmp_path), "rope")
    one_line_error(
        run(train_args(corpus, tmp_path / "none", "--resume"), tmp_path), "--resume", "ckpt.pt"
    )
    one_line_error(
        run(train_args(corpus, tmp_path / "other", f"--init_from={out}", "--n_layer=3"), tmp_path),
        "n_layer=2",
        "--n_layer=3",
    )
    one_line_error(
        run(train_args(corpus, tmp_path / "x", "--dataset=text:/no/such/file.txt"), tmp_path),
        "no such file",
    )
    (tmp_path / "empty.txt").write_text("")
    one_line_error(
        run(
            train_args(corpus, tmp_path / "x", f"--dataset=text:{tmp_path / 'empty.txt'}"), tmp_path
        ),
        "empty",
    )
    (tmp_path / "short.txt").write_text("x" * 300)
    one_line_error(
        run(
            train_args(corpus, tmp_path / "x", f"--dataset=text:{tmp_path / 'short.txt'}"), tmp_path
        ),
        "fewer than one block",
        "--block_size",
    )
    one_line_error(
        run([str(ROOT / "eval.py"), f"--ckpt={tmp_path / 'none'}"], tmp_path), "no checkpoint"
    )
    if not torch.cuda.is_available():
        one_line_error(
            run(train_args(corpus, tmp_path / "x", "--device=cuda"), tmp_path), "--device=cpu"
        )


def test_tokenizer_mismatch_and_offline_tiktoken(corpus, tmp_path):
    data = tmp_path / "data"
    args = [
        str(ROOT / "train.py"),
        "--preset=tiny",
        f"--dataset=text:{corpus / 'corpus.txt'}",
        f"--data_dir={data}",
        "--max_iters=1",
        "--sample_tokens=0",
    ]
    assert run(args + [f"--out_dir={tmp_path / 'a'}"], tmp_path).returncode == 0
    meta_path = next(data.glob("*/meta.json"))
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(
        json.dumps({**meta, "tokenizer": "gpt2"})
    )  # as if prepared by another tokenizer
    one_line_error(
        run(args + [f"--out_dir={tmp_path / 'b'}"], tmp_path),
        "prepared with tokenizer 'gpt2'",
        "--tokenizer=gpt2",
    )
    offline = {
        "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty_cache"),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    one_line_error(
        run(args + ["--tokenizer=gpt2", f"--out_dir={tmp_path / 'c'}"], tmp_path, env=offline),
        "TIKTOKEN_CACHE_DIR",
        "--tokenizer=bytes",
    )


def test_learned_positions_refuse_long_eval_and_prompt(corpus, tmp_path):
    out = tmp_path / "learned"
    assert run(train_args(corpus, out, "--pos=learned", "--max_iters=2"), tmp_path).returncode == 0
    one_line_error(
        run(
            [
                str(ROOT / "eval.py"),
                f"--ckpt={out}",
                f"--data_dir={corpus / 'data'}",
                "--eval_len=128",
            ],
            tmp_path,
        ),
        "--eval_len=128",
        "block_size=64",
    )
    one_line_error(
        run(
            [str(ROOT / "eval.py"), f"--ckpt={out}", "--mode=sample", "--prompt=" + "x" * 100],
            tmp_path,
        ),
        "prompt",
        "block_size=64",
    )


def kill_when(args, cwd, out, condition, sig=signal.SIGKILL, timeout=300):
    """Start train.py, send sig once a logged training row satisfies condition -> the process."""
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        rows = rows_of(out) if (out / "log.jsonl").exists() else []
        if any("loss" in r and condition(r) for r in rows):
            break
        time.sleep(0.005)
    proc.send_signal(sig)
    return proc


RESUME_ARGS = (
    "--max_iters=60",
    "--ckpt_interval=10",
    "--log_interval=1",
    "--eval_interval=10",
    "--dropout=0.1",
    "--batch_size=32",
)


@pytest.mark.parametrize(
    "data", [(), ("--dataset=mqar",)], ids=["text", "mqar"]
)  # mqar: the generator's state
def test_resume_after_sigkill_is_bit_exact(corpus, tmp_path, data):
    ref = tmp_path / "ref"
    assert run(train_args(corpus, ref, *RESUME_ARGS, *data), tmp_path).returncode == 0
    out = tmp_path / "killed"
    kill_when(
        train_args(corpus, out, *RESUME_ARGS, *data), tmp_path, out, lambda row: row["iter"] >= 15
    ).wait()
    killed_at = max(losses(out))
    assert 15 <= killed_at < 59, "the run must die between a checkpoint and its end"
    assert torch.load(out / "ckpt.pt", weights_only=True)["iter"] >= 10
    resumed = run(train_args(corpus, out, "--resume", *data), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert losses(out) == losses(ref)  # every iteration, bit for bit (JSON keeps the float's repr)


def test_ctrl_c_saves_and_resumes(corpus, tmp_path):
    out = tmp_path / "interrupted"
    proc = kill_when(
        train_args(corpus, out, *RESUME_ARGS),
        tmp_path,
        out,
        lambda row: row["iter"] >= 5,
        signal.SIGINT,
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert "interrupted" in stdout and "--resume" in stdout
    saved = torch.load(out / "ckpt.pt", weights_only=True)["iter"]
    assert 5 < saved < 60
    assert run(train_args(corpus, out, "--resume"), tmp_path).returncode == 0
    assert max(losses(out)) == 59


def test_init_from_starts_at_the_source_weights(corpus, tmp_path):
    src = tmp_path / "src"
    assert run(train_args(corpus, src, "--max_iters=10", "--n_layer=1"), tmp_path).returncode == 0
    dst = tmp_path / "dst"
    proc = run(
        train_args(corpus, dst, f"--init_from={src}", "--max_iters=2", "--pos=auto"), tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    final_src = [json.loads(l) for l in (src / "log.jsonl").read_text().splitlines()][-1][
        "val_loss"
    ]
    first_dst = json.loads((dst / "log.jsonl").read_text().splitlines()[0])["val_loss"]
    assert first_dst == pytest.approx(final_src, rel=1e-6)  # same weights, same eval windows
    assert (
        json.loads((dst / "config.json").read_text())["n_layer"] == 1
    )  # the shape came from the source


def test_ddp_two_cpu_processes_match_one_process(corpus, tmp_path):
    args = ("--max_iters=6", "--log_interval=1", "--grad_accum=2", "--eval_interval=100")
    one = run(
        train_args(corpus, tmp_path / "one", *args), tmp_path, env={"OMP_NUM_THREADS": "1"}
    )  # as each rank
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            *train_args(corpus, tmp_path / "two", *args),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    context = f"one process {a}\ntwo processes {b}\n{two.stdout[-2000:]}\n{two.stderr[-2000:]}"
    assert sorted(a) == sorted(b) == list(range(6)), context
    for it in a:
        assert b[it] == pytest.approx(a[it], rel=1e-5, abs=1e-6), context


SCHED = ("--max_iters=60", "--log_interval=1", "--eval_interval=20", "--batch_size=16")


def test_wsd_branches_leave_the_main_branch_bit_identical(corpus, tmp_path):
    plain, branched = tmp_path / "plain", tmp_path / "branched"
    assert run(train_args(corpus, plain, "--schedule=wsd", *SCHED), tmp_path).returncode == 0
    proc = run(
        train_args(corpus, branched, "--schedule=wsd", "--budgets=20,40,60", *SCHED), tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    main = {r["iter"]: r["loss"] for r in rows_of(branched) if "loss" in r and "branch" not in r}
    assert main == losses(plain)  # every main-branch step, bit for bit
    budgets = [r for r in rows_of(branched) if "budget" in r]
    assert [r["budget"] for r in budgets] == [20, 40, 60] and [
        r.get("branch") for r in budgets
    ] == [20, 40, None]
    tokens_per_iter = 16 * 64  # batch 16 x block 64
    assert [r["tokens"] for r in budgets] == [
        20 * tokens_per_iter,
        (40 + 4) * tokens_per_iter,
        (60 + 4 + 8) * tokens_per_iter,
    ]  # branches of 0.2·20 and 0.2·40 steps
    assert budgets[-1]["val_loss"] == [r for r in rows_of(plain) if "val_loss" in r][-1]["val_loss"]
    for b in (20, 40, 60):
        assert torch.load(branched / f"budget_{b}.pt", weights_only=True)["iter"] == b
    ev = run(
        [
            str(ROOT / "eval.py"),
            f"--ckpt={branched / 'budget_20.pt'}",
            f"--data_dir={corpus / 'data'}",
        ],
        tmp_path,
    )
    assert (
        ev.returncode == 0 and "val_loss" in ev.stdout
    )  # a budget checkpoint is a normal checkpoint


@pytest.mark.parametrize("schedule", ["wsd", "wsd-s"])
def test_resume_inside_a_decay_is_bit_exact(corpus, tmp_path, schedule):
    args = (
        "--schedule=" + schedule,
        "--budgets=30,60",
        "--decay_frac=0.5",
        "--ckpt_interval=1",
        *SCHED,
    )
    ref = tmp_path / "ref"
    assert run(train_args(corpus, ref, *args), tmp_path).returncode == 0
    out = tmp_path / "killed"
    # wsd: the branch of budget 30 runs steps 15..29; wsd-s: the first cycle decays over 15..29
    kill_when(train_args(corpus, out, *args), tmp_path, out, lambda row: row["iter"] >= 18).wait()
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert 15 < ckpt["iter"] < 30 and (
        ckpt["branch"] == 30 if schedule == "wsd" else ckpt["branch"] is None
    )
    assert run(train_args(corpus, out, "--resume"), tmp_path).returncode == 0
    strip = lambda rows: [
        {k: v for k, v in r.items() if k not in ("ms", "tokens_per_sec")} for r in rows
    ]
    assert strip(rows_of(out)) == strip(rows_of(ref))  # every row, branch and budget rows included
    assert schedule == "wsd-s" or (out / "budget_30.pt").exists()


def test_compare_schedules_table_and_figure(corpus, tmp_path):
    for schedule in ("wsd-s", "cyclic"):
        assert (
            run(
                train_args(
                    corpus,
                    tmp_path / schedule,
                    f"--schedule={schedule}",
                    "--budgets=20,40,60",
                    *SCHED,
                ),
                tmp_path,
            ).returncode
            == 0
        )
    proc = run(
        [
            str(ROOT / "eval.py"),
            "--mode=schedules",
            f"--run={tmp_path / 'wsd-s'}",
            f"--run={tmp_path / 'cyclic'}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "wsd-s" / "schedules_compare.png").exists()
    lines = [l for l in proc.stdout.splitlines() if "(wsd-s sqrt)" in l or "(cyclic)" in l]
    assert len(lines) == 6  # three finished models per run
    named = tmp_path / "figs" / "wsd.png"  # --out may name the .png, as for every other comparison
    assert (
        run(
            [
                str(ROOT / "eval.py"),
                "--mode=schedules",
                f"--run={tmp_path / 'wsd-s'}",
                f"--out={named}",
            ],
            tmp_path,
        ).returncode
        == 0
        and named.stat().st_size > 10_000
    )
    one_line_error(
        run(
            train_args(corpus, tmp_path / "bad", "--schedule=cosine", "--budgets=20,60", *SCHED),
            tmp_path,
        ),
        "one cosine run per budget",
    )


# a run's n-th optimizer step of this session leaves every weight nan: a divergence on cue
NAN_AFTER = """
import runpy, sys, torch
real = torch.optim.AdamW.step
steps = []
def step(self, *args, **kw):
    out = real(self, *args, **kw)
    steps.append(1)
    if len(steps) == {n}:
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(float("nan"))
    return out
torch.optim.AdamW.step = step
sys.argv = sys.argv[1:]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])  # as `python train.py` would
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize(
    "seen_at, flags",
    [
        ("the loss is nan at iter 15", ("--log_interval=5", "--ckpt_interval=100")),
        ("the weights hold nan or inf at iter 15", ("--log_interval=100", "--ckpt_interval=15")),
    ],
    ids=["log step", "save"],
)
def test_a_diverging_run_stops_in_one_line_and_keeps_the_last_checkpoint(
    corpus, tmp_path, seen_at, flags
):
    """Weights turn nan after iter 12: the next log line (or, before it, the next save) stops the
    run; ckpt.pt stays the good one of iter 10, no nan row is logged, no figure is drawn."""
    out = tmp_path / "run"
    assert run(train_args(corpus, out, "--max_iters=10"), tmp_path).returncode == 0
    good = (out / "ckpt.pt").read_bytes()
    figure = (out / "loss.png").read_bytes()
    args = train_args(corpus, out, "--resume", "--max_iters=40", "--eval_interval=1000", *flags)
    proc = run(["-c", NAN_AFTER.format(n=3), *args], tmp_path)
    one_line_error(proc, f"training diverged: {seen_at}", f"{out}/ckpt.pt keeps", "--lr")
    assert (out / "ckpt.pt").read_bytes() == good
    assert all(math.isfinite(r["loss"]) for r in read_log(out) if "loss" in r)
    assert (out / "loss.png").read_bytes() == figure  # not redrawn from a diverged run
