"""Attention variants and positional pieces behind one constructor, make_attention(config, layer).

standard  softmax(QKᵀ/√d + bias) V        SDPA fast path (flash when bias-free); explicit path: maps
diff      (softmax(Q1K1ᵀ/√d) − λ·softmax(Q2K2ᵀ/√d)) V, per-head RMSNorm   arXiv 2410.05258
dape      softmax(S + B + conv(tril([S; B]))) V   DAPE V2, arXiv 2410.04798: (1, k) conv on S and B

Positions that live inside attention:
rope      rotary embedding of q and k (Su et al. 2021), half-split pairs as in GPT-NeoX/LLaMA
alibi     bias −m_h·(i − j) with the geometric slopes of Press et al. 2022
kerple    bias −p_h·log(1 + a_h·(i − j)), learnable p_h, a_h ≥ 0.01 (Kerple-log, Chi et al. 2022)
nope      nothing; `learned` absolute positions are added to the embeddings in model.py

The file, top to bottom:
position tables  rope_cos_sin, apply_rope, alibi_slopes, causal_distance, future_mask, mask_future,
                 KerpleLog, and `shared`: one forward's tables, built once and read by every layer
HeadRMSNorm      diff's per-head RMSNorm, in the activations' dtype
Attention        the base every variant shares: c_attn / c_proj / resid_dropout, the position
                 parameters, qkv() (the q/k/v split, RoPE included), the scores q·kᵀ/√d, the
                 position biases, the capture protocol, attention_logits(x) for outlier statistics,
                 map_parts(x) for figures (each variant names its pieces in `parts`), the forward
                 recipe, and what a variant declares (positions, default_pos, paired_heads, ...)
CausalSelfAttention, DiffAttention, DapeV2Attention
                 what each variant adds: its declarations, its fast path and its maps
ATTENTIONS       the registry, name -> class: GPTConfig's rules, --help and the tests read it
make_attention   the one constructor model.py calls; GPTConfig has checked every choice

Every attention module has two paths that compute the same thing:
- fast: F.scaled_dot_product_attention, causal; ALiBi and Kerple go in as an additive mask.
- explicit: the T×T probabilities are materialised. It runs when `capture_heads` is set to a list
  of head indices; the maps of those heads (B, len(heads), T, T) are left in `self.maps`, still
  attached to the autograd graph, so SEEKR can distill them and take gradients with respect to
  them. GPT.attention_maps() drives this.
Position tables are computed per forward from the sequence length, so any length works
(extrapolation). GPT.features makes one dict `tables` per forward and hands it to every layer:
what does not depend on a layer's parameters (RoPE's cos/sin, the i − j distances, the future
mask, ALiBi's bias and SDPA mask) is built by the first layer that asks and read by the others;
Kerple's bias has per-layer p, a and is built per layer from the shared distances. Per forward
rather than cached across forwards: no global state in torch.compile's graph, and a long
evaluation's tables go when its forward ends. A layer called alone (tables None) builds its own.

DAPE V2 materialises the T×T scores, so it cannot use SDPA: its explicit path is its only path.
It runs query rows in chunks of `q_chunk` rows (--dape_q_chunk, default 32; GPT.set_q_chunk in
eval), each against the keys up to its last row + k//2 only: the lower triangle, the same numbers
up to float rounding (the (1, k) kernel mixes along keys only, so rows are independent); under
torch.no_grad() that bounds evaluation memory at long lengths to one chunk of one layer. Under
torch.compile it runs the full grid in one piece (a chunk loop would unroll into the graph and tie
it to the length). Its activations are the largest of any layer (T×T per head, D channels wide in
the conv), so it declares recompute_above: past that many scores model.py recomputes it in the
backward pass rather than keep them (docs/dape.md, Memory).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

POSITIONS = ("rope", "nope", "alibi", "learned", "kerple")


def rope_cos_sin(T, head_dim, base, device):
    """cos, sin of shape (T, head_dim/2) for positions 0..T-1."""
    i2 = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32)  # 2i
    inv_freq = base ** (-i2 / head_dim)  # θ_i = base^(−2i/d)
    t = torch.arange(T, device=device, dtype=torch.float32)
    angles = torch.outer(t, inv_freq)  # (T, d/2)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate pairs (x_i, x_{i+d/2}) of x (B, H, T, d) by position-dependent angles."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # RoFormer eq. (34)
    return rotated.type_as(x)


def alibi_slopes(n_head):
    """m_h = 2^(−8h/H) for h = 1..H, with the paper's interpolation when H is not a power of two."""

    def powers(n):
        return [2 ** (-8 * (h + 1) / n) for h in range(n)]

    if math.log2(n_head).is_integer():
        return torch.tensor(powers(n_head))
    closest = 2 ** math.floor(math.log2(n_head))
    return torch.tensor(powers(closest) + powers(2 * closest)[0::2][: n_head - closest])


