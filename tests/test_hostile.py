"""Bad input from a user, case by case: every one ends as one ConfigError / DataError line that
names the flag and what is allowed, before anything touches the disk. In-process where the rule
lives in a config (fast); the scripts' own one-line printing (cli) is checked in subprocesses at
the end, and by test_train.py / test_seekr.py."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import one_line_error

import bench
import continual
import eval as evaluate
import plots
import plumbing
import schedules
import train
from plumbing import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent

TRAIN = [  # (flags, word the error must contain)
    (["--lr=-1"], "--lr=-1.0 must be > 0"),
    (["--lr=0"], "--lr=0.0 must be > 0"),
    (["--min_lr=-1"], "--min_lr=-1.0 must be >= 0"),
    (["--lr=0.1", "--min_lr=1"], "above --lr"),
    (["--batch_size=0"], "--batch_size=0 must be >= 1"),
    (["--batch_size=-4"], "--batch_size=-4"),
    (["--grad_accum=0"], "--grad_accum=0 must be >= 1"),
    (["--n_layer=0"], "--n_layer=0 must be >= 1"),
    (["--n_head=0"], "--n_head=0 must be >= 1"),
    (["--n_head=-2"], "--n_head=-2"),
    (["--n_embd=0"], "--n_embd=0 must be >= 1"),
    (["--block_size=0"], "--block_size=0 must be >= 2"),
    (["--block_size=1"], "--block_size=1"),
    (["--max_iters=0"], "--max_iters=0 must be >= 1"),
    (["--eval_interval=0"], "--eval_interval=0 must be >= 1"),
    (["--eval_iters=0"], "--eval_iters=0"),
    (["--log_interval=0"], "--log_interval=0"),
    (["--ckpt_interval=-1"], "--ckpt_interval=-1 must be >= 0"),
    (["--dropout=1"], "--dropout=1.0 must lie in [0, 1)"),
    (["--dropout=-0.1"], "--dropout=-0.1 must lie in [0, 1)"),
    (["--beta1=1"], "--beta1=1.0 must lie in [0, 1)"),
    (["--beta2=-0.5"], "--beta2=-0.5"),
    (["--weight_decay=-1"], "--weight_decay=-1.0 must be >= 0"),
    (["--grad_clip=-1"], "--grad_clip=-1.0"),
    (["--warmup_iters=-1"], "--warmup_iters=-1"),
    (["--rewarmup_iters=-2"], "--rewarmup_iters=-2"),
    (["--decay_frac=1.5"], "--decay_frac=1.5 must lie in [0, 1]"),
    (["--sample_tokens=-1"], "--sample_tokens=-1"),
    (["--seed=-1"], "--seed=-1 must be >= 0"),
    (["--attention=dape", "--dape_channels=0"], "--dape_channels=0"),
    (["--attention=dape", "--dape_kernel=2"], "must be odd"),
    (["--attention=difff"], "did you mean diff"),
    (["--attention=diff", "--n_head=3", "--n_embd=48"], "--n_head must be even"),
    (["--n_embd=30", "--n_head=4"], "not divisible"),
    (["--n_embd=100", "--n_head=4"], "even head size"),
    (["--attention=dape", "--pos=rope"], "--attention=dape takes --pos=kerple"),
    (["--budgets=a,b"], "comma-separated"),
    (["--budgets=100,50"], "strictly increasing"),
    (["--schedule=cosine", "--max_iters=60", "--budgets=20,60"], "one cosine run per budget"),
    (["--preset=xx"], f"not one of {', '.join(train.PRESETS)}"),
    (["--max_iters=ten"], "not an integer"),
    (["--lr=fast"], "a number"),
    (["--bias=maybe"], "not a boolean"),
    (["--max_iter=5"], "did you mean --max_iters"),
    (["--decay_of=run"], ", ".join(schedules.DECAY_OF)),
    (["--diff_subln=maybe"], "not a boolean"),
    (
        [
            "--schedule=wsd-s",
            "--max_iters=60",
            "--budgets=40,60",
            "--decay_of=budget",
            "--decay_frac=0.5",
        ],
        "does not fit in its cycle",
    ),
    (["stray"], "flags look like --key=value"),
]
CONTINUAL = [
    (["--alpha=2"], "--alpha=2.0 must lie in [0, 1]"),
    (["--alpha=-1"], "--alpha=-1.0"),
    (["--beta=-1"], "--beta=-1.0 must be >= 0"),
    (["--method=der", "--replay=0"], "--replay=0.0 must be a fraction"),
    (["--replay=1.5"], "--replay=1.5 must lie in [0, 1]"),
    (["--iters_per_task=0"], "--iters_per_task=0 must be >= 1"),
    (["--replay_cycle=-1"], "--replay_cycle=-1"),
    (["--seekr_head_budget=-1"], "--seekr_head_budget=-1 must be >= 0"),
    (["--seekr_layer_budget=-3"], "--seekr_layer_budget=-3"),
    (["--seekr_query_budget=-1"], "--seekr_query_budget"),
    (["--eval_records=-1"], "--eval_records=-1"),
    (["--dtype=float16"], "float32 or bfloat16"),
    (["--method=ewc"], ", ".join(continual.METHODS)),
    (["--balance_interval=-1"], "--balance_interval=-1"),
]
EVAL = [
    (["--eval_len=-1"], "--eval_len=-1 must be >= 0"),
    (["--max_tokens=0"], "--max_tokens=0"),
    (["--batch_size=0"], "--batch_size=0 must be >= 1"),
    (["--batches=0"], "--batches=0"),
    (["--max_new_tokens=-1"], "--max_new_tokens=-1"),
    (["--temperature=-1"], "--temperature=-1.0 must be >= 0"),
    (["--top_k=-1"], "--top_k=-1 must be >= 0"),
    (["--num_samples=0"], "--num_samples=0 must be >= 1"),
    (["--windows=0"], "--windows=0"),
    (["--tail=0"], "--tail=0"),
    (["--q_chunk=-1"], "--q_chunk=-1"),
    (["--mode=map"], f"not one of {', '.join(evaluate.CHOICES['mode'])}"),
    (["--lengths=a,b"], "not a comma-separated list of token counts"),
    (["--lengths=128,,256"], "--lengths=128,,256"),
    (["--split=test"], f"not one of {', '.join(evaluate.CHOICES['split'])}"),
    (["--pairs=0"], "--pairs=0 is not a comma-separated list of numbers of key-value pairs"),
    (["--pairs=4,x"], "e.g. --pairs=4,8,16"),
    (["--mode=recal"], "did you mean recall"),
]
BENCH = [
    (["--steps=0"], "--steps=0 must be >= 1"),
    (["--warmup=-1"], "--warmup=-1"),
    (["--infer_len=0"], "--infer_len=0"),
    (["--n_head=-1"], "--n_head=-1 must be >= 0"),
    (["--attentions=standard,difff"], "did you mean diff"),
    (["--q_chunk=-2"], "--q_chunk=-2"),
    (["--dape_q_chunk=-1"], "--dape_q_chunk=-1"),
    (["--rounds=0"], "--rounds=0 must be >= 1"),
]


def refused(build, argv, word):
    with pytest.raises(ConfigError) as e:
        build(argv)
    assert word in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("argv, word", TRAIN)
def test_train_flags_out_of_range(argv, word, tmp_path):
    refused(train.build_config, ["--preset=tiny", f"--out_dir={tmp_path / 'run'}", *argv], word)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv, word",
    [(["--dataset=x"], "is not one of stdlib"), (["--dataset=fineweb:2"], "pass --tokenizer=gpt2")],
)
def test_a_bad_dataset_is_refused_before_the_run_folder_exists(argv, word, tmp_path):
    with pytest.raises(DataError, match=word):
        train.build_config(["--preset=tiny", f"--out_dir={tmp_path / 'run'}", *argv])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, word", CONTINUAL)
def test_continual_flags_out_of_range(argv, word):
    refused(train.build_config, ["--mode=continual", "--init_from=out/nowhere", *argv], word)


@pytest.mark.parametrize("argv, word", EVAL)
def test_eval_flags_out_of_range(argv, word):
    refused(
        lambda a: evaluate.EvalConfig(
            **plumbing.parse_flags(a, evaluate.EvalConfig, evaluate.CHOICES)
        ),
        ["--ckpt=out/run", *argv],
        word,
    )


@pytest.mark.parametrize("argv, word", BENCH)
def test_bench_flags_out_of_range(argv, word):
    refused(lambda a: bench.BenchConfig(**plumbing.parse_flags(a, bench.BenchConfig)), argv, word)


def test_every_numeric_field_has_a_range():
    """A new numeric flag without a rule would reach torch unchecked."""
    from model import RANGES as MODEL_RANGES
    from model import GPTConfig

    checked = {**train.RANGES, **schedules.RANGES, **MODEL_RANGES, **continual.RANGES}
    for cls, ranges in (
        (train.Config, checked),
        (continual.ContinualConfig, continual.RANGES),
        (evaluate.EvalConfig, evaluate.RANGES),
        (GPTConfig, MODEL_RANGES),
        (schedules.ScheduleConfig, schedules.RANGES),
    ):
        numeric = {f.name for f in dataclasses.fields(cls) if f.type in (int, float)}
        assert numeric <= set(ranges), (cls.__name__, numeric - set(ranges))


# ------------------------------------------------------------------------------------------------
# checkpoints


def a_checkpoint(path, **config):
    cfg = train.Config(**{**train.PRESETS["tiny"], "out_dir": str(path.parent), **config})
    plumbing.save_atomic(
        {"model": {}, "model_config": {}, "config": dataclasses.asdict(cfg), "iter": 0}, path
    )
    return path


@pytest.mark.parametrize(
    "content, word",
    [
        (b"", "not a readable checkpoint"),
        (b"not a checkpoint at all", "not a readable checkpoint"),
        (None, "not a readable checkpoint"),
        ("list", "not a checkpoint of this project"),
    ],
)
def test_unreadable_checkpoints_are_one_line_without_torch_advice(tmp_path, content, word):
    path = tmp_path / "ckpt.pt"
    if (
        content is None
    ):  # a real checkpoint cut in half, as by a full disk without the atomic rename
        whole = a_checkpoint(tmp_path / "whole.pt").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif content == "list":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        plumbing.load_checkpoint(path)
    assert word in str(e.value) and str(path) in str(e.value) and "weights_only" not in str(e.value)


def test_a_failed_save_removes_its_temp_file_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = a_checkpoint(tmp_path / "ckpt.pt")
    before = path.read_bytes()

    def full_disk(obj, f):
        Path(f).write_bytes(b"half")
        raise RuntimeError(
            "[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file data/0"
        )

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ConfigError, match="could not write .*free some disk space"):
        plumbing.save_atomic({"x": 1}, path)
    assert not Path(str(path) + ".tmp").exists() and path.read_bytes() == before


def test_resume_takes_the_checkpoint_config_before_the_flags(tmp_path):
    """A tiny wsd-s run resumed with its own budgets: validated against its own config, not the
    small preset's."""
    a_checkpoint(
        tmp_path / "ckpt.pt", schedule="wsd-s", max_iters=60, budgets="20,40,60", warmup_iters=5
    )
    cfg, overrides, saved = train.build_config(
        [f"--out_dir={tmp_path}", "--resume", "--max_iters=60", "--budgets=20,40,60"]
    )
    assert (cfg.schedule, cfg.n_layer, cfg.block_size, cfg.max_iters) == (
        "wsd-s",
        2,
        64,
        60,
    ) and saved is not None
    cfg, overrides, saved = train.build_config([f"--out_dir={tmp_path}", "--resume", "--lr=1e-4"])
    assert cfg.lr == 1e-4 and cfg.schedule == "wsd-s"  # a flag still wins over the checkpoint


@pytest.mark.parametrize(
    "flag, word",
    [
        ("--attention=diff", "attention=standard"),
        ("--n_layer=3", "n_layer=2"),
        ("--tokenizer=gpt2", "tokenizer=bytes"),
    ],
)
def test_resume_refuses_flags_that_contradict_the_weights(tmp_path, flag, word):
    a_checkpoint(tmp_path / "ckpt.pt")
    argv = [f"--out_dir={tmp_path}", "--resume", flag]
    cfg, overrides, saved = train.build_config(argv)
    with pytest.raises(
        ConfigError, match=f"--resume: .* holds a model with {word}, but this run asks for {flag}"
    ):
        plumbing.start_run(cfg, overrides, saved, train.shape_keys(cfg) + ["tokenizer"])


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_a_flag_may_change_block_size_unless_positions_are_learned(tmp_path, pos):
    """block_size fixes no weight but learned positions' (wpe): --init_from and --resume take
    another one (a tiny-preset base fine-tuned on tasks that need a longer block)."""
    (tmp_path / "src").mkdir()
    src = a_checkpoint(tmp_path / "src" / "ckpt.pt", pos=pos)
    for argv in (
        [f"--init_from={src}", f"--out_dir={tmp_path / 'new'}"],
        [f"--out_dir={src.parent}", "--resume"],
    ):
        cfg, flags, saved = train.build_config([*argv, "--block_size=128"])
        keys = train.shape_keys(cfg) + ["tokenizer"]
        if pos == "learned":
            fixed = r"block_size=64 \(its learned positions fix it\), but this run asks for "
            fixed += "--block_size=128"
            with pytest.raises(ConfigError, match=fixed):
                plumbing.start_run(cfg, flags, saved, keys)
        else:
            cfg, _, _ = plumbing.start_run(cfg, flags, saved, keys)
            assert (cfg.block_size, cfg.n_layer, cfg.pos) == (128, 2, pos)  # the rest: the source's


