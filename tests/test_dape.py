"""DAPE V2 and Kerple: naive references written from the equations, causality, the conv's blindness
to future scores, chunked == unchunked, and the extrapolation sweep end to end."""

import json
import math
from functools import partial
from pathlib import Path

import helpers
import pytest
import torch
import torch.nn.functional as F

from attention import ATTENTIONS, KerpleLog, causal_distance
from model import GPT, GPTConfig
from plumbing import ConfigError

BIASES = ATTENTIONS["dape"].positions  # the biases DAPE's conv reads beside S (nope: none)

tiny = partial(helpers.tiny, attention="dape")  # dape attention, unless a test says otherwise


def test_kerple_bias_values():
    kerple = KerpleLog(3)
    with torch.no_grad():
        kerple.p.copy_(torch.tensor([0.5, 1.0, 2.0]))
        kerple.a.copy_(torch.tensor([0.1, 1.0, 0.5]))
    bias = kerple(causal_distance(10, "cpu"))  # (3, 10, 10)
    for h, i, j in [(0, 0, 0), (0, 5, 2), (1, 9, 0), (2, 7, 6), (2, 3, 3)]:
        p, a = kerple.p[h].item(), kerple.a[h].item()
        want = -p * math.log(1 + a * (i - j))
        assert bias[h, i, j].item() == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert torch.all(bias.triu(1) == 0)  # future entries: 0, left to the causal mask
    with torch.no_grad():
        kerple.p.fill_(-1.0)
        kerple.a.fill_(0.0)
    kerple(causal_distance(4, "cpu"))
    assert torch.all(kerple.p == 0.01) and torch.all(kerple.a == 0.01)  # clamped at 0.01


def test_kerple_init_and_names():
    torch.manual_seed(0)
    model = GPT(tiny(attention="standard", pos="kerple", n_head=8))
    attn = model.transformer.h[0].attn
    assert attn.kerple.p.shape == (8,) and 0 <= attn.kerple.p.min() and attn.kerple.p.max() <= 2
    assert 0 <= attn.kerple.a.min() and attn.kerple.a.max() <= 1
    assert "transformer.h.1.attn.kerple.a" in dict(model.named_parameters())


def test_kerple_standard_fast_equals_explicit_and_is_causal():
    torch.manual_seed(0)
    model = GPT(tiny(attention="standard", pos="kerple")).eval()
    idx = torch.randint(0, 64, (2, 24))  # longer than block_size
    fast = model(idx)[0]
    explicit = model.attention_maps(idx, {0: [0, 1, 2, 3], 1: [1]})[0]
    assert torch.allclose(fast, explicit, atol=1e-5)
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 64
    assert torch.allclose(model(changed)[0][:, :10], fast[:, :10], atol=1e-6)
    # the fast path takes the bias as an SDPA mask: p and a still get gradients
    model(idx, idx)[1].backward()
    assert model.transformer.h[0].attn.kerple.p.grad.abs().sum() > 0
    assert model.transformer.h[1].attn.kerple.a.grad.abs().sum() > 0


def test_dape_defaults_names_and_refusals():
    cfg = GPTConfig(attention="dape")
    assert cfg.pos == ATTENTIONS["dape"].default_pos == "kerple"
    assert GPTConfig().pos == ATTENTIONS["standard"].default_pos == "rope"
    model = GPT(tiny())
    attn = model.transformer.h[0].attn
    assert attn.conv1.weight.shape == (32, 8, 1, 3)  # 2H -> D
    assert attn.conv2.weight.shape == (4, 32, 1, 3)  # D -> H
    assert attn.conv1.bias is not None and attn.conv2.bias is not None
    assert hasattr(attn, "c_attn") and hasattr(attn, "c_proj") and hasattr(attn.kerple, "p")
    nope = GPT(tiny(pos="nope")).transformer.h[0].attn
    assert nope.conv1.weight.shape == (32, 4, 1, 3)  # H -> D
    with pytest.raises(ConfigError) as e:
        tiny(pos="rope")
    assert str(e.value) == (
        "--attention=dape takes --pos=kerple (its default), alibi or nope, not --pos=rope"
    )
    with pytest.raises(ConfigError, match="odd"):
        tiny(dape_kernel=4)


