"""Decoder block, HunyuanModel and HunyuanForCausalLM (SPEC §2).

Shapes: B batch, T new tokens, S attended tokens (past + new), D hidden, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .attention import Attention, KVStore, SharedKV
from .layers import RMSNorm, SwiGLU
from .moe import MoE, RoutedExperts, Router, RouterStats
from .rope import rope_cos_sin
from .routing import Routing


@dataclass
class ModelOutput:
    """What HunyuanModel / HunyuanForCausalLM return."""

    last_hidden_state: torch.Tensor | None = None  # (B, T, D) after the final norm
    logits: torch.Tensor | None = None  # (B, T, V) float32
    loss: torch.Tensor | None = None  # shifted cross-entropy only (the release's loss)
    aux_loss: torch.Tensor | None = None  # load-balancing loss, mean over MoE layers
    z_loss: torch.Tensor | None = None  # router z-loss, mean over MoE layers
    hidden_states: list[torch.Tensor] | None = None  # [embeddings, layer 0..L-2 outputs, final norm]
    routing: list[Routing] | None = None  # per MoE layer
    router_stats: list[RouterStats] = field(default_factory=list)  # per MoE layer


class DecoderLayer(nn.Module):
    """Pre-norm: h = x + Attn(norm(x)); out = h + MLP(norm(h))."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer_idx)
        self.mlp: nn.Module = MoE(cfg) if cfg.is_moe else SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)  # identity in eval mode and at p = 0

    def forward(self, x, cos, sin, mask, shared_kv=None, cache=None, collect_stats=False, return_routing=False):
        a, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, shared_kv=shared_kv, cache=cache)
        h = x + self.dropout(a)
        if isinstance(self.mlp, MoE):
            m, routing, stats = self.mlp(self.post_attention_layernorm(h), collect_stats=collect_stats,
                                         return_routing=return_routing)
        else:
            m, routing, stats = self.mlp(self.post_attention_layernorm(h)), None, None
        return h + self.dropout(m), kv, routing, stats


def attention_bias(
    attention_mask: torch.Tensor | None, T: int, S: int, dtype: torch.dtype, device: torch.device,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Additive (B, 1, T, S) mask, or None when plain causal attention (or none) suffices: the T
    new tokens see all S - T past ones and each other causally (attention.py aligns it).

    `attention_mask` (B, S) marks real keys with 1. `segment_ids` (B, T) (no past) numbers the
    documents packed into a row: a token attends only within its own (block-diagonal causal).
    Disallowed entries get the dtype's minimum rather than -inf, as the release does, so fully
    masked rows (left padding) stay finite.
    """
    if attention_mask is None and segment_ids is None:
        return None
    past = S - T
    q_pos = torch.arange(past, S, device=device)[:, None]
    allowed = torch.arange(S, device=device)[None, :] <= q_pos  # (T, S) causal
    allowed = allowed[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :].bool()
    if segment_ids is not None:
        allowed = allowed & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)


class HunyuanModel(nn.Module):
    """Embedding, L decoder layers with CLA K/V sharing, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, S) 1 = real token
        position_ids: torch.Tensor | None = None,  # (B, T) or (1, T)
        segment_ids: torch.Tensor | None = None,  # (B, T) packed documents (see attention_bias)
        cache: KVStore | None = None,
        past_length: int = 0,
        output_hidden_states: bool = False,
        output_routing: bool = False,
        collect_stats: bool | None = None,
    ) -> ModelOutput:
        B, T = input_ids.shape
        S = past_length + T
        if position_ids is None:
            position_ids = torch.arange(past_length, S, device=input_ids.device)[None]
        x = self.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(self.cfg, position_ids, S, x.dtype)
        mask = attention_bias(attention_mask, T, S, x.dtype, x.device, segment_ids)
        collect = self.training if collect_stats is None else collect_stats

        out = ModelOutput(hidden_states=[] if output_hidden_states else None,
                          routing=[] if output_routing else None)
        shared: SharedKV | None = None
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                out.hidden_states.append(x)
            x, kv, routing, stats = layer(x, cos, sin, mask, shared_kv=shared, cache=cache,
                                          collect_stats=collect, return_routing=output_routing)
            if self.cfg.owns_kv(i):
                shared = kv
            if routing is not None and output_routing:
                out.routing.append(routing)
            if stats is not None:
                out.router_stats.append(stats)
        x = self.norm(x)
        if output_hidden_states:
            out.hidden_states.append(x)
        out.last_hidden_state = x
        if out.router_stats:
            out.aux_loss = torch.stack([s.aux_loss for s in out.router_stats]).mean()
            out.z_loss = torch.stack([s.z_loss for s in out.router_stats]).mean()
        return out


class HunyuanForCausalLM(nn.Module):
    """HunyuanModel + LM head (tied to the embedding when `tie_word_embeddings`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = HunyuanModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The release's init: N(0, initializer_range) for linears, embeddings and experts."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, std)
            elif isinstance(m, RoutedExperts):
                m.gate_up_proj.normal_(0.0, std)
                m.down_proj.normal_(0.0, std)
            elif isinstance(m, RMSNorm):
                m.weight.fill_(1.0)
        pad = self.config.pad_token_id
        if pad is not None:
            self.model.embed_tokens.weight[pad].zero_()

    def set_routing_seed(self, seed: int) -> torch.Generator:
        """Give all MoE layers one seeded generator for recycle routing; returns it."""
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
        for m in self.modules():
            if isinstance(m, MoE):
                m.generator = gen
        return gen

    def set_rope(self, rope_theta: float, rope_scaling: dict | None, max_position_embeddings: int) -> None:
        """Change RoPE in place: every layer reads the one config object, and cos/sin follow it.

        The tables are computed from the config at each forward (inv_freq is cached by base), so
        nothing stale survives; a context-extension stage calls this between steps.
        """
        new = self.config.replace(rope_theta=rope_theta, rope_scaling=rope_scaling,
                                  max_position_embeddings=max_position_embeddings)  # validates
        assert self.model.cfg is self.config, "the model's layers must share its config"
        for name in ("rope_theta", "rope_scaling", "max_position_embeddings"):
            setattr(self.config, name, getattr(new, name))

    def keep_router_fp32(self) -> None:
        """The release constructs the router in fp32; keep it so under a bf16 model."""
        for m in self.modules():
            if isinstance(m, Router):
                m.float()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: KVStore | None = None,
        past_length: int = 0,
        logits_to_keep: int = 0,
        output_hidden_states: bool = False,
        output_routing: bool = False,
        collect_stats: bool | None = None,
    ) -> ModelOutput:
        """Logits (float32) for the last `logits_to_keep` positions (0 = all); CE loss with labels."""
        out = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         segment_ids=segment_ids, cache=cache,
                         past_length=past_length, output_hidden_states=output_hidden_states,
                         output_routing=output_routing, collect_stats=collect_stats)
        h = out.last_hidden_state
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        out.logits = self.lm_head(h).float()
        if labels is not None:
            out.loss = causal_lm_loss(out.logits, labels)
        return out


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of position t predicting labels[t+1]; -100 is ignored."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )
