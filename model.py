"""A GPT in one file: GPTConfig and GPT, nanoGPT-shaped, and the one way to build a run's model.

The file, top to bottom:
GPTConfig       the model's fields, declared once (a run's Config inherits them); __post_init__
                holds every model rule (RANGES, choices, pos=auto, what the attention class
                declares), so a bad config is refused wherever one is built
MLP, Block, GPT the network; GPT.attention_maps() and GPT.set_q_chunk() are the doors into attention
positions_in_words  an attention type's positions, for GPTConfig's error
model_config    a run's config (train.Config, or the dict in a checkpoint) -> its GPTConfig;
                model_keys, shape_keys, HOW_COMPUTED: which of its fields a checkpoint fixes
peak_flops      a known GPU's bf16 peak, for MFU

Design choices, up front:
- Pre-norm blocks, x + attn(norm(x)), x + mlp(norm(x)); GELU MLP 4× wide; a final norm; LayerNorm or
  RMSNorm.
- Tied embeddings: lm_head shares its weight with the token embedding (GPT-2). No biases by default.
- GPT-2's own weights (gpt2.py) set options whose defaults change nothing: bias, pos=learned,
  gelu=tanh (GPT-2's approximate GELU), n_vocab (GPT.logits masks the padding's logits).
- Init N(0, 0.02); residual projections (every `c_proj`) N(0, 0.02/√(2·n_layer)) so the residual
  stream's variance does not grow with depth (GPT-2 paper, §2.3).
- Attention (and the positions that live inside it: rope, alibi, kerple) comes from
  attention.make_attention; `learned` absolute positions are the only ones added here, to the
  embeddings. pos=auto means the attention type's default_pos (rope; kerple for DAPE V2).
- forward returns (logits, loss) like nanoGPT; logits cover every position (SEEKR and eval need them
  all). Targets of -1 are ignored, so answer-only losses need no other code path.
- attention_maps() runs the explicit attention path on chosen (layer, head)s and returns their maps:
  the one door through which SEEKR (and anyone curious) reads attention.
"""

import dataclasses
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from attention import ATTENTIONS, POSITIONS, make_attention
from plumbing import ConfigError, check_choice, check_ranges

NORMS = ("layernorm", "rmsnorm")
GELUS = ("none", "tanh")  # F.gelu's approximate=: tanh is GPT-2's (gpt2.py)
CHOICES = dict(attention=ATTENTIONS, pos=("auto", *POSITIONS), norm=NORMS, gelu=GELUS)
RANGES = dict(  # [ includes the end, ( excludes it
    vocab_size="[1, inf)",
    block_size="[2, inf)",
    n_layer="[1, inf)",
    n_head="[1, inf)",
    n_embd="[1, inf)",
    dropout="[0, 1)",
    rope_base="(0, inf)",
    dape_kernel="[1, inf)",
    dape_channels="[1, inf)",
    dape_q_chunk="[0, inf)",
    n_vocab="[0, inf)",
)


