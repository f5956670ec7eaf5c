"""Grouped-query attention with QK-norm after RoPE and cross-layer K/V sharing (CLA).

Shapes: B batch, T new tokens, S attended tokens (past + new), D hidden, Hq query heads,
Hkv KV heads, d head dim.

QK-norm is RMSNorm per head: w_q * unit(q) and w_k * unit(k), where unit() scales to unit RMS.
Every layer that reads the same K computes the same unit(k); only the weight w_k is its own. So a
CLA owner layer hands the layers that reuse it unit(K after RoPE) and V, (B, Hkv, S, d) each, and
each layer applies its own key-norm weight on the query side: unit(q)*w_q . (w_k*unit(k)) =
(unit(q)*w_q*w_k) . unit(k). This equals the release (which shares raw projections and rotates and
normalises them again in every layer) up to float rounding order, and is what the KV cache holds:
per step only the new token's key is normalised, not the whole cache in every layer.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .layers import RMSNorm, rms_normalize
from .rope import apply_rope

SharedKV = tuple[torch.Tensor, torch.Tensor]  # (unit-RMS k after RoPE, v), each (B, Hkv, S, d)


class KVStore(Protocol):
    """What attention needs from a KV cache: append the new K/V of an owner layer, get all."""

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> SharedKV: ...


class Attention(nn.Module):
    """Self-attention of one decoder layer; CLA reuse layers have no k_proj/v_proj."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.owns_kv = cfg.owns_kv(layer_idx)
        self.dropout = cfg.attention_dropout
        d, D = self.head_dim, cfg.hidden_size
        self.q_proj = nn.Linear(D, self.n_heads * d, bias=False)
        if self.owns_kv:
            self.k_proj = nn.Linear(D, self.n_kv * d, bias=False)
            self.v_proj = nn.Linear(D, self.n_kv * d, bias=False)
        self.o_proj = nn.Linear(self.n_heads * d, D, bias=False)
        if cfg.use_qk_norm:
            self.query_layernorm = RMSNorm(d, cfg.rms_norm_eps)
            self.key_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        else:
            self.query_layernorm = self.key_layernorm = None

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """q (B, T, Hq, d) and, in owner layers, k and v (B, T, Hkv, d); q and k after RoPE and,
        with QK-norm, at unit RMS (the norms' weights are applied in forward)."""
        B, T, _ = x.shape
        Hq, Hkv, d = self.n_heads, self.n_kv, self.head_dim
        q = self._unit(apply_rope(self.q_proj(x).view(B, T, Hq, d), cos, sin))
        if not self.owns_kv:
            return q, None, None
        k = self._unit(apply_rope(self.k_proj(x).view(B, T, Hkv, d), cos, sin))
        return q, k, self.v_proj(x).view(B, T, Hkv, d)

    def _unit(self, t: torch.Tensor) -> torch.Tensor:
        """Heads at unit RMS with QK-norm; unchanged without (q and k share the eps)."""
        return t if self.query_layernorm is None else rms_normalize(t, self.query_layernorm.eps)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D), already normalised
        cos: torch.Tensor,  # (B, T, 1, d)
        sin: torch.Tensor,
        mask: torch.Tensor | None,  # additive (B, 1, T, S) or None for plain causal
        shared_kv: SharedKV | None = None,
        cache: KVStore | None = None,
    ) -> tuple[torch.Tensor, SharedKV]:
        q, k, v = self._qkv(x, cos, sin)
        if self.owns_kv:
            k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, Hkv, T, d)
            if cache is not None:
                k, v = cache.update(self.layer_idx, k, v)  # (B, Hkv, S, d)
        else:
            if shared_kv is None:
                raise RuntimeError(f"layer {self.layer_idx} reuses K/V but got none from its owner")
            k, v = shared_kv
        if self.query_layernorm is not None:  # both norms' weights on the query (module docstring)
            q = q * (self.query_layernorm.weight * self.key_layernorm.weight)
        return self.o_proj(self._attend(q, k, v, mask)), (k, v)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """q (B, T, Hq, d) over k, v (B, Hkv, S, d) -> (B, T, Hq*d); no mask means causal."""
        B, T = q.shape[:2]
        if mask is None and 1 < T < k.shape[2]:  # causal after a cached past (a prefill chunk)
            out = causal_after_past(q.transpose(1, 2), k, v)
        else:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k, v,  # (B, Hq, T, d), (B, Hkv, S, d), (B, Hkv, S, d)
                attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=mask is None and T > 1,
                enable_gqa=self.n_heads != self.n_kv,
            )
        return out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)


def causal_after_past(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of T queries that follow S - T cached keys (inference, no dropout):
    q (B, Hq, T, d), k and v (B, Hkv, S, d) -> (B, Hq, T, d).

    SDPA's `is_causal` aligns the mask top-left (query i sees keys 0..i), wrong once S > T, and an
    explicit (T, S) mask costs memory in T * S. On CPU no mask is needed: the flash kernel runs the
    queries over the past keys unmasked and over their own keys causally, and the two results merge
    exactly by their log-sum-exps. Other devices take SDPA with a boolean mask (`masked_causal_after_past`).
    """
    if q.device.type != "cpu":
        return masked_causal_after_past(q, k, v)
    B, Hq, T, d = q.shape
    Hkv, P = k.shape[1], k.shape[2] - T
    g = Hq // Hkv  # query heads per KV head
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    # Unmasked, a KV head's g query heads are just g*T rows of queries: no K/V copy per query head.
    past, lse_past = flash(q.reshape(B, Hkv, g * T, d), k[:, :, :P], v[:, :, :P])  # (B, Hkv, g*T, d), (B, Hkv, g*T)
    own, lse_own = flash(q, k[:, :, P:].repeat_interleave(g, 1), v[:, :, P:].repeat_interleave(g, 1),
                         is_causal=True)  # (B, Hq, T, d), (B, Hq, T)
    lse_past, lse_own = lse_past.reshape(B, Hq, T, 1), lse_own[..., None]
    lse = torch.logaddexp(lse_past, lse_own)
    out = past.reshape(B, Hq, T, d) * (lse_past - lse).exp() + own * (lse_own - lse).exp()
    return out.to(q.dtype)  # the log-sum-exps are float32 whatever the inputs


def masked_causal_after_past(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`causal_after_past` as one SDPA call with a boolean (T, S) mask aligned bottom-right."""
    T, S = q.shape[2], k.shape[2]
    mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
