"""The CUDA path, as far as a CPU can check it: torch.compile + bf16 on every attention type, the
dtype rule, DDP ranks building only their slice of the batch, bench.py's JSON and the GPU check's
cases and compile counts (its verdict: test_check.py);
CUDA-only tests skip without it."""

import json

import pytest
import torch
from helpers import tiny

import bench
import check
from attention import ATTENTIONS
from data import get_batch
from model import GPT
from plumbing import pick_dtype

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def batch(T=16, B=2):
    x = torch.randint(0, 64, (B, T + 1), generator=torch.Generator().manual_seed(0))
    return x[:, :-1], x[:, 1:]


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_compile_and_bf16_on_cpu_match_eager(attention):
    """What CUDA runs by default (compile + bf16 autocast), on the CPU: same loss as eager bf16,
    finite grads."""
    torch.manual_seed(0)
    model = GPT(tiny(attention=attention, n_layer=1))
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = model(x, y)[1].float()
        compiled = torch.compile(model)(x, y)[1].float()
    compiled.backward()
    assert compiled.item() == pytest.approx(eager.item(), rel=2e-2)
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in model.parameters()
        if p.requires_grad
    )
    torch._dynamo.reset()


def test_dtype_auto_per_device():
    assert pick_dtype("auto", "cpu") == "float32" and pick_dtype("auto", "mps") == "float32"
    assert (
        pick_dtype("auto", "cuda", (9, 0)) == pick_dtype("auto", "cuda", (8, 0)) == "bfloat16"
    )  # H100, A100
    assert (
        pick_dtype("auto", "cuda", (7, 5)) == pick_dtype("auto", "cuda", (7, 0)) == "float16"
    )  # T4, V100
    assert (
        pick_dtype("auto", "cuda", (7, 5), fp16=False) == "float32"
    )  # continual.py has no gradient scaler
    assert pick_dtype("bfloat16", "cuda", (7, 5)) == "bfloat16"  # an explicit choice is kept


def test_ddp_ranks_build_only_their_slice_of_the_one_process_batch():
    tokens = torch.arange(1000).numpy().astype("uint16")
    g = torch.Generator().manual_seed(3)
    whole = get_batch(tokens, 8, 16, g)
    after = g.get_state()
    world, per_rank = 4, 2
    parts = []
    for rank in range(world):
        g = torch.Generator().manual_seed(3)
        parts.append(get_batch(tokens, 8, 16, g, slice(rank * per_rank, (rank + 1) * per_rank)))
        assert torch.equal(g.get_state(), after)  # every rank's generator stays in step
    assert torch.equal(torch.cat([p[0] for p in parts]), whole[0]) and torch.equal(
        torch.cat([p[1] for p in parts]), whole[1]
    )


def test_bench_json_has_one_object_per_attention_type(capsys):
    bench.main(
        [
            "--json",
            "--steps=1",
            "--warmup=0",
            "--n_layer=1",
            "--n_embd=32",
            "--n_head=4",
            "--block_size=32",
            "--batch_size=2",
            "--device=cpu",
        ]
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["attention"] for r in rows] == list(ATTENTIONS)
    for r in rows:
        assert {
            "attention",
            "flops_per_token",
            "ms_per_step",
            "tokens_per_sec",
            "mfu",
            "peak_mem_gb",
        } <= set(r)
        assert r["flops_per_token"] > 0 and r["tokens_per_sec"] == pytest.approx(
            2 * 32 / (r["ms_per_step"] / 1000)
        )
    assert rows[0]["vs_standard"] == 1.0


def test_gpu_check_covers_every_attention_and_position_and_the_paths_they_leave_out():
    """The check's parity cases: each class's declared positions, then DAPE's query chunks and
    full grid, activation checkpointing and diff's wide V; every compiled case is one of them."""
    labels = [label for label, *_ in check.parity_cases()]
    pairs = [f"{a}/{p}" for a, kind in ATTENTIONS.items() for p in kind.positions]
    assert labels[: len(pairs)] == pairs
    assert {"dape/kerple q_chunk 16", "standard/rope checkpointed", "diff/rope wide V"} <= set(
        labels
    )
    assert set(check.COMPILED) <= set(labels)


def test_gpu_check_counts_no_graph_break_or_recompile_on_cpu():
    """The check's compile part on the CPU (dynamo alone): every line passes or is skipped."""
    statuses = [check.judge(m)[0] for m in check.compiling(False)]
    assert statuses == ["ok", "ok", "skipped"] * len(ATTENTIONS)


