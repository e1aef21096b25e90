"""eval.py --mode=maps and the attention modules' map_parts: each piece against the module's own
path or the paper's equation, the figures from tiny checkpoints of every attention type, and bad
--layers / --heads as one line."""

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import one_line_error, tiny

import eval as evaluate
import plots
import plumbing
import train
from attention import ATTENTIONS
from model import GPT, model_config
from plumbing import ConfigError

ROOT = Path(__file__).resolve().parent.parent
KINDS = [(name, pos) for name, kind in ATTENTIONS.items() for pos in kind.positions]
PIECES = {  # the papers' names; a type not listed here is checked for everything but the names
    "standard": ["softmax"],
    "diff": ["A1", "A2", "A1 − λ·A2"],
    "dape": ["S + B", "conv correction", "softmax(S′)"],
}


def layer_input(model, idx, layer):
    """What the attention of `layer` reads when the model runs on idx: (B, T, C), caught by a
    forward pre-hook."""
    seen = {}
    hook = model.transformer.h[layer].attn.register_forward_pre_hook(
        lambda attn, args: seen.update(x=args[0])
    )
    try:
        model(idx)
    finally:
        hook.remove()
    return seen["x"]


def below(t):
    """The entries on and below the diagonal (j ≤ i) of (..., T, T), flattened per leading index."""
    keep = torch.ones(t.shape[-2:], dtype=torch.bool).tril()
    return t[..., keep]


@pytest.mark.parametrize("attention,pos", KINDS)
@torch.no_grad()
def test_map_parts_names_the_papers_pieces_with_the_future_blank(attention, pos):
    torch.manual_seed(0)
    attn = GPT(tiny(attention=attention, pos=pos)).eval().transformer.h[1].attn
    parts = attn.map_parts(torch.randn(2, 9, 32))
    want = (
        PIECES.get(attention)
        if (attention, pos) != ("dape", "nope")
        else ["S", "conv correction", "softmax(S′)"]
    )
    assert want is None or list(parts) == want
    for piece in parts.values():
        assert piece.shape == (2, attn.n_head, 9, 9)
        assert torch.isnan(piece[..., torch.ones(9, 9, dtype=torch.bool).triu(1)]).all()
        assert torch.isfinite(below(piece)).all()


@pytest.mark.parametrize("pos", ["rope", "alibi"])
@torch.no_grad()
def test_diff_effective_map_is_a1_minus_lambda_a2_and_the_captured_map(pos):
    torch.manual_seed(0)
    model = GPT(tiny(attention="diff", pos=pos)).eval()
    idx = torch.randint(0, 64, (2, 10))
    attn = model.transformer.h[1].attn
    parts = attn.map_parts(layer_input(model, idx, 1))
    a1, a2, effective = (below(parts[name]) for name in PIECES["diff"])
    assert torch.allclose(
        effective, a1 - attn.lam() * a2, atol=1e-6
    )  # eq. (1), from the module's λ
    for name in ("A1", "A2"):  # each a softmax: rows sum to 1
        assert torch.allclose(parts[name].nansum(-1), torch.ones(2, 2, 10))
    q, k, _ = attn.qkv(
        layer_input(model, idx, 1)
    )  # A1: the even sub-heads' softmax, A2: the odd ones'
    bias = attn.position_bias(10, "cpu")
    both = attn.softmax_map(q, k, None if bias is None else bias.repeat_interleave(2, dim=0))
    assert torch.allclose(a1, below(both[:, 0::2]), atol=1e-6) and torch.allclose(
        a2, below(both[:, 1::2]), atol=1e-6
    )
    _, _, maps = model.attention_maps(idx, {1: [0, 1]})
    assert torch.allclose(effective, below(maps[1]), atol=1e-6)


@pytest.mark.parametrize("pos", ATTENTIONS["dape"].positions)
@torch.no_grad()
def test_dape_softmax_of_s_prime_is_the_captured_map(pos):
    torch.manual_seed(0)
    model = GPT(tiny(attention="dape", pos=pos)).eval()
    idx = torch.randint(0, 64, (2, 12))
    parts = model.transformer.h[0].attn.map_parts(layer_input(model, idx, 0))
    _, _, maps = model.attention_maps(idx, {0: [0, 1, 2, 3]})
    assert torch.allclose(below(parts["softmax(S′)"]), below(maps[0]), atol=1e-6)


