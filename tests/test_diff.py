"""Differential attention (arXiv 2410.05258 §2.1) against a naive per-head loop written here from
the equations; λ and λinit per layer; causality; gradients to the λ vectors; parameter count; fast
path == explicit path."""

import math
from functools import partial

import helpers
import pytest
import torch
import torch.nn.functional as F
from helpers import position_bias, rotate

from attention import ATTENTIONS
from model import GPT, GPTConfig
from plumbing import ConfigError

POSITIONS = ATTENTIONS["diff"].positions

tiny = partial(helpers.tiny, attention="diff")  # diff attention, unless a test says otherwise


@torch.no_grad()
def naive_diff_attention(x, attn, layer_idx, pos):
    """One layer of differential attention on x (T, C), head by head from the paper's equations.
    -> (output (T, C), effective maps A1 − λ·A2 (h, T, T))."""
    T, C = x.shape
    h = attn.n_head
    d = C // (2 * h)  # Q/K sub-head size = the baseline's head size
    q, k, v = (x @ attn.c_attn.weight.T).split(C, dim=1)
    lambda_init = 0.8 - 0.6 * math.exp(-0.3 * layer_idx)
    e1 = math.exp(attn.lambda_q1 @ attn.lambda_k1)
    e2 = math.exp(attn.lambda_q2 @ attn.lambda_k2)
    lam = e1 - e2 + lambda_init  # λ = exp(λq1·λk1) − exp(λq2·λk2) + λinit
    heads = []
    maps = []
    for i in range(h):
        sub = lambda m, s: m[:, s * d : (s + 1) * d]
        q1, k1 = sub(q, 2 * i), sub(k, 2 * i)
        q2, k2 = sub(q, 2 * i + 1), sub(k, 2 * i + 1)
        pairs = [(q1, k1), (q2, k2)]
        if pos == "rope":
            pairs = [(rotate(qs), rotate(ks)) for qs, ks in pairs]
        A = torch.zeros(2, T, T)
        for a, (qs, ks) in enumerate(pairs):
            for r in range(T):
                scores = [
                    qs[r] @ ks[j] / math.sqrt(d) + position_bias(attn, pos, i, r, j)
                    for j in range(r + 1)
                ]  # head i's bias on both of its maps
                A[a, r, : r + 1] = torch.softmax(torch.stack(scores), dim=0)
        eff = A[0] - lam * A[1]  # A1 − λ·A2
        head = eff @ v[:, 2 * i * d : 2 * (i + 1) * d]  # (T, 2d)
        if isinstance(attn.subln, torch.nn.RMSNorm):  # diff_subln=False (the ablation) drops it
            rms = torch.sqrt(head.pow(2).mean(-1, keepdim=True) + 1e-5)
            head = head / rms * attn.subln.weight  # RMSNorm
        heads.append(head * (1 - lambda_init))
        maps.append(eff)
    return torch.cat(heads, dim=1) @ attn.c_proj.weight.T, torch.stack(maps)


@pytest.mark.parametrize("pos,subln", [(p, True) for p in POSITIONS] + [("rope", False)])
def test_diff_matches_naive_loop(pos, subln):
    torch.manual_seed(0)
    model = GPT(tiny(pos=pos, block_size=8, diff_subln=subln)).eval()
    attn = model.transformer.h[1].attn
    assert any("subln" in name for name, _ in model.named_parameters()) == subln
    lambdas = (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2)
    with torch.no_grad():  # move λ well away from λinit and make the RMSNorm weight matter
        for p in (*lambdas, *attn.subln.parameters()):
            is_weight = p is getattr(attn.subln, "weight", None)
            p.normal_(0.0, 0.5).add_(p.new_ones(()) if is_weight else 0.0)
        attn.c_proj.weight.normal_(0.0, 0.1)
    assert abs(attn.lam().item() - attn.lambda_init) > 0.1
    x = torch.randn(1, 8, 32)
    if pos == "learned":  # absolute positions are in the embeddings: nothing in this layer
        assert not any("wpe" in name for name, _ in attn.named_parameters())
    want, want_maps = naive_diff_attention(x[0], attn, 1, pos)
    assert torch.allclose(attn(x)[0], want, atol=1e-5)  # fast path
    attn.capture_heads = [0, 1]
    explicit = attn(x)[0]
    assert torch.allclose(explicit, want, atol=1e-5)
    assert torch.allclose(attn.maps[0], want_maps, atol=1e-6)


