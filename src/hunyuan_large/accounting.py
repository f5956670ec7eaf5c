"""Parameter counts, FLOPs per token and KV-cache bytes per token (SPEC §5.1, paper Table 2).

Parameters are counted from the module tree (built on `meta`, so free at any size) and also by
closed-form formulas; tests assert the two agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .config import ModelConfig
from .model import HunyuanForCausalLM

BF16_BYTES = 2


@dataclass
class ParamCount:
    """Parameter totals by part; `routed` holds all routed experts of all layers."""

    embedding: int
    lm_head: int  # 0 when tied
    attention: int  # q, k, v, o projections and QK norms
    norms: int  # input, post-attention and final norms
    router: int
    shared: int  # shared experts, or the dense MLP when num_experts == 1
    routed: int
    active_fraction: float  # of the routed experts, per token (k / E)

    @property
    def total(self) -> int:
        return (self.embedding + self.lm_head + self.attention + self.norms + self.router
                + self.shared + self.routed)

    @property
    def active(self) -> int:
        """Parameters a token uses: everything but the routed experts it does not select."""
        return self.total - self.routed + round(self.routed * self.active_fraction)


def count_params(cfg: ModelConfig) -> ParamCount:
    """Count parameters of the module tree of `cfg`, built on the meta device."""
    with torch.device("meta"):
        model = HunyuanForCausalLM(cfg)
    parts = dict(embedding=0, lm_head=0, attention=0, norms=0, router=0, shared=0, routed=0)
    for name, p in model.named_parameters():  # tied weights are listed once
        if name.startswith("model.embed_tokens"):
            key = "embedding"
        elif name.startswith("lm_head"):
            key = "lm_head"
        elif ".self_attn." in name:
            key = "attention"
        elif ".gate.wg" in name:
            key = "router"
        elif ".mlp.experts." in name:
            key = "routed"
        elif ".mlp." in name:
            key = "shared"
        else:
            key = "norms"
        parts[key] += p.numel()
    return ParamCount(**parts, active_fraction=_active_fraction(cfg))


def _active_fraction(cfg: ModelConfig) -> float:
    return cfg.moe_topk / cfg.num_experts if cfg.is_moe else 1.0


def closed_form_params(cfg: ModelConfig) -> ParamCount:
    """The same counts from the config alone."""
    D, L, V, d = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.head_dim
    q_o = 2 * D * cfg.num_attention_heads * d
    kv = 2 * D * cfg.num_key_value_heads * d
    qk_norm = 2 * d if cfg.use_qk_norm else 0
    swiglu = 3 * D  # per unit of width
    if cfg.is_moe:
        shared = swiglu * cfg.shared_intermediate_size if cfg.has_shared_expert else 0
        routed = swiglu * cfg.intermediate_size * cfg.num_experts
        router = D * cfg.num_experts
    else:
        shared, routed, router = swiglu * cfg.intermediate_size, 0, 0
    return ParamCount(
        embedding=V * D,
        lm_head=0 if cfg.tie_word_embeddings else V * D,
        attention=L * (q_o + qk_norm) + cfg.num_kv_owner_layers * kv,
        norms=(2 * L + 1) * D,
        router=L * router,
        shared=L * shared,
        routed=L * routed,
        active_fraction=_active_fraction(cfg),
    )


def flops_per_token(cfg: ModelConfig, seq_len: int = 4096, training: bool = True) -> float:
    """Matmul FLOPs per token: projections, router, shared + k experts, LM head and causal attention.

    Each weight multiply counts 2 FLOPs per parameter; attention scores and the weighted sum of
    values count 2*Hq*d each per attended key, averaged over a causal sequence ((S+1)/2 keys).
    The embedding lookup is excluded. Training = forward + backward = 3x forward.
    """
    D, d, L = cfg.hidden_size, cfg.head_dim, cfg.num_hidden_layers
    p = closed_form_params(cfg)
    head = cfg.vocab_size * D
    matmul_params = (
        p.attention - L * (2 * d if cfg.use_qk_norm else 0)
        + p.router + p.shared + round(p.routed * p.active_fraction) + head
    )
    attn = L * 4 * cfg.num_attention_heads * d * (seq_len + 1) / 2
    forward = 2 * matmul_params + attn
    return 3 * forward if training else forward


def paper_compute(active_params: float, tokens: float) -> float:
    """The paper's training compute C = 9.59*N*D + 2.3e8*D (N activated params, D tokens)."""
    return 9.59 * active_params * tokens + 2.3e8 * tokens


