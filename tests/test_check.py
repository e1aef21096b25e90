"""The GPU check's verdict (check.py), driven by fake measurements: a FAIL is reported as one,
counted, repeated above the last line and turned into exit code 1; a skipped line is counted as
skipped; NaN or missing values never pass. Then the pieces that run on the CPU: the SDPA backend
read from the profiler, and bench.py --mode=memory's estimate against a measured CPU peak."""

import json
import math

import pytest
import torch

import bench
import check
from model import GPTConfig


def test_a_measurement_within_its_bounds_is_ok_and_names_value_and_threshold():
    m = check.measured("parity x", ("|dloss|", 2e-6, "<=", 1e-3), ("cosine", 0.9999, ">=", 0.999))
    status, line = check.judge(m)
    assert status == "ok"
    assert line == "ok    parity x: |dloss| 2e-06 (<= 0.001), cosine 1 (>= 0.999)"


@pytest.mark.parametrize(
    "value, op, bound",
    [
        (2e-2, "<=", 1e-3),  # over its bound
        (0.3, ">=", 0.4),  # an MFU under the target
        (math.nan, "<=", 1e-3),  # NaN compares false both ways: never a pass
        (None, ">=", 0.0),  # a value that could not be read
        ("math", "in", ("flash", "cudnn")),  # the math fallback where flash applies
        (3, "==", 1),
    ],
)
def test_a_value_outside_its_bound_is_a_fail(value, op, bound):
    m = check.measured("x", ("fine", 0.0, "<=", 1.0), ("this", value, op, bound))
    status, line = check.judge(m)
    assert status == "FAIL" and line.startswith("FAIL  x: ")


def test_no_check_is_a_fail_with_its_reason_and_a_skip_says_no_cuda():
    status, line = check.judge(check.measured("train.py", note="error: no such flag"))
    assert status == "FAIL" and line == "FAIL  train.py -- error: no such flag"
    status, line = check.judge(check.failed("parity y", RuntimeError("boom\nmore")))
    assert status == "FAIL" and "RuntimeError: boom" in line
    status, line = check.judge(check.skipped("kernels z"))
    assert status == "skipped" and line == "skipped (no CUDA)  kernels z"
    interval = check.Interval(0.5, 1.1)
    assert check.judge(check.measured("m", ("ratio", 0.8, "in", interval)))[0] == "ok"
    assert check.judge(check.measured("m", ("ratio", 1.3, "in", interval)))[0] == "FAIL"


def test_summary_counts_each_status_and_exits_1_on_any_fail():
    assert check.summary(["ok", "ok", "skipped"]) == (
        "check: 2 passed, 0 failed, 1 skipped (no CUDA)",
        0,
    )
    assert check.summary(["ok", "FAIL", "skipped", "skipped"]) == (
        "check: 1 passed, 1 failed, 2 skipped (no CUDA)",
        1,
    )


def fake_parts(monkeypatch, measurements):
    """Every part of run_check yields the given fake measurements (parity) or nothing."""
    monkeypatch.setattr(check, "parity", lambda cuda: iter(measurements))
    for part in ("kernels", "compiling"):
        monkeypatch.setattr(check, part, lambda cuda: iter([]))
    monkeypatch.setattr(check, "train_runs", lambda cuda, tmp: iter([]))