def test_lambda_and_lambda_init_per_layer():
    torch.manual_seed(0)
    model = GPT(tiny(n_layer=4, n_embd=256))  # d = 64
    for layer, want in enumerate([0.2, 0.35551, 0.47071, 0.55606]):  # 0.8 − 0.6·exp(−0.3·layer)
        attn = model.transformer.h[layer].attn
        assert isinstance(attn.lambda_init, float)
        assert attn.lambda_init == pytest.approx(want, abs=1e-5)
        vectors = (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2)
        assert all(v.shape == (64,) and v.dtype == torch.float32 for v in vectors)
        assert all(0.07 < v.std().item() < 0.13 for v in vectors)  # N(0, 0.1²)
        assert all(abs(v.mean().item()) < 0.05 for v in vectors)
        q1, k1, q2, k2 = (v.tolist() for v in vectors)
        e1 = math.exp(sum(a * b for a, b in zip(q1, k1)))
        e2 = math.exp(sum(a * b for a, b in zip(q2, k2)))
        lam = e1 - e2 + want
        assert attn.lam().item() == pytest.approx(lam, abs=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert attn.lam().dtype == torch.float32  # λ stays fp32 under autocast


@pytest.mark.parametrize("pos", POSITIONS)
def test_fast_path_equals_explicit_path_and_rows_sum_to_one_minus_lambda(pos):
    torch.manual_seed(0)
    model = GPT(tiny(pos=pos)).eval()
    idx = torch.randint(0, 64, (2, 16))
    fast = model(idx)[0]
    explicit, _, maps = model.attention_maps(idx, {0: [0, 1], 1: [1]})
    assert torch.allclose(fast, explicit, atol=1e-5)
    assert maps[0].shape == (2, 2, 16, 16) and maps[1].shape == (2, 1, 16, 16)
    for layer, m in maps.items():
        lam = model.transformer.h[layer].attn.lam()
        rows = (1 - lam).expand(m.shape[:-1])  # A1, A2 rows each sum to 1
        assert torch.allclose(m.sum(-1), rows, atol=1e-5)
        assert torch.all(m.triu(1) == 0)


@pytest.mark.parametrize("split_v", [True, False])
def test_per_head_norm_runs_in_the_activation_dtype(split_v, monkeypatch):
    """Eq. (3)'s RMSNorm under bf16 autocast: its input is bf16 and its weight fp32; the weight
    follows the input, so the norm gets one dtype (a mixed pair runs unfused, and on some torch
    versions returns fp32) and its output stays bf16; in fp32 it is nn.RMSNorm, bit for bit."""
    real = F.rms_norm
    pairs = []  # (input dtype, weight dtype) of every rms_norm call
    monkeypatch.setattr(
        F, "rms_norm", lambda x, s, w, *a: pairs.append((x.dtype, w.dtype)) or real(x, s, w, *a)
    )
    torch.manual_seed(0)
    attn = GPT(tiny()).transformer.h[0].attn
    attn.split_v = split_v  # both fast paths end in the norm
    y = torch.randn(2, 2, 5, 16)
    with torch.no_grad():
        attn.subln.weight.normal_(1.0, 0.2)
    plain = torch.nn.RMSNorm(16, eps=1e-5)
    plain.load_state_dict(attn.subln.state_dict())
    assert torch.equal(attn.subln(y), plain(y))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attn.subln(y.bfloat16()).dtype == torch.bfloat16
        assert attn(torch.randn(2, 16, 32)).dtype == torch.bfloat16
    assert pairs[-1] == (torch.bfloat16, torch.bfloat16)
    assert all(x == w for x, w in pairs), pairs


def test_gradient_reaches_all_four_lambda_vectors_and_maps():
    torch.manual_seed(0)
    model = GPT(tiny(dropout=0.1))  # train mode, attention dropout on
    idx = torch.randint(0, 64, (2, 16))
    _, loss = model(idx, idx)
    loss.backward()
    for block in model.transformer.h:
        attn = block.attn
        lambdas = (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2)
        for p in (*lambdas, attn.subln.weight):
            assert p.grad is not None and p.grad.abs().sum() > 0
    # SEEKR's gradient with respect to the maps
    _, loss, maps = model.attention_maps(idx, {1: [0]}, targets=idx)
    g = torch.autograd.grad(loss, maps[1])[0]
    assert g.shape == maps[1].shape and g.abs().sum() > 0


def test_parameter_count_within_one_percent_of_standard():
    # the README's CPU comparison shape
    shape = dict(vocab_size=320, block_size=256, n_layer=4, n_head=4, n_embd=192)
    standard = GPT(GPTConfig(**shape))
    diff = GPT(GPTConfig(**shape, attention="diff"))
    d = 192 // 4
    extra = 4 * (4 * d + 2 * d)  # per layer: four λ vectors + RMSNorm(2d)
    assert diff.num_params() - standard.num_params() == extra
    assert diff.num_params() / standard.num_params() < 1.01
    lambdas = [p for n, p in diff.named_parameters() if "lambda" in n]
    assert all(p.dim() < 2 for p in lambdas)  # no weight decay on λ


def test_clear_errors():
    with pytest.raises(ConfigError, match="must be even; got --n_head=3"):
        tiny(n_head=3, n_embd=48)  # the config refuses it, before any module is built
    with pytest.raises(ConfigError, match="not divisible"):
        tiny(n_embd=30)


# the types whose maps are softmax(attention_logits) per (sub-)head; DAPE's conv refines S first
SOFTMAX_OF_LOGITS = [name for name in ATTENTIONS if name != "dape"]


@pytest.mark.parametrize("attention", SOFTMAX_OF_LOGITS)
def test_outlier_logits_are_the_pre_softmax_scores(attention):
    """Each layer's attention_logits give back its maps through softmax (paired heads: A1 − λ·A2 of
    sub-head pairs), and eval's outlier_stats reports their maximum and the maximum |x| of the block
    outputs."""
    from eval import outlier_stats

    torch.manual_seed(0)
    model = GPT(tiny(attention=attention)).eval()
    tokens = torch.randint(0, 64, (3 * 16 + 1,)).numpy().astype("uint16")
    idx = torch.from_numpy(tokens[:48].astype("int64")).view(3, 16)
    n = model.transformer.h[0].attn.n_head
    _, _, maps = model.attention_maps(idx, {0: range(n), 1: range(n)})
    x = model.transformer.wte(idx)
    top_logit = -math.inf
    top_hidden = -math.inf
    for layer, block in enumerate(model.transformer.h):
        logits = block.attn.attention_logits(block.ln_1(x))  # (B, n_qk_heads, T, T)
        probs = logits.softmax(-1)
        if ATTENTIONS[attention].paired_heads:
            probs = probs[:, 0::2] - block.attn.lam() * probs[:, 1::2]
        assert torch.allclose(probs, maps[layer], atol=1e-6)
        x = block(x)
        top_logit = max(top_logit, logits.max().item())
        top_hidden = max(top_hidden, x.abs().max().item())
    autocast = torch.autocast("cpu", enabled=False)
    stats, windows = outlier_stats(model, tokens, 16, 2, 2, "cpu", autocast)
    assert windows == 3  # 3 whole windows of 16 (+1) tokens, though 2 batches of 2 were asked for
    hooks = [b._forward_hooks or b.attn._forward_pre_hooks for b in model.transformer.h]
    assert not any(hooks)  # removed
    assert stats["logit"][0] == pytest.approx(top_logit)
    assert stats["hidden"][0] == pytest.approx(top_hidden)