@dataclass
class GPTConfig:
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 64 for speed
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False
    attention: str = "standard"  # the attention type (attention.py: ATTENTIONS)
    pos: str = "auto"  # auto: the attention type's default_pos (rope; kerple for dape)
    norm: str = "layernorm"  # LayerNorm's eps is 1e-5, GPT-2's
    gelu: str = "none"  # F.gelu's approximate: none (exact erf) or tanh (GPT-2's weights)
    # the tokenizer's ids, when logits past them (the padding) are never sampled or scored: GPT-2's
    # weights (gpt2.py) set it, their padded rows were never trained; 0: no mask
    n_vocab: int = 0
    rope_base: float = 10000.0
    dape_kernel: int = 3  # DAPE V2 conv kernel (1, k) along keys
    dape_channels: int = 32  # DAPE V2 hidden channels D
    # DAPE V2 query rows per chunk (0: all): the lower triangle only, same numbers to float
    # rounding; faster on CPU (docs/dape.md, Speed); compiled code runs the full grid
    dape_q_chunk: int = 32
    # diff's per-head RMSNorm (eq. 3); false only as an ablation (docs/diff.md)
    diff_subln: bool = True
    # recompute each block in backward: less memory, ~1/3 more compute
    activation_checkpointing: bool = False

    def __post_init__(self):
        """Every rule of the model's shape; a run's Config inherits it. The rules that depend on the
        attention type read what its class declares (attention.Attention)."""
        check_ranges(self, RANGES)
        check_choice("attention", self.attention, CHOICES["attention"])
        kind = ATTENTIONS[self.attention]
        if self.pos == "auto":
            self.pos = kind.default_pos
        check_choice("pos", self.pos, CHOICES["pos"])
        check_choice("norm", self.norm, CHOICES["norm"])
        check_choice("gelu", self.gelu, CHOICES["gelu"])
        if self.n_vocab > self.vocab_size:
            raise ConfigError(
                f"n_vocab={self.n_vocab} is more than vocab_size={self.vocab_size}, the embedding "
                "rows; the padding follows the tokenizer's ids"
            )
        if self.pos not in kind.positions:
            raise ConfigError(
                f"--attention={self.attention} takes --pos={positions_in_words(kind)}, "
                f"not --pos={self.pos}"
            )
        if self.dape_kernel % 2 == 0:
            raise ConfigError(
                f"--dape_kernel={self.dape_kernel} must be odd, "
                "so that padding k//2 keeps key positions"
            )
        if self.n_embd % self.n_head:
            raise ConfigError(f"--n_embd={self.n_embd} is not divisible by --n_head={self.n_head}")
        if kind.paired_heads and self.n_head % 2:
            raise ConfigError(
                f"--attention={self.attention} pairs heads into n_head/2 {kind.head_kind} heads, "
                f"so --n_head must be even; got --n_head={self.n_head}"
            )
        head_size = self.n_embd // self.n_head
        if self.pos == "rope" and head_size % 2:  # RoPE rotates channel pairs
            raise ConfigError(
                f"--pos=rope needs an even head size, and --n_embd={self.n_embd} / "
                f"--n_head={self.n_head} = {head_size}; "
                "change --n_embd or --n_head, or use another --pos"
            )


def make_norm(config):
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.gelu = config.gelu

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.gelu)))


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1, self.ln_2 = make_norm(config), make_norm(config)
        self.attn = make_attention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, tables=None):
        """tables: this forward's position tables, shared by every layer (attention.shared)."""
        h = self.ln_1(x)
        if self.recompute_attention(h):  # keep h only; the attention runs again in backward
            a = checkpoint(self.attn, h, tables)
        else:
            a = self.attn(h, tables)
        x = x + a
        return x + self.mlp(self.ln_2(x))

    def recompute_attention(self, h):
        """True in training when the attention declares a score count it recomputes past
        (recompute_above) and this batch's B·n_head·T² passes it."""
        limit = self.attn.recompute_above
        if limit is None or not (self.training and torch.is_grad_enabled()):
            return False
        B, T, _ = h.shape
        return B * self.attn.n_head * T * T > limit