def kv_cache_bytes_per_token(cfg: ModelConfig, dtype_bytes: int = BF16_BYTES) -> dict[str, int]:
    """Paper Table 2 for this shape (MHA, GQA, MQA, CLA, GQA+CLA; CLA at factor 2) and as built."""
    nh, ng, d, L = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.num_hidden_layers
    per = 2 * dtype_bytes  # K and V
    return {
        "MHA": per * nh * d * L,
        "GQA": per * ng * d * L,
        "MQA": per * d * L,
        "CLA": per * nh * d * L // 2,
        "GQA+CLA": per * ng * d * L // 2,
        "as_built": per * ng * d * cfg.num_kv_owner_layers,
    }


def summary(cfg: ModelConfig, seq_len: int = 4096) -> dict:
    """Everything `hunyuan info` prints, as one JSON-able dict."""
    counted = count_params(cfg)
    kv = kv_cache_bytes_per_token(cfg)
    train_flops = flops_per_token(cfg, seq_len, training=True)
    return {
        "total_params": counted.total,
        "active_params": counted.active,
        "params_by_part": {k: v for k, v in asdict(counted).items() if k != "active_fraction"},
        "kv_cache_bytes_per_token": kv["as_built"],
        "kv_cache_table2": kv,
        "seq_len": seq_len,
        "flops_per_token": train_flops,
        "forward_flops_per_token": flops_per_token(cfg, seq_len, training=False),
        "paper_flops_per_token": paper_compute(counted.active, 1.0),
    }


@dataclass
class TrainingMemory:
    """Bytes per GPU of one training rank under FSDP2 + expert parallelism (see docs/distributed.md)."""

    states: float  # fp32 master weights, fp32 gradients, Adam's two moments: 16 B/param, sharded over W
    gathered: float  # bf16 copies of the two decoder layers FSDP holds unsharded (current + prefetch)
    activations_per_token: float  # bf16 tensors kept for the backward, all layers, per local token

    def total(self, tokens_per_rank: int) -> float:
        return self.states + self.gathered + self.activations_per_token * tokens_per_rank


def training_memory_per_gpu(cfg: ModelConfig, world: int, ep: int = 1) -> TrainingMemory:
    """Memory estimate for pre-training `cfg` on `world` ranks with expert-parallel degree `ep`.

    Every parameter is sharded over all ranks (non-experts by FSDP over W; experts over ep and, by
    FSDP, over W/ep). Activations count the tensors autograd saves in one decoder layer (inputs of
    norms and projections, attention output, the shared and k routed experts' hidden states), in
    bf16, without activation checkpointing.
    """
    p = closed_form_params(cfg)
    L, D, d = cfg.num_hidden_layers, cfg.hidden_size, cfg.head_dim
    states = 16 * p.total / world
    layer_dense = (p.attention + p.router + p.shared + p.norms) / L
    layer_experts = p.routed / L / ep
    gathered = 2 * BF16_BYTES * (layer_dense + layer_experts)
    k = cfg.moe_topk if cfg.is_moe else 0
    shared = cfg.shared_intermediate_size if cfg.has_shared_expert else (0 if cfg.is_moe else cfg.intermediate_size)
    per_layer = 8 * D + 2 * cfg.num_key_value_heads * d + 3 * shared + k * (4 * cfg.intermediate_size + 2 * D)
    return TrainingMemory(states=states, gathered=gathered, activations_per_token=BF16_BYTES * L * per_layer)