def conv_along_keys(x, weight, bias):
    """x (C_in, keys) -> (C_out, keys):
    out[o, j] = bias[o] + Σ_c Σ_t weight[o, c, 0, t] · x[c, j + t − k//2]."""
    k = weight.size(-1)
    n = x.size(-1)
    out = bias[:, None].repeat(1, n)
    for j in range(n):
        for t in range(k):
            if 0 <= j + t - k // 2 < n:
                out[:, j] += weight[:, :, 0, t] @ x[:, j + t - k // 2]
    return out


def naive_dape_probs(x, attn, pos):
    """Row by row from the equation, for one sequence x (T, C):
    S' = S + B + conv2(LeakyReLU(conv1(tril([S; B]))))."""
    T, C = x.shape
    H, d = attn.n_head, C // attn.n_head
    q, k, _ = (x @ attn.c_attn.weight.T).split(C, dim=1)
    probs = torch.zeros(H, T, T)
    for i in range(T):
        heads = [q[i, h * d : (h + 1) * d] @ k[:, h * d : (h + 1) * d].T for h in range(H)]
        s = torch.stack(heads) / math.sqrt(d)  # (H, T): row i of S
        dist = torch.tensor([float(i - j) for j in range(T)])
        if pos == "kerple":
            p, a = attn.kerple.p, attn.kerple.a
            b = torch.stack([-p[h] * torch.log(1 + a[h] * dist.clamp(min=0)) for h in range(H)])
        elif pos == "alibi":
            b = torch.stack([-(2 ** (-8 * (h + 1) / H)) * dist for h in range(H)])
        else:
            b = torch.zeros(H, T)
        feats = s if pos == "nope" else torch.cat([s, b])
        feats = feats * (dist >= 0)  # tril: keys after i are zero
        hidden = F.leaky_relu(conv_along_keys(feats, attn.conv1.weight, attn.conv1.bias), 0.01)
        s2 = s + b + conv_along_keys(hidden, attn.conv2.weight, attn.conv2.bias)
        probs[:, i, : i + 1] = torch.softmax(s2[:, : i + 1], dim=-1)
    return probs


@pytest.mark.parametrize("pos", BIASES)
def test_dape_matches_naive_loop(pos):
    torch.manual_seed(0)
    model = GPT(tiny(pos=pos, block_size=8)).eval()
    attn = model.transformer.h[1].attn
    with torch.no_grad():  # make the convs matter: default init is small next to S
        for conv in (attn.conv1, attn.conv2):
            conv.weight.mul_(5)
            conv.bias.normal_()
    idx = torch.randint(0, 64, (1, 11))
    logits, _, maps = model.attention_maps(idx, {1: [0, 1, 2, 3]})
    x = model.transformer.h[0](model.transformer.wte(idx))[0]  # layer 1's input: block 0's output
    x = model.transformer.h[1].ln_1(x)
    want = naive_dape_probs(x, attn, pos)
    assert torch.allclose(maps[1][0], want, atol=1e-5)
    _, _, v = (x @ attn.c_attn.weight.T).split(32, dim=1)
    heads = [want[h] @ v[:, h * 8 : (h + 1) * 8] for h in range(4)]
    y = torch.cat(heads, dim=1) @ attn.c_proj.weight.T
    model.set_q_chunk(3)
    assert torch.allclose(attn(x[None])[0], y, atol=1e-5)  # the chunked forward, no maps
    assert torch.allclose(model(idx)[0], logits, atol=1e-5)


@pytest.mark.parametrize("pos", BIASES)
@pytest.mark.parametrize("kernel", [3, 5])
def test_dape_chunked_equals_unchunked(pos, kernel):
    torch.manual_seed(0)
    model = GPT(tiny(pos=pos, dape_kernel=kernel)).eval()
    for block in model.transformer.h:
        with torch.no_grad():
            # conv1's output at keys past i is its bias: it must survive chunking
            block.attn.conv1.bias.normal_()
    idx = torch.randint(0, 64, (2, 37))  # past block_size, and not a multiple of the chunks
    model.set_q_chunk(0)
    full = model(idx)[0]
    for q_chunk in (1, 4, 10, 36, 64):
        model.set_q_chunk(q_chunk)
        with torch.no_grad():
            assert torch.allclose(model(idx)[0], full, atol=1e-5), q_chunk


@pytest.mark.parametrize("pos", BIASES)
def test_dape_conv_sees_no_future_scores(pos):
    """Perturb S at j > i before the conv: S'[i, j <= i] is unchanged."""
    torch.manual_seed(0)
    attn = GPT(tiny(pos=pos)).transformer.h[0].attn
    T = 12
    dist = causal_distance(T, "cpu")
    s = torch.randn(2, 4, T, T)
    noisy = s + 100 * torch.randn_like(s) * (dist < 0)  # only future entries change
    a, b = attn.refine(s, dist), attn.refine(noisy, dist)
    past = dist >= 0
    assert torch.allclose(a[..., past], b[..., past], atol=1e-5)
    assert not torch.allclose(a, b)


def test_default_chunks_change_only_the_last_bits():
    """Query chunks are the default (GPTConfig.dape_q_chunk, docs/dape.md "Speed"): the same
    equation, but the convs and softmax run over narrower key windows, so the float sums round in
    another order: losses and gradients differ from the full grid's in the last bits only. (With
    attention dropout the chunks draw their masks in another order: another draw, not tested.)"""
    assert GPTConfig().dape_q_chunk > 0
    torch.manual_seed(0)
    model = GPT(tiny(dape_q_chunk=8))
    idx = torch.randint(0, 64, (2, 33))
    out = []
    for q_chunk in (8, 0):
        model.set_q_chunk(q_chunk)
        loss = model(idx[:, :-1], idx[:, 1:])[1]
        out.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    assert abs(out[0][0].item() - out[1][0].item()) <= 1e-5
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out[0][1], out[1][1]))