def checkpoint(module, x, tables):
    """module(x, tables), its activations recomputed in backward instead of kept. The region gets
    its own copy of the shared tables: under torch.compile it may not change anything outside
    itself, so it reads what earlier layers built and keeps what it builds."""

    def run(x, tables):
        return module(x, dict(tables))

    return torch.utils.checkpoint.checkpoint(run, x, tables, use_reentrant=False)


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=make_norm(config),
            )
        )
        if config.pos == "learned":
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied embeddings
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections, scaled by 1/√(2·n_layer)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding=False):
        """Parameter count (tied weights once). non_embedding drops the position table, which does
        no matmul."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None):
        logits = self.logits(self.features(idx))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss

    def features(self, idx):
        """The final-normed hidden states (B, T, C) that lm_head turns into logits; eval on long
        sequences scores only their tail, which spares the (T, vocab) logits."""
        B, T = idx.shape
        x = self.transformer.wte(idx)  # (B, T, C)
        if "wpe" in self.transformer:
            if T > self.config.block_size:
                raise ConfigError(
                    f"sequence of {T} tokens is longer than --block_size={self.config.block_size}, "
                    "the limit of learned positions; use a shorter input or --pos=rope"
                )
            x = x + self.transformer.wpe(torch.arange(T, device=idx.device))
        x = self.transformer.drop(x)
        recompute = self.config.activation_checkpointing and self.training
        recompute = recompute and torch.is_grad_enabled()
        # RoPE's cos/sin, the distances, masks and ALiBi's bias: built by the first layer that
        # needs them, read by the rest (attention.shared); per forward, so nothing outlives it
        tables = {}
        for block in self.transformer.h:
            if recompute:
                x = checkpoint(block, x, tables)
            else:
                x = block(x, tables)
        return self.transformer.ln_f(x)

    def logits(self, x):
        """lm_head(x); with config.n_vocab, the padding's logits (ids n_vocab and up) at the
        dtype's lowest finite value: softmax gives them exactly 0, so they are never sampled or
        scored, and 0·log p stays 0 in SEEKR's distillation (-inf would make it nan)."""
        logits = self.lm_head(x)
        n = self.config.n_vocab
        if n and n < logits.size(-1):  # in place: a linear's backward never reads its output
            logits[..., n:] = torch.finfo(logits.dtype).min
        return logits

    def load_weights(self, state, source):
        """load_state_dict, with a checkpoint whose weights do not fit this model (a hand-edited or
        foreign file) as one ConfigError naming the source. Learned positions longer than this
        model's block_size are cropped to it (nanoGPT's crop_block_size: GPT-2's 1024 to a
        smaller --block_size)."""
        wpe = state.get("transformer.wpe.weight")
        if wpe is not None and "wpe" in self.transformer and len(wpe) > self.config.block_size:
            state = {**state, "transformer.wpe.weight": wpe[: self.config.block_size]}
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError) as e:
            lines = str(e).strip().splitlines() or [type(e).__name__]
            reason = lines[1].strip() if len(lines) > 1 else lines[0]
            raise ConfigError(
                f"{source}: its weights do not fit the model its config describes "
                f"({reason[:160]}); pass a checkpoint written by train.py"
            ) from None

    def attention_maps(self, idx, heads, targets=None):
        """Forward pass that also returns attention maps: heads = {layer: [head, ...]} ->
        (logits, loss, {layer: (B, len(heads), T, T)}). Maps stay in the autograd graph."""
        blocks = self.transformer.h
        try:
            for layer, hs in heads.items():
                blocks[layer].attn.capture_heads = list(hs)
            logits, loss = self(idx, targets)
            maps = {layer: blocks[layer].attn.maps for layer in heads}
        finally:
            for block in blocks:
                block.attn.capture_heads, block.attn.maps = None, None
        return logits, loss, maps

    def set_q_chunk(self, q_chunk):
        """Query rows per chunk (0: all at once) for every layer that chunks its queries (DAPE V2's,
        the ones with a q_chunk), which bounds the memory of a long no-grad forward; the other
        attention types have no chunks and ignore it."""
        for block in self.transformer.h:
            if hasattr(block.attn, "q_chunk"):
                block.attn.q_chunk = q_chunk

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Append max_new_tokens sampled tokens to idx (B, T). temperature 0 is greedy decoding."""
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size :]  # the last block_size tokens at most
            logits = self(context)[0][:, -1, :].float()
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, next_id), dim=1)
        return idx

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW with weight decay on matrices (dim ≥ 2) only; norms, biases and λ-like vectors are
        not decayed."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(
            groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {})
        )

    def flops_per_token(self, T=None):
        """Training FLOPs per token (forward + backward) at sequence length T (default block_size),
        counted by torch.utils.flop_counter on a copy on the meta device (no memory, no compute):
        every matmul, the attention products as the attention type computes them (diff's two maps,
        DAPE V2's convs) and the lm_head. Cached per (config, T). For standard attention it is
        within ~0.1% of nanoGPT's 6N + 12·L·C·T."""
        return counted_flops_per_token(self.config, T or self.config.block_size)

    def estimate_mfu(self, tokens_per_sec, peak):
        """Model FLOPs utilisation: achieved training FLOP/s over the device's peak (None if
        unknown)."""
        return None if not peak else self.flops_per_token() * tokens_per_sec / peak


def positions_in_words(kind):
    """An attention class's positions for an error: "kerple (its default), alibi or nope"."""
    names = [f"{kind.default_pos} (its default)"]
    names += [p for p in kind.positions if p != kind.default_pos]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


DERIVED = ("vocab_size",)  # the tokenizer's, padded (model_config's n_vocab); never a run setting
HOW_COMPUTED = ("activation_checkpointing", "dape_q_chunk")  # time and memory only, no number


def model_keys(run):
    """GPTConfig's fields that a run config sets, in GPTConfig's order, but the DERIVED ones.
    run: a dataclass (train.Config, which inherits GPTConfig: every field) or a checkpoint's config
    dict (one written before a field existed lacks it; model_config takes GPTConfig's default)."""
    have = run if isinstance(run, dict) else vars(run)
    return [
        f.name for f in dataclasses.fields(GPTConfig) if f.name in have and f.name not in DERIVED
    ]


def shape_keys(run):
    """The model_keys a checkpoint's weights fix (what --init_from and --resume take over or
    refuse to change): all but HOW_COMPUTED."""
    return [k for k in model_keys(run) if k not in HOW_COMPUTED]


def model_config(run, n_vocab):
    """GPTConfig for a run; the vocabulary is the tokenizer's n_vocab padded to a multiple of 64
    (faster matmuls; GPT-2: 50257 -> 50304), whatever vocab_size the run holds."""
    values = run if isinstance(run, dict) else vars(run)
    vocab_size = (n_vocab + 63) // 64 * 64
    if values.get("n_vocab", 0) not in (0, n_vocab):  # the mask would hide the tokenizer's ids
        raise ConfigError(
            f"--n_vocab={values['n_vocab']} is not the tokenizer's {n_vocab} ids; pass "
            f"--n_vocab={n_vocab} (the padding's logits masked) or 0"
        )
    return GPTConfig(vocab_size=vocab_size, **{k: values[k] for k in model_keys(run)})


_FLOPS = {}  # (config, T) -> counted training FLOPs per token


def counted_flops_per_token(config, T):
    config = dataclasses.replace(config, activation_checkpointing=False)  # MFU counts no recompute
    key = (tuple(dataclasses.asdict(config).items()), T)
    if key not in _FLOPS:
        from torch.utils.flop_counter import FlopCounterMode

        with torch.device("meta"):
            model = GPT(config)
            idx = torch.zeros(1, T + 1, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            model(idx[:, :-1], idx[:, 1:])[1].backward()
        _FLOPS[key] = counter.get_total_flops() / T
    return _FLOPS[key]


# Dense bf16 tensor-core peak TFLOP/s by the exact name torch.cuda.get_device_name() reports
# (vendor datasheets, no sparsity). An unknown GPU gets no MFU unless --peak_tflops gives its peak.
PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.4,
    "NVIDIA H100 PCIe": 756.5,
    "NVIDIA H100 NVL": 835.5,
    "NVIDIA H200": 989.4,
    "NVIDIA GH200 480GB": 989.4,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA L40S": 362.1,
    "NVIDIA L40": 181.0,
    "NVIDIA L4": 121.0,
    "NVIDIA A10": 125.0,
    "NVIDIA A10G": 70.0,
    "NVIDIA GeForce RTX 4090": 165.2,
    "NVIDIA GeForce RTX 3090": 71.0,
}


def peak_flops(device):
    """Dense bf16 peak FLOP/s of a known GPU (PEAK_TFLOPS, by exact name), else None (then no MFU
    is printed)."""
    if device.type != "cuda":
        return None
    tflops = PEAK_TFLOPS.get(torch.cuda.get_device_name(device))
    return tflops * 1e12 if tflops else None
