"""GPT and standard attention: shapes, causality, fast == explicit, naive references (helpers.py)
for RoPE, ALiBi and Kerple; GPTConfig's rules and the attention declarations that drive them; a
run's model config (model_keys, shape_keys, model_config); set_q_chunk."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import naive_attention_probs, tiny

from attention import ATTENTIONS, POSITIONS, alibi_slopes, apply_rope, rope_cos_sin
from model import (
    DERIVED,
    GPT,
    HOW_COMPUTED,
    NORMS,
    GPTConfig,
    model_config,
    model_keys,
    positions_in_words,
    shape_keys,
)
from plumbing import ConfigError

STANDARD = ATTENTIONS["standard"].positions  # the positions standard attention takes
RELATIVE = [p for p in STANDARD if p != "learned"]  # learned positions stop at block_size


@pytest.mark.parametrize("pos", STANDARD)
@pytest.mark.parametrize("norm", NORMS)
def test_shapes_and_loss(pos, norm):
    torch.manual_seed(0)
    model = GPT(tiny(pos=pos, norm=norm))
    idx, targets = torch.randint(0, 64, (2, 3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 64) and logits.dtype == torch.float32
    assert loss.shape == () and abs(loss.item() - math.log(64)) < 0.5  # near uniform at init
    assert model(idx)[1] is None


EVERY_ATTENTION = [(name, pos) for name, kind in ATTENTIONS.items() for pos in kind.positions]


@pytest.mark.parametrize("attention, pos", EVERY_ATTENTION)
def test_causality(attention, pos):
    """Changing token t+1 never changes the logits at positions <= t, on the fast and on the
    explicit path."""
    torch.manual_seed(0)
    model = GPT(tiny(attention=attention, pos=pos)).eval()
    idx = torch.randint(0, 64, (2, 16))
    for t in (0, 7, 14):
        changed = idx.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % 64
        for run in (lambda i: model(i)[0], lambda i: model.attention_maps(i, {0: [0], 1: [1]})[0]):
            a, b = run(idx), run(changed)
            assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6)
            assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


@pytest.mark.parametrize("pos", STANDARD)
def test_fast_path_equals_explicit_path(pos):
    torch.manual_seed(0)
    model = GPT(tiny(pos=pos)).eval()
    idx = torch.randint(0, 64, (2, 16))
    fast = model(idx)[0]
    explicit, _, maps = model.attention_maps(idx, {l: range(4) for l in range(2)})
    assert torch.allclose(fast, explicit, atol=1e-5)
    assert all(b.attn.capture_heads is None for b in model.transformer.h)  # reset afterwards
    assert maps[0].shape == (2, 4, 16, 16)


@pytest.mark.parametrize("pos", STANDARD)
def test_explicit_maps_match_naive_loop(pos):
    torch.manual_seed(0)
    model = GPT(tiny(pos=pos, block_size=8)).eval()
    idx = torch.randint(0, 64, (1, 8))
    _, _, maps = model.attention_maps(idx, {1: [0, 1, 2, 3]})
    x = model.transformer.wte(idx)[0]
    if pos == "learned":  # absolute positions live in the embeddings, not in attention
        x = x + model.transformer.wpe.weight[:8]
    x = model.transformer.h[0](x[None])[0]  # input of layer 1 = output of block 0
    want = naive_attention_probs(model.transformer.h[1].ln_1(x), model.transformer.h[1].attn, pos)
    assert torch.allclose(maps[1][0], want, atol=1e-5)
    assert torch.allclose(maps[1].sum(-1), torch.ones(1, 4, 8), atol=1e-5)  # rows sum to 1


def test_selected_heads_and_gradients_through_maps():
    torch.manual_seed(0)
    model = GPT(tiny())
    idx = torch.randint(0, 64, (2, 16))
    _, loss, maps = model.attention_maps(idx, {0: [2], 1: [0, 3]}, targets=idx)
    _, _, all_maps = model.attention_maps(idx, {0: range(4), 1: range(4)})
    assert maps[0].shape == (2, 1, 16, 16) and maps[1].shape == (2, 2, 16, 16)
    assert torch.allclose(maps[1], all_maps[1][:, [0, 3]])
    g = torch.autograd.grad(loss, maps[1])[0]  # the maps are what the output was computed from
    assert g.shape == maps[1].shape and g.abs().sum() > 0
    assert torch.all(maps[1].triu(1) == 0)


def test_rope_rotation_is_relative():
    """q_m·k_n after RoPE depends only on m − n (RoFormer's defining property) and preserves
    norms."""
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    cos, sin = rope_cos_sin(40, 16, 10000.0, "cpu")
    rot = lambda x, t: apply_rope(x, cos[t : t + 1], sin[t : t + 1])
    dots = [(rot(q, m) * rot(k, m - 5)).sum() for m in (5, 17, 39)]
    assert torch.allclose(torch.stack(dots), dots[0].expand(3), atol=1e-5)
    assert torch.allclose(rot(q, 23).norm(), q.norm(), atol=1e-5)


def counting(monkeypatch, name):
    """Count the calls of attention.<name> from now on: a list that grows by one per call."""
    import attention

    calls = []
    real = getattr(attention, name)
    monkeypatch.setattr(attention, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_position_tables_are_built_once_per_forward(attention, monkeypatch):
    """RoPE's cos/sin, the i − j distances and the future mask are the same in every layer: one
    forward through 3 layers builds each once, and gives the numbers of layers that build their
    own (tables=None)."""
    torch.manual_seed(0)
    kind = ATTENTIONS[attention]
    for pos in [p for p in kind.positions if p != "learned"]:
        model = GPT(tiny(attention=attention, pos=pos, n_layer=3)).eval()
        model.set_q_chunk(5)  # DAPE's chunks read blocks of the same tables
        idx = torch.randint(0, 64, (2, 12))
        with torch.no_grad():
            x = model.transformer.wte(idx)
            for block in model.transformer.h:  # every layer on its own: builds its own tables
                x = x + block.attn(block.ln_1(x))
                x = x + block.mlp(block.ln_2(x))
            want = model.lm_head(model.transformer.ln_f(x))
        built = {name: counting(monkeypatch, name) for name in TABLES}
        with torch.no_grad():
            logits = model(idx)[0]
        assert torch.equal(logits, want), pos
        assert all(len(calls) <= 1 for calls in built.values()), (pos, built)
        assert len(built["rope_cos_sin"]) == (pos == "rope")
        monkeypatch.undo()


TABLES = ("rope_cos_sin", "causal_distance", "future_mask", "alibi_slopes")


def test_alibi_bias_and_mask_are_built_once_per_forward(monkeypatch):
    """ALiBi's (H, T, T) bias and its SDPA mask are the same in every layer (Kerple's p, a are
    per layer: only its distances are shared)."""
    torch.manual_seed(0)
    for pos, per_forward in (("alibi", 1), ("kerple", 3)):
        model = GPT(tiny(pos=pos, n_layer=3))
        biases = []
        for block in model.transformer.h:
            real = block.attn.relative_bias
            block.attn.relative_bias = lambda d, real=real: biases.append(1) or real(d)
        masks = counting(monkeypatch, "mask_future")
        model(torch.randint(0, 64, (2, 12)))
        assert len(biases) == per_forward and len(masks) == per_forward, pos
        monkeypatch.undo()


def test_alibi_slopes():
    assert torch.allclose(alibi_slopes(8), torch.tensor([2 ** -(i + 1) for i in range(8)]))
    # not a power of two: the 4 slopes of H=4, then every other slope of H=8 (Press et al.'s recipe)
    assert torch.allclose(alibi_slopes(6), torch.tensor([2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]))


def test_init_tied_and_param_groups():
    torch.manual_seed(0)
    cfg = tiny(n_layer=4, n_embd=64, vocab_size=256)
    model = GPT(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert abs(model.transformer.wte.weight.std().item() - 0.02) < 0.002
    assert abs(model.transformer.h[0].mlp.c_proj.weight.std().item() - 0.02 / math.sqrt(8)) < 0.001
    n_block = 12 * 64 * 64 + 2 * 64  # attention 4C², MLP 8C², two LayerNorm weights
    assert model.num_params() == 256 * 64 + 4 * n_block + 64
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() < 2 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()
    nanogpt = 6 * model.num_params() + 12 * 4 * 64 * 16  # nanoGPT's 6N + 12·L·C·T
    assert model.flops_per_token() == pytest.approx(nanogpt, rel=5e-3)  # counted


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(tiny())
    idx = torch.randint(0, 64, (4, 16))
    opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), "cpu")
    first = model(idx[:, :-1], idx[:, 1:])[1].item()
    for _ in range(60):
        loss = model(idx[:, :-1], idx[:, 1:])[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_ignore_index_and_generate():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 64, (2, 8))
    targets = idx.clone()
    targets[:, :5] = -1
    logits, loss = model(idx, targets)
    want = F.cross_entropy(logits[:, 5:].reshape(-1, 64), idx[:, 5:].reshape(-1))
    assert torch.allclose(loss, want)
    out = model.generate(idx, 20, temperature=0)  # runs past block_size 16 by cropping the context
    assert out.shape == (2, 28) and torch.equal(out[:, :8], idx)
    assert out[0, 8].item() == model(idx)[0][0, -1].argmax().item()  # greedy
    sampled = model.generate(idx, 5, temperature=1.0, top_k=1)
    assert torch.equal(sampled, model.generate(idx, 5, temperature=0))  # top_k=1 is greedy


def test_learned_positions_refuse_longer_inputs_and_bad_config():
    model = GPT(tiny(pos="learned"))
    with pytest.raises(ConfigError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ConfigError, match="did you mean rope"):
        tiny(pos="rop")
    with pytest.raises(ConfigError, match="not divisible"):
        tiny(n_embd=30)
    with pytest.raises(ConfigError, match="even head size"):  # 4 heads of 25: RoPE rotates pairs
        tiny(n_embd=100, n_head=4, pos="rope")
    assert tiny(n_embd=100, n_head=4, pos="alibi").pos == "alibi"  # others take odd head sizes


@pytest.mark.parametrize("pos", RELATIVE)
def test_longer_than_block_size_works_for_relative_positions(pos):
    model = GPT(tiny(pos=pos)).eval()
    assert model(torch.zeros(1, 40, dtype=torch.long))[0].shape == (1, 40, 64)


def test_config_refuses_unknown_attention_and_odd_diff_heads_in_one_line():
    with pytest.raises(ConfigError) as e:
        tiny(attention="difff")
    names = ", ".join(ATTENTIONS)
    assert str(e.value) == f"--attention=difff is not one of {names} (did you mean diff?)"
    with pytest.raises(ConfigError) as e:
        tiny(attention="diff", n_head=3, n_embd=48)
    assert str(e.value) == (
        "--attention=diff pairs heads into n_head/2 differential heads, so --n_head must be "
        "even; got --n_head=3"
    )
    assert tiny(attention="standard", n_head=3, n_embd=48).n_head == 3  # odd: diff's problem only


@pytest.mark.parametrize("name", ATTENTIONS)
def test_declared_properties_drive_the_config_rules(name):
    """What an attention class declares is what GPTConfig enforces: pos=auto is its default_pos,
    every position outside `positions` is refused naming the allowed ones, paired_heads refuses an
    odd n_head, and own_fields are GPTConfig fields."""
    kind = ATTENTIONS[name]
    assert kind.default_pos in kind.positions and set(kind.positions) <= set(POSITIONS)
    assert tiny(attention=name).pos == kind.default_pos
    for pos in kind.positions:
        assert tiny(attention=name, pos=pos).pos == pos
    for pos in set(POSITIONS) - set(kind.positions):
        with pytest.raises(ConfigError) as e:
            tiny(attention=name, pos=pos)
        assert str(e.value) == (
            f"--attention={name} takes --pos={positions_in_words(kind)}, not --pos={pos}"
        )
        assert all(p in str(e.value) for p in kind.positions)
    odd = dict(attention=name, n_head=3, n_embd=48, pos=kind.default_pos)
    if kind.paired_heads:
        with pytest.raises(ConfigError, match=f"{kind.head_kind} heads, so --n_head must be even"):
            tiny(**odd)
    elif kind.default_pos != "rope":  # rope's own rule wants an even head size (48/3 = 16 is)
        assert tiny(**odd).n_head == 3
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    assert set(kind.own_fields) <= fields


def test_dape_positions_message_is_todays():
    kind = ATTENTIONS["dape"]
    assert positions_in_words(kind) == "kerple (its default), alibi or nope"


def test_model_keys_and_model_config_from_a_run_dataclass_or_dict():
    @dataclasses.dataclass
    class Run:  # a run's config: some GPTConfig fields among its own
        lr: float = 1e-3
        n_head: int = 2
        block_size: int = 8
        attention: str = "diff"
        tokenizer: str = "gpt2"

    run = Run()
    keys = ["block_size", "n_head", "attention"]
    assert model_keys(run) == model_keys(dataclasses.asdict(run)) == keys
    for r in (run, dataclasses.asdict(run)):
        cfg = model_config(r, n_vocab=50257)
        assert cfg.vocab_size == 50304
        assert (cfg.block_size, cfg.n_head, cfg.attention) == (8, 2, "diff")
        assert cfg.n_layer == 6 and cfg.rope_base == 10000.0  # GPTConfig's defaults for the rest
    assert model_config(run, n_vocab=64).vocab_size == 64
    assert model_config(run, n_vocab=65).vocab_size == 128
    with pytest.raises(ConfigError, match="must be even"):  # checked by GPTConfig's rules
        model_config(Run(n_head=3), n_vocab=64)


def test_model_config_from_a_run_config_that_inherits_gptconfig():
    """train.Config inherits GPTConfig: every model field is the run's but vocab_size, which comes
    from the tokenizer; a checkpoint's config dict written before vocab_size and rope_base were
    run fields lacks them and gets GPTConfig's defaults."""

    @dataclasses.dataclass
    class Run(GPTConfig):
        lr: float = 1e-3
        tokenizer: str = "gpt2"

    run = Run(n_head=2, n_embd=32, attention="dape", rope_base=500.0, vocab_size=7)
    assert run.pos == "kerple"  # GPTConfig.__post_init__ ran for the run config
    fields = [f.name for f in dataclasses.fields(GPTConfig)]
    assert model_keys(run) == [k for k in fields if k not in DERIVED]
    assert shape_keys(run) == [k for k in model_keys(run) if k not in HOW_COMPUTED]
    cfg = model_config(run, n_vocab=257)
    assert type(cfg) is GPTConfig and cfg.vocab_size == 320  # never the run's 7
    assert (cfg.n_head, cfg.attention, cfg.pos, cfg.rope_base) == (2, "dape", "kerple", 500.0)
    old = {k: v for k, v in dataclasses.asdict(run).items() if k not in ("vocab_size", "rope_base")}
    assert "rope_base" not in model_keys(old) and "vocab_size" not in model_keys(old)
    cfg = model_config(old, n_vocab=257)
    assert cfg.vocab_size == 320 and cfg.rope_base == GPTConfig.rope_base
    assert (cfg.n_head, cfg.attention, cfg.pos) == (2, "dape", "kerple")


@pytest.mark.parametrize("name", ATTENTIONS)
def test_set_q_chunk_reaches_the_chunking_layers_only(name):
    """Layers that read dape_q_chunk take set_q_chunk's value; the others have no q_chunk."""
    model = GPT(tiny(attention=name))
    model.set_q_chunk(5)
    if "dape_q_chunk" in ATTENTIONS[name].own_fields:
        assert [b.attn.q_chunk for b in model.transformer.h] == [5, 5]
    else:
        assert not any(hasattr(b.attn, "q_chunk") for b in model.transformer.h)