def test_dape_recomputes_its_layer_past_its_score_count(monkeypatch):
    """recompute_above (B·H·T² scores): a training forward past it keeps the layer's input only
    and recomputes the attention in backward (torch.utils.checkpoint); same loss and gradients.
    Below it, in eval and under no_grad nothing is recomputed."""
    kind = ATTENTIONS["dape"]
    assert kind.recompute_above and ATTENTIONS["standard"].recompute_above is None
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(
        torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    torch.manual_seed(0)
    model = GPT(tiny())
    idx = torch.randint(0, 64, (2, 17))
    B, T, H = 2, 16, 4
    results = []
    for limit in (B * H * T * T, B * H * T * T - 1):  # at the limit: kept; one past: recomputed
        monkeypatch.setattr(kind, "recompute_above", limit)
        calls.clear()
        loss = model(idx[:, :-1], idx[:, 1:])[1]
        results.append((loss, torch.autograd.grad(loss, list(model.parameters())), len(calls)))
        with torch.no_grad():
            model(idx[:, :-1])
        model.eval()
        model(idx[:, :-1])
        model.train()
        assert len(calls) == results[-1][2]  # no_grad and eval recompute nothing
    (kept, g_kept, n_kept), (again, g_again, n_again) = results
    assert (n_kept, n_again) == (0, 2)  # one per layer
    assert kept.item() == again.item()
    assert all(torch.equal(a, b) for a, b in zip(g_kept, g_again))


def test_compiled_dape_is_one_graph_whatever_the_chunks_and_lengths():
    """Under torch.compile DAPE runs the full grid in one piece: the chunk loop does not unroll
    into the graph (same node count as q_chunk 0), and no-grad forwards at 12 lengths compile a few
    graphs (the CPU conv's size buckets), never reaching dynamo's recompile limit (8), past which
    it would fall back to eager."""
    nodes = []

    def count(gm, example_inputs):
        nodes.append(len(gm.graph.nodes))
        return gm.forward

    torch.manual_seed(0)
    model = GPT(tiny(block_size=64)).eval()
    idx = torch.randint(0, 64, (1, 64))
    for q_chunk in (0, 8):
        torch._dynamo.reset()
        model.set_q_chunk(q_chunk)
        with torch.no_grad():
            torch.compile(model, backend=count)(idx)
    assert len(nodes) == 2 and nodes[0] == nodes[1]
    torch._dynamo.reset()
    nodes.clear()
    compiled = torch.compile(model, backend=count)
    with torch.no_grad():
        for T in (16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128):
            x = torch.randint(0, 64, (1, T))
            assert torch.allclose(compiled(x)[0], model(x)[0], atol=1e-5), T
    assert len(nodes) <= 4
    torch._dynamo.reset()


def test_dape_trains_and_gradients_reach_convs_and_kerple():
    torch.manual_seed(0)
    model = GPT(tiny())
    idx = torch.randint(0, 64, (4, 16))
    opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), "cpu")
    first = model(idx[:, :-1], idx[:, 1:])[1]
    first.backward()
    attn = model.transformer.h[0].attn
    assert attn.conv1.weight.grad.abs().sum() > 0 and attn.kerple.p.grad.abs().sum() > 0
    for _ in range(30):
        opt.step()
        opt.zero_grad()
        loss = model(idx[:, :-1], idx[:, 1:])[1]
        loss.backward()
    assert loss.item() < 0.5 * first.item()


