"""Grouped-query attention with QK-norm after RoPE and cross-layer K/V sharing (CLA).

Shapes: B batch, T new tokens, S attended tokens (past + new), D hidden, Hq query heads,
Hkv KV heads, d head dim.

What a CLA owner layer hands to the layers that reuse it is its K after RoPE and before the key
norm, and its V: (B, Hkv, S, d) each. Each layer then applies its *own* key norm. This equals the
release (which shares raw projections and rotates them again with the same positions) and is
exactly what a KV cache needs to hold.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .layers import RMSNorm, fuse_linears
from .matmul import Linear, matmul
from .rope import apply_rope

SharedKV = tuple[torch.Tensor, torch.Tensor]  # (k_rotated, v), each (B, Hkv, S, d)


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
        self.q_proj = Linear(D, self.n_heads * d)
        if self.owns_kv:
            self.k_proj = Linear(D, self.n_kv * d)
            self.v_proj = Linear(D, self.n_kv * d)
        self.o_proj = Linear(self.n_heads * d, D)
        self.fused_qkv: torch.Tensor | None = None  # (D, (Hq + 2 Hkv) d), see fuse_projections
        if cfg.use_qk_norm:
            self.query_layernorm = RMSNorm(d, cfg.rms_norm_eps)
            self.key_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        else:
            self.query_layernorm = self.key_layernorm = None

    def fuse_projections(self) -> None:
        """Compute q, k and v as one GEMM from now on (inference; owner layers only)."""
        if self.owns_kv and self.fused_qkv is None:
            self.fused_qkv = fuse_linears([self.q_proj, self.k_proj, self.v_proj])

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """q (B, T, Hq, d) after RoPE and, in owner layers, k after RoPE and v (B, T, Hkv, d)."""
        B, T, _ = x.shape
        Hq, Hkv, d = self.n_heads, self.n_kv, self.head_dim
        if self.fused_qkv is not None:  # one GEMM, and q and k rotated as one tensor
            qkv = matmul(x, self.fused_qkv).view(B, T, Hq + 2 * Hkv, d)
            qk = apply_rope(qkv[:, :, : Hq + Hkv], cos, sin)
            return qk[:, :, :Hq], qk[:, :, Hq:], qkv[:, :, Hq + Hkv :]
        q = apply_rope(self.q_proj(x).view(B, T, Hq, d), cos, sin)
        if not self.owns_kv:
            return q, None, None
        k = apply_rope(self.k_proj(x).view(B, T, Hkv, d), cos, sin)
        return q, k, self.v_proj(x).view(B, T, Hkv, d)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D), already normalised
        cos: torch.Tensor,  # (B, T, 1, d)
        sin: torch.Tensor,
        mask: torch.Tensor | None,  # additive (B, 1, T, S) or None for plain causal
        shared_kv: SharedKV | None = None,
        cache: KVStore | None = None,
    ) -> tuple[torch.Tensor, SharedKV]:
        B, T, _ = x.shape
        q, k, v = self._qkv(x, cos, sin)
        if self.owns_kv:
            k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, Hkv, T, d)
            if cache is not None:
                k, v = cache.update(self.layer_idx, k, v)  # (B, Hkv, S, d)
        else:
            if shared_kv is None:
                raise RuntimeError(f"layer {self.layer_idx} reuses K/V but got none from its owner")
            k, v = shared_kv
        if self.query_layernorm is not None:
            q = self.query_layernorm(q)
            k_att = self.key_layernorm(k)
        else:
            k_att = k
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k_att, v,  # (B, Hq, T, d), (B, Hkv, S, d), (B, Hkv, S, d)
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and T > 1,
            enable_gqa=self.n_heads != self.n_kv,
        )
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.o_proj(out), (k, v)
