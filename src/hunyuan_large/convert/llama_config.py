"""A Llama-architecture config (HF config.json keys) -> our ModelConfig: dense, no QK-norm, no CLA.

Llama is the Hunyuan architecture with a dense SwiGLU MLP in every layer, no QK-norm, no cross-layer
K/V sharing and transformers' RoPE variants (rope_scaling with "rope_type", fp32), so no model code
is added. Whatever Llama-family configs carry that this architecture cannot compute is refused here.
"""

from __future__ import annotations

from typing import Any

from ..config import HF_ROPE_KEYS, ModelConfig
from ..errors import UserError


class UnsupportedSource(UserError):
    """A source checkpoint this importer does not support, named with what is unsupported."""


def _rope(hf: dict[str, Any]) -> dict[str, Any]:
    """transformers' rope parameters (old `rope_scaling` or v5 `rope_parameters`) as our rope_scaling."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    kind = params.pop("rope_type", None) or params.pop("type", None) or "default"
    if kind not in HF_ROPE_KEYS:
        raise UnsupportedSource(f"rope type {kind!r} is not supported (supported: {', '.join(HF_ROPE_KEYS)})")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise UnsupportedSource(f"partial_rotary_factor {params['partial_rotary_factor']} is not supported (only 1.0)")
    return {"rope_type": kind, **{k: params[k] for k in HF_ROPE_KEYS[kind] if k in params}}


def _rope_theta(hf: dict[str, Any]) -> float:
    params = hf.get("rope_parameters") or {}
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _first_id(value: Any) -> int | None:
    return value[0] if isinstance(value, list) and value else value


def llama_model_config(hf: dict[str, Any], dtype: str) -> ModelConfig:
    """The ModelConfig of a Llama config.json dict; UserError naming the first unsupported setting."""
    model_type = hf.get("model_type")
    if model_type != "llama":
        raise UnsupportedSource(f"model_type {model_type!r} is not supported (only 'llama')")
    refused = {
        "sliding_window": hf.get("sliding_window") is not None,
        "attention_bias": bool(hf.get("attention_bias")),
        "mlp_bias": bool(hf.get("mlp_bias")),
    }
    for key, bad in refused.items():
        if bad:
            raise UnsupportedSource(f"{key}={hf[key]!r} is not supported (sliding-window attention and biases "
                               "have no counterpart in this architecture)")
    if hf.get("hidden_act", "silu") != "silu":
        raise UnsupportedSource(f"hidden_act {hf['hidden_act']!r} is not supported (only 'silu')")
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    if head_dim * heads != hf["hidden_size"]:
        raise UnsupportedSource(f"head_dim {head_dim} with {heads} heads != hidden_size {hf['hidden_size']} "
                           "is not supported")
    pad = _first_id(hf.get("pad_token_id"))
    return ModelConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=heads, num_key_value_heads=hf.get("num_key_value_heads") or heads,
        intermediate_size=hf["intermediate_size"], num_experts=1, moe_topk=1, num_shared_expert=0,
        use_mixed_mlp_moe=False, use_cla=False, use_qk_norm=False, rope_theta=_rope_theta(hf),
        rope_scaling=_rope(hf), max_position_embeddings=hf.get("max_position_embeddings", 2048),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6), tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        initializer_range=hf.get("initializer_range", 0.02), bos_token_id=_first_id(hf.get("bos_token_id")),
        eos_token_id=hf.get("eos_token_id"), pad_token_id=pad if pad is not None and pad < hf["vocab_size"] else None,
        torch_dtype=dtype,
    )