@torch.no_grad()
def test_dape_s_plus_b_plus_conv_correction_is_s_prime():
    """S + B and the correction against the equation, written out here from the module's weights;
    their sum against the S' the module computes."""
    torch.manual_seed(0)
    model = GPT(tiny(attention="dape", pos="kerple")).eval()
    idx = torch.randint(0, 64, (1, 11))
    attn = model.transformer.h[1].attn
    T = 11
    x = layer_input(model, idx, 1)
    parts = attn.map_parts(x)
    q, k, _ = attn.qkv(x)
    S = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    dist = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    B = -attn.kerple.p[:, None, None] * torch.log1p(
        attn.kerple.a[:, None, None] * dist.clamp(min=0)
    )  # Kerple-log
    feats = torch.cat([S, B.expand_as(S)], dim=1).masked_fill(dist < 0, 0.0)  # tril([S ; B])
    correction = attn.conv2(F.leaky_relu(attn.conv1(feats)))
    assert torch.allclose(below(parts["S + B"]), below(S + B), atol=1e-5)
    assert torch.allclose(below(parts["conv correction"]), below(correction), atol=1e-5)
    assert torch.allclose(
        below(parts["S + B"] + parts["conv correction"]), below(attn.scores(q, k, 0, T)), atol=1e-5
    )


def test_token_labels_show_spaces_and_newlines():
    assert [plots.token_label(t) for t in (" ", "\n", "\t", "a", " return", "\x00")] == [
        "␣",
        "\\n",
        "\\t",
        "a",
        "␣retu…",
        "\\x00",
    ]


# ------------------------------------------------------------------------------------------------
# the mode, from tiny checkpoints


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Untrained tiny checkpoints, one per attention type, in the format train.py writes."""
    tmp = tmp_path_factory.mktemp("maps")
    for attention in ATTENTIONS:
        cfg = train.Config(
            **{**train.PRESETS["tiny"], "out_dir": str(tmp / attention), "attention": attention}
        )
        torch.manual_seed(0)
        model = GPT(model_config(cfg, n_vocab=257))
        (tmp / attention).mkdir()
        plumbing.save_atomic(
            {
                "model": model.state_dict(),
                "model_config": dataclasses.asdict(model.config),
                "config": dataclasses.asdict(cfg),
                "iter": 0,
            },
            tmp / attention / "ckpt.pt",
        )
    return tmp


def test_maps_mode_writes_one_figure_per_checkpoint(runs, capsys):
    ckpts = ",".join(str(runs / a) for a in ATTENTIONS)
    evaluate.main(
        [
            f"--ckpt={ckpts}",
            "--mode=maps",
            "--prompt=if x:\n  y",
            "--layers=1",
            "--heads=0",
            "--device=cpu",
        ]
    )
    first = next(iter(ATTENTIONS))
    written = [runs / first / f"maps_{a}.png" for a in ATTENTIONS]  # the first run's folder
    assert capsys.readouterr().out.split() == [w for f in written for w in ("wrote", str(f))]
    assert all(f.stat().st_size > 0 for f in written)
    evaluate.main(
        [f"--ckpt={runs / first}", "--mode=maps", f"--out={runs / 'one.png'}", "--device=cpu"]
    )
    assert (
        runs / "one.png"
    ).stat().st_size > 0  # defaults: a line of code, the first and last layer, heads 0, 1


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--layers=2"], ["--layers=2 is out of range", "has 2 layers", "indices 0..1"]),
        (["--heads=0,1"], ["--heads=0,1 is out of range", "1 differential head", "indices 0..0"]),
        (
            ["--heads=one"],
            ["--heads=one is not a comma-separated list of head indices (integers >= 0)"],
        ),
        (["--layers=-1"], ["--layers=-1 is not a comma-separated list of layer indices"]),
        (["--out=a.png", "--ckpt=x"], ["names one figure"]),
    ],
)
def test_bad_layers_and_heads_are_refused_with_the_range(runs, flags, words, tmp_path):
    with pytest.raises(ConfigError) as e:
        evaluate.main(
            [f"--ckpt={runs / 'diff'}", "--mode=maps", f"--out={tmp_path}", "--device=cpu", *flags]
        )
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value), str(e.value)
    assert list(tmp_path.iterdir()) == []  # refused before any figure


def test_bad_layers_are_one_line_from_the_script(runs):
    proc = subprocess.run(
        [sys.executable, "eval.py", f"--ckpt={runs / 'dape'}", "--mode=maps", "--layers=0,7"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    one_line_error(proc, "--layers=0,7 is out of range", "indices 0..1")
