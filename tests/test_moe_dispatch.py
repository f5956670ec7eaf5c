"""The MoE block's fast dispatch against a per-token reference: outputs and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from hunyuan_large import ModelConfig
from hunyuan_large.infer.decode_layout import prepare_for_decode
from hunyuan_large.model.moe import MoE


def make_moe(policy, experts=4, k=1, cf=1.0, shared=1, seed=0):
    cfg = ModelConfig.from_preset("tiny", num_experts=experts, moe_topk=k, capacity_factor=cf,
                                  num_shared_expert=max(shared, 1), use_mixed_mlp_moe=shared > 0,
                                  moe_min_capacity=0)
    cfg.set_routing_policy(policy)
    torch.manual_seed(seed)
    moe = MoE(cfg)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.08)
    moe.generator = torch.Generator().manual_seed(seed)
    return moe.train()


def reference_forward(moe, x, routing):
    """Per token and choice: weight from a fresh softmax, times that expert's SwiGLU."""
    xf = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(xf.float() @ moe.gate.wg.weight.float().t(), dim=-1)
    gu, dn, f = moe.experts.gate_up_proj, moe.experts.down_proj, moe.experts.gate_up_proj.shape[1] // 2
    rows = []
    for t in range(xf.shape[0]):
        kept = [(j, int(e)) for j, e in enumerate(routing.expert[t]) if e >= 0]
        raw = [probs[t, e] for _, e in kept]
        total = sum(raw) if len(raw) > 0 else torch.tensor(1.0)
        acc = torch.zeros_like(xf[t])
        for (j, e), p in zip(kept, raw):
            w = p if moe.top_k == 1 else p / total
            h = gu[e] @ xf[t]
            acc = acc + w * (dn[e] @ (F.silu(h[:f]) * h[f:]))
        rows.append(acc)
    out = torch.stack(rows)
    if moe.shared_mlp is not None:
        out = out + moe.shared_mlp(xf)
    return out.view_as(x)


def grads(moe, x):
    return [x.grad] + [p.grad for p in moe.parameters()]


CASES = [
    ("dropless", dict()),
    ("drop", dict(cf=0.75)),
    ("recycle", dict(cf=1.0)),
    ("recycle", dict(cf=0.5)),  # all full: some tokens dropped
    ("recycle", dict(k=2, experts=6, cf=1.0)),
    ("drop", dict(k=3, experts=6, cf=0.8)),
    ("dropless", dict(k=2, shared=0)),
]


@pytest.mark.parametrize("policy, kw", CASES)
def test_fast_path_matches_reference_outputs_and_gradients(policy, kw):
    moe = make_moe(policy, **kw)
    x = torch.randn(2, 9, 64, requires_grad=True)
    out, routing, _ = moe(x, return_routing=True)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    fast = [g.clone() for g in grads(moe, x)]

    moe.zero_grad()
    x.grad = None
    ref = reference_forward(moe, x, routing)
    ref.backward(upstream)
    assert (out - ref).abs().max() <= 1e-5
    for a, b in zip(fast, grads(moe, x)):
        assert (a - b).abs().max() <= 1e-5


def test_empty_experts_get_zero_gradients():
    moe = make_moe("dropless")
    with torch.no_grad():
        moe.gate.wg.weight.zero_()
        moe.gate.wg.weight[2] = 5.0  # positive dot products only if x is positive
    x = torch.rand(1, 8, 64) + 0.1  # every token picks expert 2
    out, routing, _ = moe(x.requires_grad_(), return_routing=True)
    assert (routing.expert == 2).all()
    out.sum().backward()
    g = moe.experts.gate_up_proj.grad
    assert g[2].abs().sum() > 0 and (g[[0, 1, 3]] == 0).all()


@pytest.mark.parametrize("tokens", [1, 3, 40])  # few rows: grouped in Python; many: sorted segments
def test_inference_path_equals_general_path(tokens):
    moe = make_moe("recycle", k=2, experts=6).eval()
    x = torch.randn(1, tokens, 64)
    with torch.no_grad():
        fast, routing, _ = prepare_for_decode(copy.deepcopy(moe))(x)
        general, _, _ = moe(x, return_routing=True)
    assert routing is None
    assert (fast - general).abs().max() <= 1e-6


def test_eval_mode_is_dropless_whatever_the_policy():
    moe = make_moe("drop", cf=0.25).eval()
    x = torch.randn(1, 32, 64)
    with torch.no_grad():
        _, routing, _ = moe(x, return_routing=True)
    assert not routing.dropped.any() and routing.capacity is None


def test_stats_and_losses():
    moe = make_moe("recycle", cf=0.5)
    x = torch.randn(4, 16, 64)
    _, routing, stats = moe(x, collect_stats=True, return_routing=True)
    assert int(stats.tokens_per_expert.sum()) + int(stats.dropped) == 64
    assert int(stats.recycled) == int(routing.recycled.sum()) > 0
    probs = torch.softmax(x.reshape(-1, 64) @ moe.gate.wg.weight.t(), -1)
    frac = torch.bincount(probs.argmax(1), minlength=4).float() / 64
    assert torch.allclose(stats.aux_loss, 4 * (probs.mean(0) * frac).sum(), atol=1e-6)
    logits = x.reshape(-1, 64) @ moe.gate.wg.weight.t()
    assert torch.allclose(stats.z_loss, torch.logsumexp(logits, -1).pow(2).mean(), rtol=1e-5)
    assert stats.aux_loss.requires_grad and stats.z_loss.requires_grad
    assert 0 < float(stats.entropy) <= torch.log(torch.tensor(4.0)) + 1e-6
