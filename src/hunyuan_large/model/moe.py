"""The MoE block: fp32 router, routed experts with stacked weights, shared expert, losses, stats.

Shapes: N tokens (B*T, batch-major), D hidden, E experts, k choices per token, F expert width,
R routed rows (kept token-choices, sorted by expert).

Dispatch: the kept (token, choice) pairs are sorted by (expert, slot) into a packed buffer of R
rows whose expert segments have exact lengths (an [E, C, D] capacity buffer without its empty
slots); one grouped GEMM per projection runs each segment against its expert's slice of the
stacked [E, ., .] weights; a weighted index_add combines. Experts with no tokens cost nothing,
so decode computes only the selected experts on the same path. (The engine's decode layout,
infer/decode_layout.py, replaces this block with a leaner inference-only twin.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .expert_parallel import ExpertParallel, dispatch_to_experts
from .grouped import grouped_swiglu
from .layers import SwiGLU
from .routing import Routing, route


@dataclass
class RouterStats:
    """Per-layer routing statistics for one forward (detached tensors; no host sync)."""

    tokens_per_expert: torch.Tensor  # (E,) after capacity
    chosen_per_expert: torch.Tensor  # (E,) the router's top-k choices before capacity
    dropped: torch.Tensor  # () token-choices without an expert
    recycled: torch.Tensor  # () token-choices moved to another expert
    aux_loss: torch.Tensor  # ()
    z_loss: torch.Tensor  # ()
    entropy: torch.Tensor  # () mean router entropy (nats)


class Router(nn.Module):
    """`gate.wg`: a bias-free D->E linear evaluated in fp32 whatever the weight's dtype."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.wg = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, D) -> logits (N, E) in fp32."""
        if torch.is_autocast_enabled(x.device.type):  # entering the context costs more than a decode GEMV
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self.forward(x)
        return F.linear(x.float(), self.wg.weight.float())


class RoutedExperts(nn.Module):
    """E SwiGLU experts stored stacked: gate and up fused as (E, 2F, D), down as (E, D, F)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, D, Fw = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * Fw, D))
        self.down_proj = nn.Parameter(torch.empty(E, D, Fw))

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None, counts: list[int]) -> torch.Tensor:
        """x (R, D) sorted by expert with `counts[e]` rows each, scaled by weight (R,) -> (R, D)."""
        return grouped_swiglu(x, _local(self.gate_up_proj), _local(self.down_proj), weight, counts)


def _local(p: torch.Tensor) -> torch.Tensor:
    """This rank's experts of an expert-parallel (DTensor) weight; the weight itself otherwise."""
    return p.to_local() if hasattr(p, "to_local") else p


class MoE(nn.Module):
    """Shared expert (sees every token) + top-k routed experts; output is their plain sum."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.num_experts = cfg.num_experts
        self.top_k = cfg.moe_topk
        self.shared_mlp = (
            SwiGLU(cfg.hidden_size, cfg.shared_intermediate_size) if cfg.has_shared_expert else None
        )
        self.gate = Router(cfg)
        self.experts = RoutedExperts(cfg)
        self.generator: torch.Generator | None = None  # set by the model for seeded recycling
        self.ep: ExpertParallel | None = None  # set when experts are sharded across ranks

    def forward(
        self, x: torch.Tensor, collect_stats: bool = False, return_routing: bool = False
    ) -> tuple[torch.Tensor, Routing | None, RouterStats | None]:
        """x (B, T, D) -> (output (B, T, D), routing or None, stats or None).

        Training uses the configured routing policy; eval and inference are always dropless.
        """
        B, T, D = x.shape
        xf = x.reshape(B * T, D)
        logits = self.gate(xf)  # (N, E) fp32
        probs = logits.softmax(dim=-1)
        policy = self.cfg.routing_policy if self.training else "dropless"
        capacity = self.cfg.capacity(B * T) if policy != "dropless" else None
        routing = route(probs, self.top_k, policy, capacity, self.generator)
        out = self._with_shared(xf, self._dispatch_combine(xf, routing))
        stats = self._stats(logits, probs, routing) if collect_stats else None
        return out.view(B, T, D), routing if return_routing else None, stats

    def _dispatch_combine(self, xf: torch.Tensor, routing: Routing) -> torch.Tensor:
        expert = routing.expert.reshape(-1)  # (N*k,) token-major
        kept = (expert >= 0).nonzero().squeeze(1)
        # Sort kept pairs by expert: each expert's rows become one contiguous segment.
        pairs = kept[torch.argsort(expert[kept], stable=True)]  # (R,) flat (token, choice) ids
        tokens = pairs // self.top_k
        counts = torch.bincount(expert[pairs], minlength=self.num_experts)
        weight = routing.weight.reshape(-1)[pairs]
        if self.ep is None:
            y = self.experts(xf[tokens], weight, counts.tolist())  # (R, D)
        else:
            y = dispatch_to_experts(xf[tokens], counts, lambda rows, c: self.experts(rows, None, c), self.ep)
            y = y * weight[:, None].to(y.dtype)
        return torch.zeros_like(xf).index_add_(0, tokens, y.to(xf.dtype))

    def _with_shared(self, xf: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
        """The block's output: shared expert (if any) + routed experts."""
        return routed if self.shared_mlp is None else self.shared_mlp(xf) + routed

    def _stats(self, logits: torch.Tensor, probs: torch.Tensor, routing: Routing) -> RouterStats:
        E = self.num_experts
        N = probs.shape[0]
        chosen = torch.bincount(routing.chosen.reshape(-1), minlength=E)
        frac = chosen.float() / N  # fraction of tokens choosing each expert (sums to k)
        aux = E * (probs.mean(dim=0) * frac).sum()
        z = torch.logsumexp(logits, dim=-1).pow(2).mean()
        entropy = -(probs * torch.log(probs.clamp_min(1e-20))).sum(-1).mean()
        return RouterStats(
            tokens_per_expert=routing.counts(E).detach(),
            chosen_per_expert=chosen.detach(),
            dropped=routing.dropped.sum().detach(),
            recycled=routing.recycled.sum().detach(),
            aux_loss=aux,
            z_loss=z,
            entropy=entropy.detach(),
        )