@cuda_only
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_cuda_matches_cpu(attention):
    x, y = check.batches()[0]
    loss = check.tiny_model(attention, "auto")(x, y)[1]
    loss_c = check.tiny_model(attention, "auto", "cuda")(x.cuda(), y.cuda())[1]
    assert loss_c.item() == pytest.approx(loss.item(), rel=1e-4)


def test_counted_flops_match_the_hand_count():
    """standard: 6N + 12·L·C·T (nanoGPT's formula); diff adds what its path computes; DAPE adds its
    convs."""
    from model import GPTConfig

    L, C, H, T = 2, 64, 4, 32
    shape = dict(vocab_size=128, block_size=T, n_layer=L, n_head=H, n_embd=C)
    models = {a: GPT(GPTConfig(**shape, attention=a)) for a in ATTENTIONS}
    std, diff, dape = models["standard"], models["diff"], models["dape"]
    formula = 6 * std.num_params(non_embedding=True) + 12 * L * C * T
    assert std.flops_per_token() == pytest.approx(formula, rel=5e-3)
    # V in halves (no bias): the second value product (6·L·C·T) and QKᵀ once more per half (6·L·C·T)
    assert diff.flops_per_token() - std.flops_per_token() == pytest.approx(12 * L * C * T, rel=2e-2)
    std_b, diff_b = (
        GPT(GPTConfig(**shape, attention=a, pos="alibi")) for a in ("standard", "diff")
    )
    assert diff_b.flops_per_token() - std_b.flops_per_token() == pytest.approx(
        6 * L * C * T, rel=2e-2
    )  # shared V
    assert dape.flops_per_token() > std.flops_per_token()
    assert std.flops_per_token(2 * T) > std.flops_per_token()  # attention grows with T
    peak = 100e12
    assert std.estimate_mfu(1000.0, peak) == pytest.approx(std.flops_per_token() * 1000.0 / peak)


@pytest.mark.parametrize("pos", ["rope", "alibi"])
def test_diff_with_v_in_halves_equals_the_shared_v_path_and_the_maps(pos):
    """The flash-eligible variant (two SDPA calls, V in d-wide halves) computes the same layer, and
    its gradients."""
    torch.manual_seed(0)
    model = GPT(tiny(attention="diff", pos=pos))
    x, y = batch()
    results = []
    for split in (False, True):
        for block in model.transformer.h:
            block.attn.split_v = split
        loss = model(x, y)[1]
        results.append((loss.item(), torch.autograd.grad(loss, list(model.parameters()))))
    _, explicit, _ = model.attention_maps(x, {0: [0]}, y)  # the explicit path: maps materialised
    assert (
        results[0][0]
        == pytest.approx(results[1][0], abs=1e-6)
        == pytest.approx(explicit.item(), abs=1e-6)
    )
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(results[0][1], results[1][1]))


@pytest.mark.parametrize("chunk", [5, 7, 16])
def test_dape_training_in_query_chunks_equals_the_full_grid(chunk):
    """--dape_q_chunk: rows against the keys they can reach only; same loss and gradients as the
    whole T×T grid."""
    torch.manual_seed(0)
    model = GPT(tiny(attention="dape"))
    x, y = batch()
    out = []
    for q_chunk in (0, chunk):
        model.set_q_chunk(q_chunk)
        loss = model(x, y)[1]
        out.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    assert out[0][0].item() == pytest.approx(out[1][0].item(), abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out[0][1], out[1][1]))
    full = GPT(tiny(attention="dape")).flops_per_token()
    assert (
        GPT(tiny(attention="dape", dape_q_chunk=4)).flops_per_token() < full
    )  # the upper triangle is skipped


def test_dape_scores_stay_in_bf16_under_autocast():
    torch.manual_seed(0)
    attn = GPT(tiny(attention="dape")).transformer.h[0].attn
    x = torch.randn(2, 16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k, _ = attn.qkv(x)
        assert (
            attn.scores(q, k, 0, 16).dtype == torch.bfloat16
        )  # the fp32 Kerple bias no longer promotes S'


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_activation_checkpointing_gives_the_same_loss_and_gradients(attention):
    torch.manual_seed(0)
    plain = GPT(tiny(attention=attention))
    recomputed = GPT(tiny(attention=attention, activation_checkpointing=True))
    recomputed.load_state_dict(plain.state_dict())
    x, y = batch()
    grads = []
    for model in (plain, recomputed):
        loss = model(x, y)[1]
        grads.append((loss.item(), torch.autograd.grad(loss, list(model.parameters()))))
    assert grads[0][0] == grads[1][0]
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grads[0][1], grads[1][1]))
