"""SEEKR (He et al., EMNLP 2024, arXiv 2411.06171), as its official code does it: the replay
losses with logit and attention distillation, and the choice of the heads worth distilling by
forgettability x task sensitivity under a layer-then-head budget. continual.py runs them task by
task (and the baselines beside them); docs/seekr.md maps each step to the paper.

losses      logit_distill     LD: cross-entropy from the stored teacher's softmax, answer positions
            attention_distill AD: KL(A_T ‖ A_S) over keys (squared error for signed maps)
            attention_loss    AD over a replay batch, averaged per layer as the official code
            replay_loss       (1 − α)·LM + α·LD + β·AD on a replay micro-batch
selection   score_heads       task sensitivity S = mean (∂LM/∂A)², normalised per layer, and
                              forgettability F = mean (A^{M_{i-1}} − A^{M_i})²
            select_heads      the top layer_budget layers by Σ_h I, then the top head_budget heads
readout     part_gradients, balance_readout   each replay term's share of the update
            balancing_flag                    (--balance_interval) and the flag that evens it
helpers     selection_budgets, map_heads, pad_tail, signed_maps, record_batch: what the model's
            shape and attention type declare, and records as a padded batch

Design choices: sensitivity gradients come from torch.autograd.grad, so nothing leaks into the
optimizer's next step (a pitfall of the official code); diff's effective map A1 − λA2 is not a
distribution, so its AD is the squared error summed over keys instead of KL.
"""

import torch
import torch.nn.functional as F

from attention import ATTENTIONS
from plumbing import ConfigError
from tasks import input_length, pad_batch

# --------------------------------------------------------------------------------------------------
# losses


def logit_distill(logits, y, teacher_logp):
    """LD: cross-entropy from the teacher's softmax to the student's log-softmax at the answer
    positions (temperature 1), mean over positions. teacher_logp (N, V): the positions where
    y != -1, in row-major order."""
    student = F.log_softmax(logits[y != -1].float(), dim=-1)  # (N, V)
    return -(teacher_logp.exp() * student).sum(-1).mean()


def attention_distill(teacher, student, signed=False):
    """AD for one layer: KL(A_T ‖ A_S) over keys, Σ_k a_T·log(a_T / (a_S + 1e-8)), mean over heads
    and query rows. signed=True (maps that are not distributions): squared error over keys."""
    if signed:
        return (teacher - student).pow(2).sum(-1).mean()
    kl = torch.xlogy(teacher, teacher) - teacher * torch.log(student + 1e-8)  # official code's KL
    return kl.sum(-1).mean()


def attention_loss(maps, batch, heads, device, signed):
    """AD over a replay batch, averaged as the official code does: per layer, each record's
    distillation over its task's heads in that layer and its query rows (0 for a record with none
    there), summed and divided by the batch size; then the mean over the layers any record
    selected. heads[j]: task j's frozen [(layer, head), ...]."""
    per_layer = {}
    for b, r in enumerate(batch):
        n = input_length(r)
        chosen = heads[r["task"]]
        teacher = r["maps"].to(device)
        for layer in sorted({l for l, _ in chosen}):
            ks = [k for k, (l, _) in enumerate(chosen) if l == layer]
            student = torch.stack([maps[chosen[k]][b][r["rows"]][:, :n] for k in ks]).float()
            ad = attention_distill(teacher[ks], student, signed)  # student: (heads, q, n)
            per_layer[layer] = per_layer.get(layer, 0) + ad
    return sum(v / len(batch) for v in per_layer.values()) / len(per_layer)