def test_run_folder_locks_writes_config_json_and_releases(tmp_path):
    cfg, flags, saved = train.build_config(["--preset=tiny", f"--out_dir={tmp_path}"])
    with plumbing.RunFolder(cfg, flags, saved, []) as (cfg, saved, source):
        assert saved is None and source is None
        assert (tmp_path / "run.lock").read_text() == str(os.getpid())
        written = json.loads((tmp_path / "config.json").read_text())
        assert written == plumbing.settings(cfg) and written["n_layer"] == 2
        assert not set(train.Config.not_flags) & set(written)  # derived: no flags, not written
    assert not (tmp_path / "run.lock").exists()


def test_resume_refuses_another_dataset(tmp_path):
    """An mqar run resumed with a text --dataset would train the recall model on prose from a
    generator's state."""
    a_checkpoint(tmp_path / "ckpt.pt", dataset="mqar")
    refused(
        train.build_config,
        [f"--out_dir={tmp_path}", "--resume", "--dataset=stdlib"],
        f"--resume continues {tmp_path}/ckpt.pt on --dataset=mqar, "
        "but this run asks for --dataset=stdlib",
    )
    cfg, overrides, saved = train.build_config(
        [f"--out_dir={tmp_path}", "--resume", "--dataset=mqar"]
    )
    assert cfg.dataset == "mqar" and saved is not None  # the same dataset, said again, is no change
    assert train.build_config([f"--out_dir={tmp_path}", "--resume"])[0].dataset == "mqar"


def test_resume_without_a_checkpoint_and_a_fresh_run_over_one(tmp_path):
    refused(train.build_config, [f"--out_dir={tmp_path}", "--resume"], "--resume but")
    a_checkpoint(tmp_path / "ckpt.pt")
    cfg, overrides, saved = train.build_config([f"--out_dir={tmp_path}", "--preset=tiny"])
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        plumbing.start_run(cfg, overrides, saved, [])


# ------------------------------------------------------------------------------------------------
# the run folder's lock


def test_one_live_run_per_out_dir(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run.lock").write_text(str(sleeper.pid))
        with pytest.raises(
            ConfigError, match=f"in use by a running process \\(pid {sleeper.pid}\\)"
        ):
            plumbing.lock_run_folder(tmp_path, fresh=True)
        assert (tmp_path / "run.lock").read_text() == str(
            sleeper.pid
        )  # the live run's lock is left alone
    finally:
        sleeper.kill()
        sleeper.wait()
    release = plumbing.lock_run_folder(
        tmp_path, fresh=True
    )  # its process is gone: the lock is taken over
    assert (tmp_path / "run.lock").read_text() == str(os.getpid())
    release()
    assert not (tmp_path / "run.lock").exists()


def test_a_checkpoint_written_before_the_lock_is_not_overwritten(tmp_path):
    """start_run saw no checkpoint, then another run on the folder finished one before this run took
    the lock."""
    cfg, overrides, saved = train.build_config([f"--out_dir={tmp_path}", "--preset=tiny"])
    plumbing.start_run(cfg, overrides, saved, [])  # nothing there yet
    a_checkpoint(tmp_path / "ckpt.pt")  # the other run ends
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        plumbing.lock_run_folder(tmp_path, fresh=True)
    assert not (tmp_path / "run.lock").exists() and (tmp_path / "ckpt.pt").exists()
    plumbing.lock_run_folder(tmp_path, fresh=False)()  # --resume expects it


def test_an_unusable_out_dir_is_refused_before_the_data_is_prepared(tmp_path):
    (tmp_path / "afile").write_text("x")
    argv = [
        "--preset=tiny",
        f"--out_dir={tmp_path / 'afile'}",
        f"--data_dir={tmp_path / 'data'}",
        "--device=cpu",
    ]
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        train.main(argv)
    assert not (tmp_path / "data").exists()
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(ConfigError, match="cannot be written"):
            train.main(
                [
                    "--preset=tiny",
                    f"--out_dir={tmp_path / 'ro' / 'run'}",
                    f"--data_dir={tmp_path / 'data'}",
                ]
            )
        assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------------------------------------
# first contact: --help, messages, progress


def script(*args, **kw):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, **kw
    )


