"""The MoE block: fp32 router, routed experts with stacked weights, shared expert, losses, stats.

Shapes: N tokens (B*T, batch-major), D hidden, E experts, k choices per token, F expert width,
R routed rows (kept token-choices, sorted by expert).

Dispatch: the kept (token, choice) pairs are sorted by (expert, slot) into a packed buffer of R
rows whose expert segments have exact lengths (an [E, C, D] capacity buffer without its empty
slots); one grouped GEMM per projection runs each segment against its expert's slice of the
stacked [E, ., .] weights; a weighted index_add combines. Experts with no tokens cost nothing,
so decode computes only the selected experts on the same path.
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
from .matmul import matmul
from .routing import Routing, dropless_choice, route


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

    def forward_one(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert `e` on rows x (n, D), plain (the decode path)."""
        gate, up = matmul(x, self.gate_up_proj[e].t()).chunk(2, dim=-1)
        return matmul(F.silu(gate) * up, self.down_proj[e].t())


def _with_slot_e(stack: torch.Tensor, e: int) -> torch.Tensor:
    """Slots e and E of an (E, out, in) expert stack whose storage holds one more slot E after it,
    as one (2, in, out) strided view: the right operands of x @ W.T for the two matrices."""
    E, out_dim, in_dim = stack.shape
    return stack.as_strided((2, in_dim, out_dim), ((E - e) * stack.stride(0), stack.stride(2), stack.stride(1)),
                            stack.storage_offset() + e * stack.stride(0))


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
        self.shared_in_stack = False  # see fuse_projections

    @torch.no_grad()
    def fuse_projections(self) -> None:
        """Inference: fuse the shared expert's gate/up and, when it is as wide as a routed expert,
        store it as slot E of the stacked routed weights (parameters become views, values kept).

        A decode row then runs its top-1 expert and the shared one as a single batched product
        of two equal matrices, one per thread, instead of four GEMVs (see _expert_and_shared).
        """
        s = self.shared_mlp
        if s is None:
            return
        s.fuse_projections()
        ex = self.experts
        E, F2, D = ex.gate_up_proj.shape
        if self.ep is not None or self.top_k != 1 or s.gate_proj.weight.shape[0] * 2 != F2:
            return
        # Each slot column-major, as fuse_linears stores the shared expert's fused gate/up.
        gate_up = torch.empty(E + 1, D, F2, dtype=ex.gate_up_proj.dtype, device=ex.gate_up_proj.device)
        down = torch.empty(E + 1, F2 // 2, D, dtype=ex.down_proj.dtype, device=ex.down_proj.device)
        gate_up = gate_up.transpose(1, 2)  # (E+1, 2F, D)
        down = down.transpose(1, 2)  # (E+1, D, F)
        gate_up[:E], gate_up[E] = ex.gate_up_proj, s.fused_gate_up.t()
        down[:E], down[E] = ex.down_proj, s.down_proj.weight
        ex.gate_up_proj.data, ex.down_proj.data = gate_up[:E], down[:E]
        s.gate_proj.weight.data, s.up_proj.weight.data = gate_up[E, : F2 // 2], gate_up[E, F2 // 2 :]
        s.down_proj.weight.data, s.fused_gate_up = down[E], gate_up[E].t()
        self.shared_in_stack = True

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
        if (policy == "dropless" and self.ep is None
                and not (torch.is_grad_enabled() or collect_stats or return_routing)):
            out, routing = self._infer(xf, probs), None
        else:
            capacity = self.cfg.capacity(B * T) if policy != "dropless" else None
            routing = route(probs, self.top_k, policy, capacity, self.generator)
            out = self._with_shared(xf, self._dispatch_combine(xf, routing))
        stats = self._stats(logits, probs, routing) if collect_stats else None
        return out.view(B, T, D), routing, stats

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

    def _expert_and_shared(self, e: int, weight: float, x: torch.Tensor) -> torch.Tensor:
        """shared(x) + weight * expert_e(x) for one row x (1, D), with the shared expert in slot E.

        Slots e and E of the stacked weights are one strided (2, ., .) view, so each projection is
        one bmm over the two matrices.
        """
        gu, dn = self.experts.gate_up_proj, self.experts.down_proj
        gate, up = torch.bmm(x.expand(2, 1, -1), _with_slot_e(gu, e)).chunk(2, dim=-1)  # (2, 1, F) each
        y = torch.bmm(F.silu(gate) * up, _with_slot_e(dn, e))  # (2, 1, D): [expert e, shared]
        return y[1] + y[0] * weight

    def _infer(self, xf: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Inference (dropless, no grad): each selected expert runs once on all of its rows; with the
        shared expert added."""
        if self.shared_in_stack and xf.shape[0] == 1:  # batch-1 decode, top-1: fewest ops
            w, e = dropless_choice(probs, 1)
            return self._expert_and_shared(e.item(), w.item(), xf)
        w, idx = dropless_choice(probs, self.top_k)
        w, flat = w.to(xf.dtype).reshape(-1), idx.reshape(-1)  # (N*k,) token-major
        if flat.numel() > 4 * self.num_experts:  # prefill: sort rows into expert segments
            order = torch.argsort(flat, stable=True)
            counts = torch.bincount(flat, minlength=self.num_experts).tolist()
            tokens = order // self.top_k
            y = self.experts(xf[tokens], w[order], counts)
            return self._with_shared(xf, torch.zeros_like(xf).index_add_(0, tokens, y))
        if xf.shape[0] == 1:  # batch-1 decode: the row's k experts, nothing to scatter
            out = None
            for e, weight in zip(flat.tolist(), w.tolist()):
                y = self.experts.forward_one(e, xf) * weight
                out = y if out is None else out + y
            return self._with_shared(xf, out)
        rows_of: dict[int, list[int]] = {}  # decode: group the few rows in Python, no sort kernels
        for r, e in enumerate(flat.tolist()):
            rows_of.setdefault(e, []).append(r)
        out = torch.zeros_like(xf)
        for e, rows in rows_of.items():
            if len(rows) == 1:  # the common decode case: plain slices, no index tensors
                t = rows[0] // self.top_k
                out[t] += self.experts.forward_one(e, xf[t : t + 1])[0] * w[rows[0]]
            else:
                r = torch.tensor(rows, device=xf.device)
                out.index_add_(0, r // self.top_k, self.experts.forward_one(e, xf[r // self.top_k]) * w[r, None])
        return self._with_shared(xf, out)

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
