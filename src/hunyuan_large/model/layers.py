"""RMSNorm and the SwiGLU MLP, with the release's numerics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .matmul import Linear, matmul


class RMSNorm(nn.Module):
    """Llama-style RMSNorm: statistics in fp32, cast back, then the weight multiply."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:  # one fused call, bit-identical in fp32
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return self.weight * rms_normalize(x, self.eps)


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x scaled to unit RMS over its last dim (statistics in fp32, cast back): RMSNorm without weight."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, x.shape[-1:], None, eps)
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def fuse_linears(linears: list[nn.Linear]) -> torch.Tensor:
    """One (in, sum of outs) matrix holding the linears' weights; they become views into it.

    `x @ fused` equals `cat([l(x) for l in linears], -1)` as one GEMM: at decode, one wide GEMV
    streams its weights faster than several narrow ones. Parameter names, shapes and values stay.
    An inference-time step: moving the module afterwards would separate the views again.
    """
    fused = torch.cat([lin.weight.detach().t() for lin in linears], dim=1).contiguous()
    start = 0
    for lin in linears:
        n = lin.weight.shape[0]
        lin.weight.data = fused[:, start : start + n].t()
        start += n
    return fused


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases: the dense MLP, the shared expert, one expert."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = Linear(dim, hidden)
        self.up_proj = Linear(dim, hidden)
        self.down_proj = Linear(hidden, dim)
        self.fused_gate_up: torch.Tensor | None = None  # (dim, 2 hidden), see fuse_projections

    def fuse_projections(self) -> None:
        """Compute gate and up as one GEMM from now on (inference; idempotent)."""
        if self.fused_gate_up is None:
            self.fused_gate_up = fuse_linears([self.gate_proj, self.up_proj])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_gate_up is not None:
            gate, up = matmul(x, self.fused_gate_up).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