def shared(tables, key, build):
    """tables[key], built by build() the first time a layer of this forward asks (tables: the dict
    GPT.features makes per forward); with tables None, built now and not kept."""
    if tables is None:
        return build()
    if key not in tables:
        tables[key] = build()
    return tables[key]


def causal_distance(T, device, i0=0, i1=None):
    """(i1 − i0, T) matrix of i − j for query rows i = i0..i1-1 (default: all T) and keys
    j = 0..T-1; negative above the diagonal."""
    rows = torch.arange(i0, T if i1 is None else i1, device=device)
    return (rows[:, None] - torch.arange(T, device=device)[None, :]).float()


def future_mask(T, device):
    """(T, T) bool, True where key j lies after query i: the entries the causal mask removes."""
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(1)


def mask_future(att, tables=None):
    """att (..., T, T) with −inf on the future keys: the causal mask, on scores before softmax."""
    T = att.size(-1)
    future = shared(tables, "future", lambda: future_mask(T, att.device))
    return att.masked_fill(future, float("-inf"))


class KerpleLog(nn.Module):
    """Kerple-log bias, one learnable (p_h, a_h) per head, kept ≥ 0.01; init p ~ U(0, 2),
    a ~ U(0, 1)."""

    def __init__(self, n_head, eps=0.01):
        super().__init__()
        self.eps = eps
        self.p = nn.Parameter(2 * torch.rand(n_head))
        self.a = nn.Parameter(torch.rand(n_head))

    def forward(self, dist):
        """(Tq, Tk) matrix of i − j -> (H, Tq, Tk) bias; future entries (i − j < 0) get 0, the mask
        handles them."""
        # as Kerple's code: clamp the stored values, so a clamped parameter can recover
        with torch.no_grad():
            self.p.data.clamp_(min=self.eps)
            self.a.data.clamp_(min=self.eps)
        p = self.p[:, None, None]
        a = self.a[:, None, None]
        return -p * torch.log1p(a * dist.clamp(min=0))  # Kerple-log: −p_h·log(1 + a_h·(i − j))


class HeadRMSNorm(nn.RMSNorm):
    """RMSNorm whose weight follows the input's dtype: under bf16 autocast an fp32 weight would
    send a bf16 input down the unfused path and promote the output to fp32."""

    def forward(self, x):
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)