def test_run_check_ends_with_the_verdict_and_repeats_the_fails_above_it(monkeypatch, capsys):
    fails = [check.measured(f"bad {i}", ("v", 1.0, "<=", 0.0)) for i in range(12)]
    fake_parts(monkeypatch, [check.measured("good", ("v", 0.0, "<=", 1.0)), *fails])
    code = check.run_check(cuda=False, parts=["parity", "kernels", "compile", "train"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1
    assert lines[-1] == "check: 1 passed, 12 failed, 0 skipped (no CUDA)"
    tail = lines[-14:]  # the verdict's neighbourhood: the FAIL lines again, 10 at most
    assert sum(line.startswith("FAIL  bad") for line in tail) == 10
    assert "... and 2 more" in tail


def test_run_check_passes_when_everything_is_ok_or_skipped(monkeypatch, capsys):
    fake_parts(monkeypatch, [check.measured("good", ("v", 0, "==", 0)), check.skipped("gpu")])
    assert check.run_check(cuda=False, parts=["parity"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "check: 1 passed, 0 failed, 1 skipped (no CUDA)"
    assert "FAIL" not in out


def test_a_spent_budget_fails_the_parts_not_run_and_no_subprocess_starts(monkeypatch, capsys):
    """The verdict always comes: past BUDGET_SECONDS a part is one FAIL line ("not run") and
    run_script starts nothing."""
    fake_parts(monkeypatch, [check.measured("good", ("v", 0, "==", 0))])
    monkeypatch.setattr(check, "BUDGET_SECONDS", -1)
    monkeypatch.setattr(check, "DEADLINE", [math.inf])  # run_check sets it: undone after the test
    assert check.run_check(cuda=False, parts=["parity", "train"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "check: 0 passed, 2 failed, 0 skipped (no CUDA)"
    assert any(line.startswith("FAIL  train: not run") for line in lines)
    rc, out, why = check.run_script(["train.py", "--help"], 60)
    assert rc is None and "not run" in why


def test_bench_mode_check_exits_1_when_the_check_fails(monkeypatch):
    monkeypatch.setattr(check, "run_check", lambda: 1)
    with pytest.raises(SystemExit) as e:
        bench.main(["--mode=check"])
    assert e.value.code == 1
    monkeypatch.setattr(check, "run_check", lambda: 0)
    bench.main(["--mode=check"])  # a pass returns: exit code 0


def test_without_cuda_every_cuda_line_is_skipped_and_the_cpu_parity_runs(monkeypatch):
    monkeypatch.setattr(check, "parity_cases", lambda: [("standard/rope", "standard", "rope", {})])
    statuses = [check.judge(m)[0] for m in check.parity(False)]
    # cuda fp32 vs cpu, bf16 (on the CPU), bf16 compiled, the dropout smoke run
    assert statuses == ["skipped", "ok", "skipped", "skipped"]
    assert {check.judge(m)[0] for m in check.kernels(False)} == {"skipped"}
    estimate = {"dape": dict(peak_mem_gb=50.0), "standard": dict(peak_mem_gb=18.0)}
    lines = [check.judge(m) for m in check.gpt2(False, (estimate, ""))]
    assert [s for s, _ in lines] == ["FAIL", "ok"] + ["skipped"] * 3  # dape over 40 GB fails


def test_the_kernel_reader_names_the_backend_from_the_profiler():
    """On the CPU, standard attention without a bias runs the CPU flash kernel; DAPE calls no
    SDPA at all (the same reader judges CUDA's op names)."""
    x = torch.randint(0, 256, (2, 33))
    model = check.tiny_model("standard", "rope", T=32)
    assert check.sdpa_backends(model, x[:, :-1], x[:, 1:], "cpu") == "flash"
    model = check.tiny_model("dape", "kerple", T=32)
    assert check.sdpa_backends(model, x[:, :-1], x[:, 1:], "cpu") == "none"


def profiled_peak(config, batch_size):
    """The CPU allocator's own count: the peak of the running sum of every allocation and free the
    profiler records over two real training steps (bf16 autocast, fused AdamW)."""
    from model import GPT

    torch.manual_seed(0)
    with torch.profiler.profile(profile_memory=True) as prof:
        model = GPT(config)
        idx = torch.randint(0, config.vocab_size, (batch_size, config.block_size + 1))
        opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), "cuda")  # fused
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(idx[:, :-1], idx[:, 1:])[1]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if type(e.extra_fields).__name__ == "_ExtraFields_Allocation":
            events.append((e.start_time_ns, e.extra_fields.alloc_size))
    now = peak = 0
    for _, size in sorted(events):
        now += size
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize("attention", ["standard", "diff", "dape"])
def test_memory_estimate_is_within_10_percent_of_the_measured_cpu_peak(attention):
    """bench.py --mode=memory counts fake tensors; the profiler counts a real step's allocations.
    They agree within 10% (measured: standard +6.8%, diff +6.1%, dape +1.7% at 8 x 128 tokens)."""
    config = GPTConfig(vocab_size=256, block_size=128, n_layer=2, n_head=4, n_embd=64)
    config.attention = attention
    config = GPTConfig(**{**vars(config), "pos": "auto"})
    estimate = bench.step_memory(config, 8, "bfloat16")
    assert estimate == pytest.approx(profiled_peak(config, 8), rel=0.10)


def test_bench_needs_no_tokenizer_ranks_offline(monkeypatch, capsys):
    """The check runs offline: bench.py's modes draw random tokens, so they read the vocabulary size
    (data.N_VOCAB) and never load tiktoken's ranks, even for a GPT-2-token preset."""
    import tiktoken

    def offline(name):
        raise ConnectionError(f"no network to fetch {name}")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    bench.main(["--mode=memory", "--preset=small", "--attentions=standard", "--json"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["attention"] == "standard" and row["peak_mem_gb"] > 0
