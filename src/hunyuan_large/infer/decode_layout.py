"""The decode layout: speed transforms applied to a model from outside, for inference only.

`prepare_for_decode(model)` rewrites a model in place for generation. Parameter names, shapes and
values stay (the state dict is bit-identical); results change only by float rounding order:
- q/k/v of each K/V-owning attention layer, and gate/up of each SwiGLU, become one fused matrix
  whose columns the parameters then view: one wide GEMV streams faster than several narrow ones;
- a MoE whose shared expert is as wide as a routed expert stores it as slot E of the routed
  stack, so a batch-1 top-1 decode row runs its expert and the shared one as one batched product;
- MoE blocks skip capacity routing (inference is dropless) and run each selected expert once on
  its rows, grouped in Python when the rows are few;
- single-query attention on CPU is two batched products and a softmax (SDPA's CPU kernel costs
  about twice as much for one query), and decode rows that share cached blocks (kv_cache.PrefixKV)
  meet the shared keys in one product instead of a gathered copy per row;
- every linear's skinny CPU product is split across threads (matmul.py), and CPU weights are
  stored column-major (weight_layout.py).
Measured effects: docs/benchmarks.md, "Decode layout".

Each transform swaps a module's class for an inference twin defined here, keeping the module's
parameters (as quantisation libraries swap in their linears). The twins compute no gradients for
the fused weights, and moving the model afterwards would separate the fused views again: prepare
a model once it is on its device, and only for inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.attention import Attention
from ..model.layers import SwiGLU
from ..model.moe import MoE, RoutedExperts
from ..model.rope import apply_rope
from ..model.routing import dropless_choice
from .kv_cache import PrefixKV
from .matmul import SplitLinear, matmul
from .weight_layout import use_column_major_weights


@torch.no_grad()
def prepare_for_decode(model: nn.Module) -> nn.Module:
    """Put `model` (or any module holding our blocks) in eval mode and the decode layout; idempotent."""
    model.eval()
    for m in list(model.modules()):
        if isinstance(m, MoE):  # first: it may move its shared expert into the routed stack
            DecodeMoE.convert(m)
    for m in model.modules():
        if isinstance(m, SwiGLU):
            DecodeSwiGLU.convert(m)
        elif isinstance(m, Attention):
            DecodeAttention.convert(m)
        elif type(m) is nn.Linear:
            m.__class__ = SplitLinear
    if next(model.parameters()).device.type == "cpu":
        use_column_major_weights(model)
    return model


def fuse_linears(linears: list[nn.Linear]) -> torch.Tensor:
    """One (in, sum of outs) matrix holding the linears' weights; they become views into it.

    `x @ fused` equals `cat([l(x) for l in linears], -1)` as one GEMM.
    """
    fused = torch.cat([lin.weight.detach().t() for lin in linears], dim=1).contiguous()
    start = 0
    for lin in linears:
        n = lin.weight.shape[0]
        lin.weight.data = fused[:, start : start + n].t()
        start += n
    return fused


class DecodeSwiGLU(SwiGLU):
    """SwiGLU with gate and up as one GEMM."""

    fused_gate_up: torch.Tensor  # (dim, 2 hidden)

    @classmethod
    def convert(cls, m: SwiGLU) -> None:
        """Turn `m` into this class in place (no-op if it already is)."""
        if isinstance(m, cls):
            return
        m.__class__ = cls
        m.fused_gate_up = fuse_linears([m.gate_proj, m.up_proj])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = matmul(x, self.fused_gate_up).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecodeAttention(Attention):
    """Attention with q/k/v as one GEMM (owner layers) and a single-query CPU kernel."""

    fused_qkv: torch.Tensor | None  # (D, (Hq + 2 Hkv) d) in owner layers

    @classmethod
    def convert(cls, m: Attention) -> None:
        """Turn `m` into this class in place (no-op if it already is)."""
        if isinstance(m, cls):
            return
        m.__class__ = cls
        m.fused_qkv = fuse_linears([m.q_proj, m.k_proj, m.v_proj]) if m.owns_kv else None

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        if self.fused_qkv is None:
            return super()._qkv(x, cos, sin)
        B, T, _ = x.shape
        Hq, Hkv, d = self.n_heads, self.n_kv, self.head_dim
        qkv = matmul(x, self.fused_qkv).view(B, T, Hq + 2 * Hkv, d)
        qk = self._unit(apply_rope(qkv[:, :, : Hq + Hkv], cos, sin))  # q and k rotated as one tensor
        return qk[:, :, :Hq], qk[:, :, Hq:], qkv[:, :, Hq + Hkv :]

    def _attend(self, q: torch.Tensor, k, v, mask: torch.Tensor | None) -> torch.Tensor:
        if isinstance(k, PrefixKV):
            if q.device.type == "cpu":
                return shared_prefix_attention(q * self.head_dim**-0.5, k, v, mask)
            k, v = k.materialize(), v.materialize()
        if q.shape[1] == 1 and q.device.type == "cpu":
            return single_query_attention(q * self.head_dim**-0.5, k, v, mask)
        return super()._attend(q, k, v, mask)


def single_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           mask: torch.Tensor | None) -> torch.Tensor:
    """Decode attention, one scaled query per row: q (B, 1, Hq, d), k and v (B, Hkv, S, d),
    additive mask (B, 1, 1, S) or None -> (B, 1, Hq*d).

    Query head h reads KV head h // (Hq/Hkv), as SDPA's GQA does.
    """
    B, _, Hq, d = q.shape
    Hkv = k.shape[1]
    scores = q.view(B, Hkv, Hq // Hkv, d) @ k.transpose(-1, -2)  # (B, Hkv, Hq/Hkv, S)
    if mask is not None:
        scores = scores + mask
    return (scores.softmax(-1) @ v).view(B, 1, Hq * d)


def shared_prefix_attention(q: torch.Tensor, k: PrefixKV, v: PrefixKV, mask: torch.Tensor | None) -> torch.Tensor:
    """single_query_attention over keys whose first P positions all rows share (kv_cache.PrefixKV):
    every row's queries meet the shared K/V in one product, without a copy per row.

    q (B, 1, Hq, d) scaled; k.shared (1, Hkv, P, d), k.own (B, Hkv, S-P, d); mask (B, 1, 1, S) or None.
    """
    B, _, Hq, d = q.shape
    Hkv, P = k.shared.shape[1], k.shared.shape[2]
    g = Hq // Hkv
    q = q.view(B, Hkv, g, d)
    shared = q.transpose(0, 1).reshape(Hkv, B * g, d) @ k.shared[0].transpose(-1, -2)  # (Hkv, B*g, P)
    scores = torch.cat([shared.view(Hkv, B, g, P).transpose(0, 1), q @ k.own.transpose(-1, -2)], -1)  # (B, Hkv, g, S)
    if mask is not None:
        scores = scores + mask
    p = scores.softmax(-1)
    out = (p[..., :P].transpose(0, 1).reshape(Hkv, B * g, P) @ v.shared[0]).view(Hkv, B, g, d).transpose(0, 1)
    return (out + p[..., P:] @ v.own).reshape(B, 1, Hq * d)


class DecodeMoE(MoE):
    """MoE for inference: dropless top-k, each selected expert run once on its rows."""

    shared_in_stack: bool  # the shared expert is slot E of the routed stacks

    @classmethod
    def convert(cls, m: MoE) -> None:
        """Turn `m` into this class in place (no-op if it already is)."""
        if isinstance(m, cls):
            return
        m.__class__ = cls
        m.shared_in_stack = False
        s = m.shared_mlp
        if s is None:
            return
        DecodeSwiGLU.convert(s)
        ex = m.experts
        E, F2, D = ex.gate_up_proj.shape
        if m.ep is not None or m.top_k != 1 or s.gate_proj.weight.shape[0] * 2 != F2:
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
        m.shared_in_stack = True

    def forward(self, x: torch.Tensor, collect_stats: bool = False, return_routing: bool = False):
        if self.training or self.ep is not None or torch.is_grad_enabled() or collect_stats or return_routing:
            return super().forward(x, collect_stats, return_routing)
        B, T, D = x.shape
        xf = x.reshape(B * T, D)
        probs = self.gate(xf).softmax(dim=-1)  # (N, E) fp32
        return self._infer(xf, probs).view(B, T, D), None, None

    def _infer(self, xf: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
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
                y = _expert_rows(self.experts, e, xf) * weight
                out = y if out is None else out + y
            return self._with_shared(xf, out)
        rows_of: dict[int, list[int]] = {}  # decode: group the few rows in Python, no sort kernels
        for r, e in enumerate(flat.tolist()):
            rows_of.setdefault(e, []).append(r)
        out = torch.zeros_like(xf)
        for e, rows in rows_of.items():
            if len(rows) == 1:  # the common decode case: plain slices, no index tensors
                t = rows[0] // self.top_k
                out[t] += _expert_rows(self.experts, e, xf[t : t + 1])[0] * w[rows[0]]
            else:
                r = torch.tensor(rows, device=xf.device)
                out.index_add_(0, r // self.top_k, _expert_rows(self.experts, e, xf[r // self.top_k]) * w[r, None])
        return self._with_shared(xf, out)

    def _expert_and_shared(self, e: int, weight: float, x: torch.Tensor) -> torch.Tensor:
        """shared(x) + weight * expert_e(x) for one row x (1, D), with the shared expert in slot E:
        slots e and E are one strided (2, ., .) view, so each projection is one bmm."""
        gu, dn = self.experts.gate_up_proj, self.experts.down_proj
        gate, up = torch.bmm(x.expand(2, 1, -1), _with_slot_e(gu, e)).chunk(2, dim=-1)  # (2, 1, F) each
        y = torch.bmm(F.silu(gate) * up, _with_slot_e(dn, e))  # (2, 1, D): [expert e, shared]
        return y[1] + y[0] * weight


def _expert_rows(experts: RoutedExperts, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert `e` on rows x (n, D) as plain products."""
    gate, up = matmul(x, experts.gate_up_proj[e].t()).chunk(2, dim=-1)
    return matmul(F.silu(gate) * up, experts.down_proj[e].t())


def _with_slot_e(stack: torch.Tensor, e: int) -> torch.Tensor:
    """Slots e and E of an (E, out, in) expert stack whose storage holds one more slot E after it,
    as one (2, in, out) strided view: the right operands of x @ W.T for the two matrices."""
    E, out_dim, in_dim = stack.shape
    return stack.as_strided((2, in_dim, out_dim), ((E - e) * stack.stride(0), stack.stride(2), stack.stride(1)),
                            stack.storage_offset() + e * stack.stride(0))