def test_help_everywhere_exits_0_and_writes_nothing(tmp_path):
    for name in ("train.py", "eval.py", "compare.py", "bench.py", "schedules.py", "tasks.py"):
        proc = subprocess.run(
            [sys.executable, str(ROOT / name), "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0 and proc.stdout.strip() and not proc.stderr, (name, proc.stderr)
    assert list(tmp_path.iterdir()) == []  # schedules.py --help drew nothing


def test_train_help_shows_what_a_run_with_no_flags_uses():
    no_flags = "small" if torch.cuda.is_available() else "cpu"
    shown = script("train.py", "--help").stdout
    for key, value in train.PRESETS[no_flags].items():
        assert f"--{key}={value}" in shown, key
    assert f"--preset={no_flags}" in shown
    assert "--n_layer=2" in script("train.py", "--preset=tiny", "--help").stdout


def test_messages_name_the_real_values(tmp_path):
    one_line_error(script("train.py", "--preset=xx"), f"not one of {', '.join(train.PRESETS)}")
    assert plumbing.eta_text(60, 10, 20) == "elapsed 1m00s | eta 2m00s"
    assert (
        plumbing.eta_text(63, 10, 20, first=45) == "elapsed 1m03s | eta 0m40s"
    )  # a compiled first step of 45 s
    assert (
        plumbing.eta_text(45, 1, 20, first=45) == "elapsed 0m45s | eta 15m00s"
    )  # nothing else to go by yet
    runs = [
        dict(preset="cpu", n_layer=4, n_embd=128, n_head=4, dataset="stdlib", seed=s)
        for s in (1, 2, 3)
    ]
    assert (
        plots.shared_title(runs) == "cpu, 4x128, 4 heads, stdlib (3 runs)"
    )  # no seed: they differ
    assert plots.shared_title(runs[:1]) == "cpu, 4x128, 4 heads, stdlib, seed 1 (1 run)"


def test_compare_labels_each_run_by_its_folder(tmp_path):
    for name in ("a", "b", "c"):
        cfg = dataclasses.asdict(train.Config(**train.PRESETS["tiny"], seed=len(name)))
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
        rows = [{"iter": i, "val_loss": 3.0 - i / 10, "tokens": i} for i in range(3)]
        (tmp_path / name / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import matplotlib.pyplot as plt

    saved = []
    real_savefig = plt.Figure.savefig
    plt.Figure.savefig = lambda fig, *a, **k: saved.append(
        [t.get_text() for t in fig.axes[0].get_legend().texts]
    )
    try:
        plots.plot_val_curves([str(tmp_path / n) for n in "abc"], str(tmp_path / "cmp.png"))
    finally:
        plt.Figure.savefig = real_savefig
    labels = saved[0]
    assert len(set(labels)) == 3 and [label.split(":")[0] for label in labels] == ["a", "b", "c"]


def test_progress_lines_arrive_while_the_run_goes_on(tmp_path):
    """stdout through a pipe is line-buffered: the header and first steps arrive before the run
    ends."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(Path(dataclasses.__file__).read_text() * 3)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "--preset=tiny",
            f"--dataset=text:{corpus}",
            f"--data_dir={tmp_path / 'data'}",
            f"--out_dir={tmp_path / 'run'}",
            "--max_iters=100000",
            "--eval_interval=100000",
            "--sample_tokens=0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(5)]
        assert proc.poll() is None, lines  # still running, and we already read its progress
        assert any(
            line.startswith("iter 0/100000") and "elapsed" in line and "eta" in line
            for line in lines
        ), lines
    finally:
        proc.kill()
        proc.wait()


def half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2 - 1])


@pytest.mark.parametrize(
    "damage",
    [
        lambda f: half(f / "train.bin"),  # a cut copy
        lambda f: half(f / "meta.json"),
        lambda f: (f / "val.bin").write_bytes(b"\xff" * (f / "val.bin").stat().st_size),  # ids
    ],
    ids=["train.bin cut", "meta.json cut", "val.bin garbage"],
)
def test_a_damaged_prepared_folder_ends_train_py_in_one_line(tmp_path, damage):
    """No traceback (numpy's, json's, the embedding's): one line, exit 2, and how to prepare the
    folder again."""
    import data

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(Path(dataclasses.__file__).read_text())
    folder = data.prepare(f"text:{corpus}", "bytes", tmp_path / "data")
    damage(folder)
    argv = ["--preset=tiny", f"--dataset=text:{corpus}", f"--data_dir={tmp_path / 'data'}"]
    proc = script("train.py", *argv, f"--out_dir={tmp_path / 'run'}", "--max_iters=2")
    one_line_error(proc, str(folder), "delete", "meta.json and run again")


def test_schedules_script_refuses_stray_arguments():
    with pytest.raises(ConfigError, match="usage: python schedules.py"):
        schedules.main(["--budgets=3"])


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`python train.py --help | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        text=True,
    )
    # the reader is gone before the first line (importing torch takes the script a second)
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert (
        proc.wait(timeout=60) != 0 and "Traceback" not in stderr and "BrokenPipe" not in stderr
    ), stderr