def test_dape_generates_past_block_size():
    """No KV cache: generate() recomputes the (cropped) context, so the mask is always by absolute
    position."""
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 64, (1, 10))
    out = model.generate(idx, 12, temperature=0)
    assert out.shape == (1, 22) and out[0, 10].item() == model(idx)[0][0, -1].argmax().item()


def test_extrapolate_end_to_end(tmp_path, capsys):
    """train.py --attention=dape (kerple by default) then eval.py --mode=extrapolate with two
    checkpoints (one repeated --ckpt, one comma-separated): table, json, png; learned positions and
    dape + rope refused."""
    import argparse
    import signal

    import eval as evaluate
    import train

    sigint = signal.getsignal(signal.SIGINT)  # train.main takes Ctrl-C over; give it back after
    (tmp_path / "corpus.txt").write_text(Path(argparse.__file__).read_text())
    common = [
        "--preset=tiny",
        f"--dataset=text:{tmp_path / 'corpus.txt'}",
        f"--data_dir={tmp_path / 'data'}",
        "--max_iters=2",
        "--block_size=16",
        "--sample_tokens=0",
        "--eval_iters=1",
    ]
    runs = {"dape": ["--attention=dape"], "rope": [], "learned": ["--pos=learned"]}
    for name, extra in runs.items():
        train.main([*common, *extra, f"--out_dir={tmp_path / name}"])
    signal.signal(signal.SIGINT, sigint)
    assert json.loads((tmp_path / "dape" / "config.json").read_text())["pos"] == "kerple"
    capsys.readouterr()
    ev = ["--mode=extrapolate", f"--data_dir={tmp_path / 'data'}", "--windows=2", "--q_chunk=8"]
    evaluate.main(
        [*ev, f"--ckpt={tmp_path / 'dape'}", f"--ckpt={tmp_path / 'rope'}", "--lengths=16,32,64"]
    )
    out = capsys.readouterr().out
    assert "dape/kerple" in out and "standard/rope" in out
    res = json.loads((tmp_path / "dape" / "extrapolation.json").read_text())
    assert res["lengths"] == [16, 32, 64] and res["tail"] == 16
    assert len(res["runs"]) == 2
    assert all(len(r["ppl"]) == 3 and all(p > 1 for p in r["ppl"]) for r in res["runs"])
    assert (tmp_path / "dape" / "extrapolation.png").stat().st_size > 0
    with pytest.raises(ConfigError, match="learned positions.*block_size=16"):
        evaluate.main(
            [*ev, f"--ckpt={tmp_path / 'dape'},{tmp_path / 'learned'}", "--lengths=16,32"]
        )
    with pytest.raises(ConfigError, match="--pos=kerple"):
        train.main([*common, "--attention=dape", "--pos=rope", f"--out_dir={tmp_path / 'x'}"])