def replay_loss(model, batch, method, heads, alpha, beta, pad, device, autocast):
    """The replay micro-batch on buffer records (method: a Method): LM; (1 − α)·LM + α·LD with
    distill_logits; + β·AD with distill_attention. -> ({part: its weighted term}, whose sum is the
    loss, {part: its unweighted value}); parts "lm", "ld", "ad"."""
    x, y = record_batch(model, batch, pad, device)
    wanted = []
    if method.distill_attention:
        wanted = sorted({h for r in batch for h in heads[r["task"]]})
    with autocast:
        logits, lm, maps = capture(model, x, wanted, y)
    terms = {"lm": lm}
    values = {"lm": lm.item()}
    if method.distill_logits:  # (1 − α)·LM + α·LD
        ld = logit_distill(logits, y, torch.cat([r["logp"] for r in batch]).to(device))
        terms = {"lm": (1 - alpha) * lm, "ld": alpha * ld}
        values["ld"] = ld.item()
    if method.distill_attention:  # + β·AD
        ad = attention_loss(maps, batch, heads, device, signed_maps(model))
        terms["ad"] = beta * ad
        values["ad"] = ad.item()
    return terms, values


def capture(model, x, heads, y=None):
    """Forward pass that also returns the maps of heads [(layer, head), ...]: (logits, loss,
    {(layer, head): (B, T, T)}), still in the autograd graph (diff: the effective A1 - λA2)."""
    by_layer = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    logits, loss, maps = model.attention_maps(x, by_layer, y)
    chosen = {(l, h): maps[l][:, k] for l, hs in by_layer.items() for k, h in enumerate(hs)}
    return logits, loss, chosen


# --------------------------------------------------------------------------------------------------
# SEEKR: head importance and budgeted selection


def all_maps(model, record, pad, device):
    """Every head's map on one record, no grad, on the CPU: (layers, heads, n, n), n its length."""
    n = input_length(record)
    L, H = map_heads(model)
    x, _ = record_batch(model, [record], pad, device)
    with torch.no_grad():
        maps = model.attention_maps(x, {l: list(range(H)) for l in range(L)})[2]
    return torch.stack([maps[l][0, :, :n, :n].float() for l in range(L)]).cpu()


def score_heads(model, records, before, pad, device):
    """Task sensitivity S (each layer sums to 1) and forgettability F (on each record's query
    rows), both (layers, heads), on model M_i and the maps `before` that M_{i-1} had on the same
    records; also returns M_i's maps, record by record."""
    L, H = map_heads(model)
    sens = torch.zeros(L, H)
    forget = torch.zeros(L, H)
    after = []
    for record, old in zip(records, before):
        n = input_length(record)
        x, y = record_batch(model, [record], pad, device)
        _, loss, maps = model.attention_maps(x, {l: list(range(H)) for l in range(L)}, y)
        grads = torch.autograd.grad(loss, [maps[l] for l in range(L)])  # no .grad left behind
        new = torch.stack([maps[l][0, :, :n, :n].detach().float() for l in range(L)]).cpu()
        g2 = [g[0, :, :n, :n].float().pow(2).mean(dim=(1, 2)) for g in grads]  # over queries, keys
        sens += torch.stack(g2).cpu()
        rows = record["rows"]  # on the query rows, as the official code
        forget += (old[:, :, rows] - new[:, :, rows]).pow(2).mean(dim=(2, 3))
        after.append(new)  # (L, H, n, n)
    sens = sens / len(records)
    forget = forget / len(records)
    return sens / sens.sum(1, keepdim=True).clamp_min(1e-30), forget, after  # S: layers sum to 1