class Attention(nn.Module):
    """What every variant shares. n_head attention heads (the ones capture_heads indexes), each with
    one value head of size n_embd / n_head, and n_qk_heads query/key heads of size
    d = n_embd / config.n_head (standard, dape: n_head of each; diff: 2h sub-heads for its h heads).
    Positions give one bias (or slope) per attention head.

    A subclass calls add_position_params itself, where its construction always did: a seeded init
    draws in construction order (diff: after its λ vectors; DAPE: before its convs), and that order
    keeps the weights. It provides fast(q, k, v, bias) and explicit_map(q, k, bias); forward() is
    the recipe that calls them (DAPE V2, whose one path is chunked, writes its own).

    Each variant declares what GPTConfig's rules and the other files read (never its name):
    positions     the --pos values it takes; default_pos is what --pos=auto means for it
    paired_heads  True when it pairs heads (n_head must be even); head_kind names them in errors
    own_fields    the GPTConfig fields only this variant reads
    signed_maps   True when its maps are not distributions (rows need not sum to 1, entries < 0)
    key_reach     keys past its own position that a query row's scores read (DAPE's conv: k//2)
    recompute_above  a batch's score count (B·n_head·T²) past which training recomputes the layer
                  in the backward pass rather than keep its activations (model.py: Block); None:
                  never (SDPA keeps no T×T tensor)
    """

    positions = POSITIONS
    default_pos = "rope"
    paired_heads = False
    head_kind = "attention"
    own_fields = ()
    signed_maps = False
    recompute_above = None

    @staticmethod
    def key_reach(config):
        return 0

    def __init__(self, config, n_head, n_qk_heads):
        super().__init__()
        self.n_head = n_head
        self.n_qk_heads = n_qk_heads
        self.head_dim = config.n_embd // config.n_head  # d, the size of one q/k head
        self.pos = config.pos
        self.rope_base = config.rope_base
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.capture_heads = None  # list of head indices -> explicit path, maps left in self.maps
        self.maps = None

    def add_position_params(self):
        """The per-head parameters or buffers of self.pos, one per attention head: ALiBi slopes or a
        Kerple-log bias (rope, nope: none)."""
        if self.pos == "alibi":
            self.register_buffer("slopes", alibi_slopes(self.n_head), persistent=False)
        if self.pos == "kerple":
            self.kerple = KerpleLog(self.n_head)

    def forward(self, x, tables=None):
        """x (B, T, C) -> (B, T, C): heads, position bias, the fast path (or the explicit one,
        capturing), project. tables: this forward's shared position tables (`shared`)."""
        q, k, v = self.qkv(x, tables)
        bias = self.position_bias(x.size(1), x.device, tables)
        if self.capture_heads is None:
            y = self.fast(q, k, v, bias, tables)
        else:
            y = self.capture(self.explicit_map(q, k, bias, tables)) @ v
        return self.project(y)

    def qkv(self, x, tables=None):
        """x (B, T, C) -> q, k (B, n_qk_heads, T, d), rotated when pos is rope, and
        v (B, n_head, T, C / n_head)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k = (t.view(B, T, self.n_qk_heads, self.head_dim).transpose(1, 2) for t in (q, k))
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.pos == "rope":
            cos, sin = shared(
                tables, "rope", lambda: rope_cos_sin(T, self.head_dim, self.rope_base, x.device)
            )
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def project(self, y):
        """Heads (B, n_head, T, C / n_head) side by side again (B, T, C), then the output
        projection."""
        B, _, T, _ = y.shape
        y = y.transpose(1, 2).contiguous().view(B, T, -1)
        return self.resid_dropout(self.c_proj(y))

    def dot_scores(self, q, k):
        """S = q·kᵀ/√d of every query row of q against every key of k:
        (B, n_qk_heads, rows, keys)."""
        return (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)

    def softmax_map(self, q, k, bias, tables=None):
        """softmax(S + bias) with the future keys masked, per q/k head: (B, n_qk_heads, T, T),
        materialised. The maps of standard attention and diff's A1, A2 (DAPE refines S before its
        softmax: DapeV2Attention.probs)."""
        att = self.dot_scores(q, k)
        if bias is not None:
            att = att + bias
        return F.softmax(mask_future(att, tables).float(), dim=-1).type_as(q)

    def sdpa_mask(self, bias, dtype, tables, repeat=1):
        """The position bias (n_head, T, T) as an SDPA attn_mask, each head's `repeat` times (diff:
        2, one per map): the bias with −inf on the future keys, in the activations' dtype. ALiBi's
        is the same in every layer: built once per forward."""

        def build():
            return mask_future(bias.repeat_interleave(repeat, dim=0), tables).to(dtype)

        if self.pos == "alibi":
            return shared(tables, ("alibi mask", dtype), build)
        return build()

    def map_parts(self, x):
        """The pieces of this layer's attention that its paper talks about, for figures (eval.py
        --mode=maps), recomputed from the layer's input x (B, T, C): an ordered dict
        {name: (B, n_head, T, T)} with the future entries NaN (the causal mask leaves nothing
        there). What the pieces are is each variant's `parts`."""
        tables = {}
        q, k, _ = self.qkv(x, tables)
        parts = self.parts(q, k, self.position_bias(x.size(1), x.device, tables), tables)
        future = tables["future"]  # parts masked the future with it
        return {name: part.masked_fill(future, float("nan")) for name, part in parts.items()}

    def parts(self, q, k, bias, tables):
        """Standard attention has one piece: the softmax map."""
        return {"softmax": self.explicit_map(q, k, bias, tables)}

    def attention_logits(self, x):
        """q·k/√d of every query/key (sub-)head, recomputed from the layer's input x (B, T, C),
        future entries −inf: (B, n_qk_heads, T, T). Position biases (and DAPE's conv) are not
        included: these are the scores the outlier statistics read (Diff Transformer §3.8)."""
        q, k, _ = self.qkv(x)
        return mask_future(self.dot_scores(q, k))

    def position_bias(self, T, device, tables=None):
        """Additive (n_head, T, T) score bias from positions, or None. Future entries are left to
        the causal mask. ALiBi's is the same in every layer and the distances are, so both are
        built once per forward; Kerple's p, a are per layer."""
        if self.pos not in ("alibi", "kerple"):
            return None
        dist = shared(tables, "distance", lambda: causal_distance(T, device))  # (T, T): i − j
        if self.pos == "alibi":
            return shared(tables, "alibi", lambda: self.relative_bias(dist))
        return self.relative_bias(dist)

    def relative_bias(self, dist):
        """(n_head, Tq, Tk) bias for a (Tq, Tk) matrix of i − j (a block of the T×T one), or
        None."""
        if self.pos == "alibi":
            return -self.slopes.to(dist.device)[:, None, None] * dist  # ALiBi: −m_h·(i − j)
        if self.pos == "kerple":
            return self.kerple(dist)
        return None

    def capture(self, att):
        """Keep the chosen heads' maps in self.maps and return att computed *from* them, so
        gradients with respect to the maps exist (SEEKR's task sensitivity); then attention
        dropout, as on the fast path."""
        idx = torch.tensor(self.capture_heads, device=att.device, dtype=torch.long)
        self.maps = att.index_select(1, idx)  # (B, len(heads), T, T)
        att = att.index_copy(1, idx, self.maps)
        return F.dropout(att, self.dropout, self.training)


