"""What several test files share: `from helpers import ...` (pytest puts this folder on sys.path,
its default "prepend" import of a folder without __init__.py; conftest.py adds the repo root for
the project modules).

tiny                   the small GPTConfig every model test starts from, overridden by keyword
one_line_error         a script refused bad input as `error: ...` on one stderr line, exit code 2,
                       no traceback
rotate                 RoPE by hand, pair by pair, from the RoFormer equation
position_bias          the score bias of head h at query i, key j, from the ALiBi / Kerple equations
naive_attention_probs  softmax(q·k/√d + bias) head by head and row by row, from the equation
"""

import math

import torch

from model import GPTConfig


def tiny(**kw):
    """GPTConfig of 2 layers x 4 heads x 32 channels, block 16, vocabulary 64; kw overrides any
    field."""
    cfg = dict(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32)
    return GPTConfig(**{**cfg, **kw})


def one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def rotate(x, base=10000.0):
    """RoPE by hand: row t of x (T, d) has each pair (i, i + d/2) rotated by the angle
    t·base^(−2i/d)."""
    T, d = x.shape
    out = x.clone()
    for t in range(T):
        for i in range(d // 2):
            c = math.cos(t * base ** (-2 * i / d))
            s = math.sin(t * base ** (-2 * i / d))
            a, b = x[t, i], x[t, i + d // 2]
            out[t, i], out[t, i + d // 2] = a * c - b * s, a * s + b * c
    return out


def position_bias(attn, pos, h, i, j):
    """The score bias of head h (of attn.n_head) at query i, key j ≤ i: ALiBi's or Kerple's, 0 for
    the others."""
    if pos == "alibi":
        return -(2 ** (-8 * (h + 1) / attn.n_head)) * (i - j)  # −m_h·(i − j), H a power of two
    if pos == "kerple":
        p, a = attn.kerple.p[h].item(), attn.kerple.a[h].item()
        return -p * math.log(1 + a * (i - j))  # −p_h·log(1 + a_h·(i − j))
    return 0.0


def naive_attention_probs(x, attn, pos):
    """Per-head loop from the equations: softmax(q·k/√d + bias) with j ≤ i, for one batch element
    x (T, C)."""
    T, C = x.shape
    H, d = attn.n_head, C // attn.n_head
    q, k, _ = (x @ attn.c_attn.weight.T).split(C, dim=1)
    probs = torch.zeros(H, T, T)
    for h in range(H):
        qh, kh = q[:, h * d : (h + 1) * d], k[:, h * d : (h + 1) * d]
        if pos == "rope":
            qh, kh = rotate(qh), rotate(kh)
        for i in range(T):
            scores = [
                qh[i] @ kh[j] / math.sqrt(d) + position_bias(attn, pos, h, i, j)
                for j in range(i + 1)
            ]
            probs[h, i, : i + 1] = torch.softmax(torch.stack(scores), dim=0)
    return probs