def select_heads(importance, layer_budget, head_budget):
    """Hierarchical selection: the top layer_budget layers by summed importance, then the global top
    head_budget heads inside them (a chosen layer may end with none). -> sorted [(layer, head)]."""
    L, H = importance.shape
    layers = torch.topk(importance.sum(1), min(layer_budget, L)).indices
    inside = torch.full_like(importance, float("-inf"))
    inside[layers] = importance[layers]
    top = torch.topk(inside.flatten(), min(head_budget, len(layers) * H)).indices
    return sorted((int(i) // H, int(i) % H) for i in top)


def selection_budgets(model, cfg):
    """SEEKR's (layer, head, query) budgets for this model; 0 means the paper's fractions: 75% of
    layers, 12.5% of all heads, every query row."""
    L, H = map_heads(model)
    layer_b = cfg.seekr_layer_budget or max(1, int(0.75 * L + 0.5))  # halves round up
    head_b = cfg.seekr_head_budget or max(1, int(0.125 * L * H + 0.5))
    if layer_b > L or head_b > layer_b * H:
        raise ConfigError(
            f"--seekr_layer_budget={layer_b} and --seekr_head_budget={head_b} do not fit this "
            f"model: at most {L} layers and {H} heads per chosen layer; use smaller budgets (0 = "
            "75% of layers, 12.5% of heads)"
        )
    return layer_b, head_b, cfg.seekr_query_budget


# --------------------------------------------------------------------------------------------------
# the gradient-balance readout (--balance_interval)


def part_gradients(model, terms, n_micro):
    """{part: its gradient, one tensor per parameter} of each weighted replay term as it enters the
    optimizer step (divided by the step's micro-batch count). autograd.grad leaves no .grad and
    keeps the graph for the backward that follows."""
    params = [p for p in model.parameters() if p.requires_grad]
    parts = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(term / n_micro, params, retain_graph=True, allow_unused=True)
        parts[name] = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
    return parts


def balance_readout(model, parts):
    """The step's gradient norm (before clipping), each replay part's norm and its share of the
    update, ⟨g_part, g⟩ / ‖g‖² with g the step's whole accumulated gradient: the shares of all parts
    and of the new-task micro-batches add up to 1, and clipping scales every part alike."""
    total = [p.grad for p in model.parameters() if p.requires_grad]
    sq = sum(g.float().pow(2).sum() for g in total)
    row = {"grad_norm": sq.sqrt().item()}
    for name, grads in parts.items():
        row[f"grad_{name}"] = sum(g.float().pow(2).sum() for g in grads).sqrt().item()
        dot = sum((g.float() * t.float()).sum() for g, t in zip(grads, total))
        row[f"share_{name}"] = (dot / sq).item()
    return row


def dominant_part(row, factor=20.0):
    """The replay part whose gradient norm exceeds all the others' by `factor` (None: balanced)."""
    norms = {
        k[len("grad_") :]: v for k, v in row.items() if k.startswith("grad_") and k != "grad_norm"
    }
    for name, norm in norms.items():
        if len(norms) > 1 and all(norm > factor * other for k, other in norms.items() if k != name):
            return name
    return None


def balancing_flag(part, row, alpha, beta):
    """The flag and value that bring the dominant part's gradient to the others' size. β·AD: β
    times (the largest other part's norm / AD's). (1 − α)·LM or α·LD: the α at which
    α·|∇LD| = (1 − α)·|∇LM|, from the unweighted norms |∇LD| = grad_ld / α and
    |∇LM| = grad_lm / (1 − α)."""
    if part == "ad":
        others = [v for k, v in row.items() if k in ("grad_lm", "grad_ld")]
        return f"--beta={beta * max(others) / row['grad_ad']:.3g}"
    if not 0 < alpha < 1 or "grad_ld" not in row:
        return "--alpha=0.5"  # one of the two terms is off: give both a weight
    lm = row["grad_lm"] / (1 - alpha)
    ld = row["grad_ld"] / alpha
    return f"--alpha={lm / (lm + ld):.3g}"


# --------------------------------------------------------------------------------------------------
# records as batches, and what the model's attention type declares


def pad_tail(model):
    """Pad columns every record gets: the keys past the diagonal that the attention type's scores
    read (DAPE's convs: dape_kernel // 2). Zero padding at the sequence's end differs from pad
    tokens there; with this many pad columns always present, a record's maps and logits are the
    same alone and in any right-padded batch (teacher and student line up)."""
    return ATTENTIONS[model.config.attention].key_reach(model.config)


def signed_maps(model):
    """Whether the model's maps are not distributions (diff's A1 - λA2): AD is squared error."""
    return ATTENTIONS[model.config.attention].signed_maps


def map_heads(model):
    """(layers, attention maps per layer): diff has n_head // 2 differential heads, each one map."""
    return len(model.transformer.h), model.transformer.h[0].attn.n_head


def record_batch(model, records, pad, device):
    """Encoded records -> x, y for this model: pad_batch with the model's pad tail."""
    return pad_batch([(r["prompt"], r["answer"]) for r in records], pad, device, pad_tail(model))