class CausalSelfAttention(Attention):
    """Multi-head causal self-attention with rope / alibi / kerple / nope / learned (nothing to do
    here) positions."""

    def __init__(self, config, layer_idx):
        super().__init__(config, n_head=config.n_head, n_qk_heads=config.n_head)
        self.add_position_params()

    def fast(self, q, k, v, bias, tables=None):
        p = self.dropout if self.training else 0.0
        if bias is None:  # flash / cuDNN kernels apply
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        mask = self.sdpa_mask(bias, q.dtype, tables)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)

    def explicit_map(self, q, k, bias, tables=None):
        """Attention probabilities (B, H, T, T), materialised."""
        return self.softmax_map(q, k, bias, tables)


class DiffAttention(Attention):
    """Differential attention (Diff Transformer, arXiv 2410.05258 §2.1) with h = n_head // 2 heads.

    Q and K are split into 2h sub-heads of size d = n_embd / n_head (the baseline's head size, never
    halved), V into h heads of size 2d; head i owns the Q/K sub-heads (2i, 2i+1) as (Q1, Q2),
    (K1, K2). c_attn and c_proj have the baseline's sizes; the extra parameters are the four λ
    vectors (size d) and one RMSNorm weight (size 2d). Positions: rope rotates every sub-head at
    size d; alibi and kerple add one bias per differential head (h slopes, h kerple pairs) to both
    of its score maps; nope and learned need nothing here. capture_heads indexes the h differential
    heads, and the captured map is the effective one, A1 − λ·A2 (negative entries allowed, rows sum
    to 1 − λ). GPTConfig has checked that n_head is even.
    """

    paired_heads = True
    head_kind = "differential"
    own_fields = ("diff_subln",)
    signed_maps = True

    def __init__(self, config, layer_idx):
        # h heads, 2h sub-heads
        super().__init__(config, n_head=config.n_head // 2, n_qk_heads=config.n_head)
        self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * layer_idx)  # λinit, §2.1 (layer_idx 0-based)
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.zeros(self.head_dim, dtype=torch.float32).normal_(0.0, 0.1))
            for _ in range(4)
        )
        # the per-head normalisation of eq. (3); diff_subln=False drops it (the ablation, GPTConfig)
        subln = HeadRMSNorm(2 * self.head_dim, eps=1e-5) if config.diff_subln else nn.Identity()
        self.subln = subln
        self.add_position_params()  # h slopes / kerple pairs, one per differential head
        # None: V in halves when there is no bias or dropout (flash-eligible); a bool forces it
        self.split_v = None

    def lam(self):
        """λ, one scalar per layer, computed in fp32."""
        q1k1 = torch.sum(self.lambda_q1.float() * self.lambda_k1.float())
        q2k2 = torch.sum(self.lambda_q2.float() * self.lambda_k2.float())
        return torch.exp(q1k1) - torch.exp(q2k2) + self.lambda_init  # eq. (2)

    def fast(self, q, k, v, bias, tables=None):
        """(A1 − λ·A2)·V as A1·V − λ·(A2·V), from SDPA calls over all 2h sub-heads at once, each
        sub-head given its head's values (V repeated per sub-head pair). Without a bias or attention
        dropout V goes in its two d-wide halves, two calls, A·[Va, Vb] = [A·Va, A·Vb] (the official
        code's flash variant): q, k and v then share one head size, which the flash kernels need
        (CUDA's, and the CPU's). With a bias or dropout one call takes the 2d-wide V (one dropout
        mask per map, which the halves would not share)."""
        p = self.dropout if self.training else 0.0
        mask = None
        if bias is not None:  # head i's bias on both of its maps
            mask = self.sdpa_mask(bias, q.dtype, tables, repeat=2)

        def attend(values):
            """values (B, 2h, T, ·): sub-head s of q, k applied to them (A1: even s, A2: odd)."""
            return F.scaled_dot_product_attention(
                q, k, values, attn_mask=mask, dropout_p=p, is_causal=mask is None
            )

        split = self.split_v if self.split_v is not None else (mask is None and p == 0.0)
        if split:
            halves = v.chunk(2, dim=-1)
            va, vb = (half.repeat_interleave(2, dim=1) for half in halves)  # (B, 2h, T, d) each
            o = torch.cat([attend(va), attend(vb)], dim=-1)  # (B, 2h, T, 2d)
        else:
            o = attend(v.repeat_interleave(2, dim=1))  # (B, 2h, T, 2d)
        return o[:, 0::2] - self.lam() * o[:, 1::2]  # eq. (1) applied to V

    def explicit_map(self, q, k, bias, tables=None):
        """The effective attention map A1 − λ·A2 (B, h, T, T), materialised."""
        if bias is not None:
            bias = bias.repeat_interleave(2, dim=0)  # head i's bias on both of its maps
        att = self.softmax_map(q, k, bias, tables)  # (B, 2h, T, T)
        return att[:, 0::2] - self.lam() * att[:, 1::2]  # eq. (1): softmax first, then difference

    def parts(self, q, k, bias, tables):
        """A1 (sub-heads 2i), A2 (sub-heads 2i + 1) and the effective map A1 − λ·A2 of each
        differential head (B, h, T, T); λ is self.lam(). Head i's bias goes on both of its maps."""
        return {
            "A1": self.softmax_map(q[:, 0::2], k[:, 0::2], bias, tables),
            "A2": self.softmax_map(q[:, 1::2], k[:, 1::2], bias, tables),
            "A1 − λ·A2": self.explicit_map(q, k, bias, tables),
        }

    def project(self, y):
        """Each head normalised, then the shared output projection."""
        y = self.subln(y) * (1 - self.lambda_init)  # eq. (3): per-head RMSNorm, times (1 − λinit)
        return super().project(y)


