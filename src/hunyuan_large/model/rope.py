"""Rotary position embedding (NeoX rotate-half style) with the release's four variants.

The variant follows `rope_scaling` exactly as the official code does, including its precision
quirks, because they change the logits measurably:
- null: plain RoPE, but `inv_freq` is rounded to bfloat16 (positions stay fp32).
- {"type": "dynamic", "alpha": a} with a truthy: static NTK-alpha, base = theta * a^(d/(d-2)),
  everything fp32 (the released models).
- {"type": "dynamic", "alpha": falsy}: classic dynamic NTK. Up to max_position_embeddings the
  table is built in bfloat16 (bf16 `inv_freq` and bf16 `arange` positions); beyond it the base is
  scaled by ((factor*len/max_pos) - (factor-1))^(d/(d-2)) and built in fp32.
- {"type": "linear", "factor": f}: bf16 positions divided by f, all in bfloat16.

A `rope_scaling` with "rope_type" instead of "type" is one of transformers' variants (imported
Llama-family models), computed in fp32 exactly as transformers' modeling_rope_utils does:
default, linear (inv_freq / factor), dynamic (NTK base growth beyond max_position_embeddings,
keyed by the attended length as transformers keys it by max(position)+1) and llama3 (per-band
wavelength scaling).
"""

from __future__ import annotations

import functools
import math

import torch

from ..config import ModelConfig


@functools.lru_cache(maxsize=32)  # else rebuilt every decode step; callers never modify it
def _inv_freq(base: float, dim: int, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):  # a normal tensor, usable by training after inference
        return 1.0 / (base ** (torch.arange(0, dim, 2, device=device).float() / dim))


@functools.lru_cache(maxsize=32)
def _llama3_inv_freq(theta: float, dim: int, device: torch.device, factor: float, low: float, high: float,
                     old_len: float) -> torch.Tensor:
    """Llama 3.1's inv_freq: long wavelengths divided by `factor`, short ones kept, a smooth band between."""
    inv = _inv_freq(theta, dim, device)
    with torch.inference_mode(False):
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
        return torch.where(medium, smoothed, scaled)


def _hf_inv_freq(cfg: ModelConfig, kv_len: int, dev: torch.device) -> torch.Tensor:
    """inv_freq of transformers' rope_type variants (fp32)."""
    rs, d = cfg.rope_scaling, cfg.head_dim
    kind = rs["rope_type"]
    if kind == "dynamic" and kv_len > cfg.max_position_embeddings:
        f = rs["factor"]
        return _inv_freq(cfg.rope_theta * ((f * kv_len / cfg.max_position_embeddings) - (f - 1)) ** (d / (d - 2)),
                         d, dev)
    if kind == "linear":
        return _inv_freq(cfg.rope_theta, d, dev) / rs["factor"]
    if kind == "llama3":
        return _llama3_inv_freq(cfg.rope_theta, d, dev, rs["factor"], rs["low_freq_factor"],
                                rs["high_freq_factor"], rs["original_max_position_embeddings"])
    return _inv_freq(cfg.rope_theta, d, dev)  # default, and dynamic within the trained length


def _bf16_positions(position_ids: torch.Tensor, cfg: ModelConfig, kv_len: int) -> torch.Tensor:
    # The official table is `arange(len, dtype=bf16)`, whose values for large lengths are not
    # simply round(p), so index a table of the same length instead of rounding.
    table_len = max(cfg.max_position_embeddings, kv_len, int(position_ids.max()) + 1)
    table = torch.arange(table_len, dtype=torch.bfloat16, device=position_ids.device)
    return table[position_ids]


def rope_cos_sin(
    cfg: ModelConfig, position_ids: torch.Tensor, kv_len: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin tables for `position_ids` (B, T) -> each (B, T, 1, d), cast to `dtype`.

    The sin table carries rotate-half's sign: its first half is negated (see apply_rope).
    `kv_len` is the attended length (past + current), which only the dynamic-NTK variant reads.
    """
    d = cfg.head_dim
    dev = position_ids.device
    rs = cfg.rope_scaling
    if rs is not None and "rope_type" in rs:
        freqs = position_ids.float()[..., None] * _hf_inv_freq(cfg, kv_len, dev)
    elif rs is None:
        inv = _inv_freq(cfg.rope_theta, d, dev).bfloat16()
        freqs = position_ids.float()[..., None] * inv  # promotes to fp32
    elif rs["type"] == "dynamic" and rs["alpha"]:
        inv = _inv_freq(cfg.rope_base, d, dev)
        freqs = position_ids.float()[..., None] * inv
    elif rs["type"] == "dynamic":
        if kv_len > cfg.max_position_embeddings:
            f = rs["factor"]
            base = cfg.rope_theta * ((f * kv_len / cfg.max_position_embeddings) - (f - 1)) ** (d / (d - 2))
            freqs = position_ids.float()[..., None] * _inv_freq(base, d, dev)
        else:
            inv = _inv_freq(cfg.rope_theta, d, dev).bfloat16()
            freqs = _bf16_positions(position_ids, cfg, kv_len)[..., None] * inv
    else:  # linear
        inv = _inv_freq(cfg.rope_theta, d, dev).bfloat16()
        t = _bf16_positions(position_ids, cfg, kv_len) / rs["factor"]
        freqs = t[..., None] * inv
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, d)
    sin = emb.sin()
    sin[..., : d // 2].neg_()
    return emb.cos().to(dtype)[:, :, None, :], sin.to(dtype)[:, :, None, :]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, H, d) by the tables (B, T, 1, d) of rope_cos_sin: x*cos + rotate_half(x)*sin.

    rotate_half(x) = (-x2, x1) = roll(x, d/2) * (-1, +1); the sign lives in `signed_sin`, so this is
    the release's arithmetic (negation is exact) in four ops instead of seven.
    """
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin
