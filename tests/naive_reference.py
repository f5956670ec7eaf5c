"""A deliberately plain forward pass of SPEC §2, written from the spec for tests.

It reads the official tensor names from a state dict (so it shares no code with the package's
stacked experts, fused dispatch or shared-K/V plumbing): per-layer RoPE tables, eager attention
with repeat-interleaved K/V, raw K/V re-projected per CLA owner, and a dense one-hot MoE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rms(x, w, eps):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def rope_tables(cfg, seq_len):
    d = cfg.head_dim
    rs = cfg.rope_scaling
    n = max(cfg.max_position_embeddings, seq_len)
    inv = lambda base: 1.0 / (base ** (torch.arange(0, d, 2).float() / d))  # noqa: E731
    if rs is None:
        freqs = torch.outer(torch.arange(n).float(), inv(cfg.rope_theta).bfloat16())
    elif rs["type"] == "dynamic" and rs["alpha"]:
        base = cfg.rope_theta * rs["alpha"] ** (d / (d - 2))
        freqs = torch.outer(torch.arange(n).float(), inv(base))
    elif rs["type"] == "dynamic" and seq_len > cfg.max_position_embeddings:
        f = rs["factor"]
        base = cfg.rope_theta * ((f * seq_len / cfg.max_position_embeddings) - (f - 1)) ** (d / (d - 2))
        freqs = torch.outer(torch.arange(n).float(), inv(base))
    elif rs["type"] == "dynamic":
        freqs = torch.outer(torch.arange(n, dtype=torch.bfloat16), inv(cfg.rope_theta).bfloat16())
    else:
        t = torch.arange(n, dtype=torch.bfloat16) / rs["factor"]
        freqs = torch.outer(t, inv(cfg.rope_theta).bfloat16())
    emb = torch.cat((freqs, freqs), -1)
    return emb.cos().float(), emb.sin().float()


def rot(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., h:], x[..., :h]), -1) * sin


def swiglu(x, sd, prefix):
    g = x @ sd[f"{prefix}.gate_proj.weight"].t()
    u = x @ sd[f"{prefix}.up_proj.weight"].t()
    return (F.silu(g) * u) @ sd[f"{prefix}.down_proj.weight"].t()


def moe(x, sd, p, cfg):
    B, T, D = x.shape
    xs = x.reshape(-1, D)
    probs = torch.softmax(xs.float() @ sd[f"{p}.gate.wg.weight"].float().t(), dim=1)
    k, E = cfg.moe_topk, cfg.num_experts
    if k == 1:
        idx = probs.argmax(1, keepdim=True)
        w = probs.gather(1, idx)
    else:
        w, idx = probs.topk(k, dim=1)
        w = w / w.sum(1, keepdim=True).clamp(min=torch.finfo(torch.float32).eps)
    combine = torch.zeros(xs.shape[0], E).scatter(1, idx, w)  # (N, E)
    out = torch.zeros_like(xs)
    for e in range(E):
        out += combine[:, e : e + 1] * swiglu(xs, sd, f"{p}.experts.{e}")
    if cfg.use_mixed_mlp_moe:
        out = out + swiglu(xs, sd, f"{p}.shared_mlp")
    return out.view(B, T, D), combine


def forward(cfg, sd, input_ids, attention_mask=None, position_ids=None):
    """Logits (B, T, V), hidden states and per-layer (N, E) combine weights."""
    B, T = input_ids.shape
    nh, nkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    if position_ids is None:
        position_ids = torch.arange(T)[None].expand(B, T)
    cos_t, sin_t = rope_tables(cfg, T)
    cos, sin = cos_t[position_ids][:, None], sin_t[position_ids][:, None]  # (B, 1, T, d)
    mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)[None, None].repeat(B, 1, 1, 1)
    if attention_mask is not None:
        mask = mask.masked_fill(attention_mask[:, None, None, :] == 0, torch.finfo(torch.float32).min)
    x = sd["model.embed_tokens.weight"][input_ids]
    hidden, combines, shared_raw = [], [], None
    for i in range(cfg.num_hidden_layers):
        hidden.append(x)
        p = f"model.layers.{i}"
        h = rms(x, sd[f"{p}.input_layernorm.weight"], cfg.rms_norm_eps)
        q = (h @ sd[f"{p}.self_attn.q_proj.weight"].t()).view(B, T, nh, d).transpose(1, 2)
        if f"{p}.self_attn.k_proj.weight" in sd:
            shared_raw = (h @ sd[f"{p}.self_attn.k_proj.weight"].t(), h @ sd[f"{p}.self_attn.v_proj.weight"].t())
        k = shared_raw[0].view(B, T, nkv, d).transpose(1, 2)
        v = shared_raw[1].view(B, T, nkv, d).transpose(1, 2)
        q, k = rot(q, cos, sin), rot(k, cos, sin)
        if cfg.use_qk_norm:
            q = rms(q, sd[f"{p}.self_attn.query_layernorm.weight"], cfg.rms_norm_eps)
            k = rms(k, sd[f"{p}.self_attn.key_layernorm.weight"], cfg.rms_norm_eps)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        att = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(d) + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, nh * d) @ sd[f"{p}.self_attn.o_proj.weight"].t()
        x = x + o
        h = rms(x, sd[f"{p}.post_attention_layernorm.weight"], cfg.rms_norm_eps)
        if cfg.num_experts > 1:
            m, combine = moe(h, sd, f"{p}.mlp", cfg)
            combines.append(combine)
        else:
            m = swiglu(h, sd, f"{p}.mlp")
        x = x + m
    x = rms(x, sd["model.norm.weight"], cfg.rms_norm_eps)
    hidden.append(x)
    head = sd["model.embed_tokens.weight"] if cfg.tie_word_embeddings else sd["lm_head.weight"]
    return (x @ head.t()).float(), hidden, combines