class DapeV2Attention(Attention):
    """DAPE V2: S' = S + Bias + conv2(LeakyReLU(conv1(tril([S ; Bias])))), then the causal mask,
    softmax, @ V.

    Bias is kerple, alibi or none (nope: conv1 then sees the H score channels only). The convs have
    kernel (1, k): one query row, k neighbouring keys, zero padding k//2. tril zeroes every future
    score before conv1, so no row sees a key past itself. Its only path materialises S' (no flash
    kernel); with q_chunk > 0 the query rows go in chunks, each against keys up to its last
    row + k//2, which gives the same numbers (see `scores`). recompute_above: at large
    B·H·T² its activations, D channels wide in the conv, are recomputed in backward (model.py).
    """

    positions = ("kerple", "alibi", "nope")  # the conv reads a bias (or none) beside S, never rope
    default_pos = "kerple"
    own_fields = ("dape_kernel", "dape_channels", "dape_q_chunk")
    # it keeps ~25 bytes per score under bf16 (S, [S; B], the D-wide conv activations, softmax):
    # past 2^25 scores (0.8 GB a layer) memory runs out before time does. gpt2 preset: 2^27.6
    recompute_above = 2**25

    @staticmethod
    def key_reach(config):
        return config.dape_kernel // 2  # conv2 reads conv1's output k//2 keys past the diagonal

    def __init__(self, config, layer_idx):
        super().__init__(config, n_head=config.n_head, n_qk_heads=config.n_head)
        self.add_position_params()
        H = self.n_head
        D = config.dape_channels
        k = config.dape_kernel  # odd: GPTConfig checked it (and pos)
        n_in = H if self.pos == "nope" else 2 * H
        self.conv1 = nn.Conv2d(n_in, D, kernel_size=(1, k), padding=(0, k // 2))
        self.conv2 = nn.Conv2d(D, H, kernel_size=(1, k), padding=(0, k // 2))
        self.q_chunk = config.dape_q_chunk  # query rows per chunk, 0: all (GPT.set_q_chunk)

    def forward(self, x, tables=None):
        T = x.size(1)
        q, k, v = self.qkv(x, tables)  # (B, H, T, d); never rotated: rope is not in `positions`
        if self.capture_heads is not None:  # maps need every row at once
            y = self.capture(self.probs(q, k, 0, T, tables)) @ v
            return self.project(y)
        # compiled: the full grid in one piece, as a loop over chunks would unroll into the graph
        # (16 copies at T 1024) and tie it to T
        if not self.q_chunk or torch.compiler.is_compiling():
            return self.project(self.attend(q, k, v, 0, T, tables))
        ys = []
        # last rows first: each chunk's buffers fit in the previous, larger ones (docs/dape.md)
        for i0 in reversed(range(0, T, self.q_chunk)):
            ys.append(self.attend(q, k, v, i0, min(i0 + self.q_chunk, T), tables))
        y = torch.cat(ys[::-1], dim=2)
        return self.project(y)

    def attend(self, q, k, v, i0, i1, tables):
        """softmax(S') V for query rows i0..i1-1, attention dropout included: (B, H, rows, d)."""
        att = F.dropout(self.probs(q, k, i0, i1, tables), self.dropout, self.training)
        return att @ v[:, :, :i1]

    def parts(self, q, k, bias, tables):
        """The scores before the conv, S + Bias (S alone for nope), the conv's correction
        conv2(LeakyReLU(conv1(tril([S ; Bias])))) = S' − (S + Bias), and the map softmax(S'):
        (B, H, T, T) each."""
        T = q.size(-2)
        s = self.dot_scores(q, k)  # S: (B, H, T, T)
        before = s if bias is None else s + bias
        return {
            "S" if bias is None else "S + B": before,
            # S' − (S + Bias): the conv term
            "conv correction": self.scores(q, k, 0, T, tables) - before,
            "softmax(S′)": self.probs(q, k, 0, T, tables),
        }

    def probs(self, q, k, i0, i1, tables=None):
        """softmax(S') for query rows i0..i1-1 over keys 0..i1-1: (B, H, i1 - i0, i1)."""
        att = self.scores(q, k, i0, i1, tables)
        future = self.distances(k.size(-2), q.device, tables)[1]
        att = att.masked_fill(future[i0:i1, :i1], float("-inf"))
        return F.softmax(att.float(), dim=-1).type_as(q)

    def scores(self, q, k, i0, i1, tables=None):
        """S' for query rows i0..i1-1 and keys 0..i1-1 (B, H, i1 - i0, i1), before the causal mask.
        After tril these rows hold zeros at keys ≥ i1, but conv1's output there does not (its bias,
        and scores within k//2), and conv2 reads it up to key i1 - 1 + k//2: keeping keys up to
        n = min(T, i1 + k//2) reproduces the full T×T computation exactly; the extra keys are cut
        after the convs."""
        T = k.size(-2)
        # `i1 == T` first: a min() over the length would tie a compiled graph to it
        n = T if i1 == T else min(T, i1 + self.conv1.padding[1])
        s = self.dot_scores(q[:, :, i0:i1], k[:, :, :n])  # S: (B, H, rows, n)
        dist, future = self.distances(T, q.device, tables)
        return self.refine(s, dist[i0:i1, :n], future[i0:i1, :n])[..., :i1]

    def distances(self, T, device, tables):
        """The (T, T) matrix of i − j and its future mask (j > i), shared by every layer of this
        forward; a chunk reads its block."""
        dist = shared(tables, "distance", lambda: causal_distance(T, device))
        return dist, shared(tables, "future", lambda: future_mask(T, device))

    def refine(self, s, dist, future=None):
        """Scores S (B, H, rows, keys) at offsets dist = i − j (rows, keys) -> S', same shape;
        future: dist < 0, when the caller has it."""
        bias = self.relative_bias(dist)  # (H, rows, keys), None for nope
        feats = s
        if bias is not None:
            feats = torch.cat([s, bias.expand_as(s).type_as(s)], dim=1)  # [S ; Bias]: 2H channels
        future = dist < 0 if future is None else future
        feats = feats.masked_fill(future, 0.0)  # tril: no future score reaches the conv
        # channels_last: the same numbers, faster convs on CPU (docs/dape.md)
        feats = feats.contiguous(memory_format=torch.channels_last)
        # the bias in the scores' dtype: no fp32 promotion under bf16
        bias = 0.0 if bias is None else bias.type_as(s)
        conv = self.conv2(F.leaky_relu(self.conv1(feats)))
        return s + bias + conv  # DAPE V2: S' = S + Bias + conv(tril([S ; Bias]))


ATTENTIONS = {  # --attention name -> class; this order is every list's a user or a test sees
    "standard": CausalSelfAttention,
    "diff": DiffAttention,
    "dape": DapeV2Attention,
}


def make_attention(config, layer_idx):
    """The one constructor model.py calls: the module for config.attention (GPTConfig checked
    it)."""
    return ATTENTIONS[config.attention](config, layer_idx)
