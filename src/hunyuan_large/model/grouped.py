"""Grouped SwiGLU over stacked expert weights, as one autograd Function.

Rows arrive sorted by expert in consecutive segments of `counts[e]` rows. Each segment runs one
GEMM per projection against its expert's slice of the stacked weights, writing into
preallocated outputs; the backward does the same and writes each expert's weight gradient into
one preallocated (E, ., .) tensor. Autograd through a Python loop over slices of a stacked weight
would instead allocate a full-size gradient per slice, and slicing the fused gate/up output
would allocate two more; on CPU those fresh allocations (page faults) cost as much as the GEMMs.
Experts with no rows cost nothing, so decode computes only the selected experts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _segments(counts: list[int]):
    start = 0
    for e, n in enumerate(counts):
        if n:
            yield e, slice(start, start + n)
            start += n


def _grouped_mm(x: torch.Tensor, w: torch.Tensor, counts: list[int], transpose: bool) -> torch.Tensor:
    """out[seg_e] = x[seg_e] @ w[e].T (transpose) or x[seg_e] @ w[e]."""
    out = x.new_empty(x.shape[0], w.shape[1] if transpose else w.shape[2])
    for e, seg in _segments(counts):
        torch.mm(x[seg], w[e].t() if transpose else w[e], out=out[seg])
    return out


def _weight_grad(dy: torch.Tensor, x: torch.Tensor, like: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """dW[e] = dy[seg_e].T @ x[seg_e]; zeros for experts without rows."""
    dw = torch.empty_like(like)
    for e, n in enumerate(counts):
        if not n:
            dw[e].zero_()
    for e, seg in _segments(counts):
        torch.mm(dy[seg].t(), x[seg], out=dw[e])
    return dw


class _GroupedSwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_gate_up, w_down, weight, counts):
        # x (R, D); w_gate_up (E, 2F, D); w_down (E, D, F); weight (R,) or None -> (R, D)
        width = w_down.shape[2]
        h = _grouped_mm(x, w_gate_up, counts, transpose=True)  # (R, 2F)
        gate, up = h[:, :width], h[:, width:]
        act = F.silu(gate)  # (R, F), kept for the backward
        a = act * up
        y = _grouped_mm(a, w_down, counts, transpose=True)  # (R, D) before the combine weight
        ctx.save_for_backward(x, w_gate_up, w_down, weight, h, act, a, y)
        ctx.counts = counts
        return y if weight is None else y * weight[:, None]

    @staticmethod
    def backward(ctx, dout):
        x, w_gate_up, w_down, weight, h, act, a, y = ctx.saved_tensors
        counts, width = ctx.counts, w_down.shape[2]
        dout = dout.contiguous()
        if weight is None:
            d_weight, dy = None, dout
        else:
            d_weight = torch.linalg.vecdot(dout, y)  # (R,)
            dy = dout * weight[:, None]
        d_down = _weight_grad(dy, a, w_down, counts)
        da = _grouped_mm(dy, w_down, counts, transpose=False)  # (R, F)
        dh = torch.empty_like(h)  # (R, 2F): d gate | d up, written in place
        torch.mul(da, act, out=dh[:, width:])
        torch.ops.aten.silu_backward.grad_input(da * h[:, width:], h[:, :width], grad_input=dh[:, :width])
        d_gate_up = _weight_grad(dh, x, w_gate_up, counts)
        dx = _grouped_mm(dh, w_gate_up, counts, transpose=False)  # (R, D)
        return dx, d_gate_up, d_down, d_weight, None


def grouped_swiglu(
    x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, weight: torch.Tensor | None,
    counts: list[int],
) -> torch.Tensor:
    """weight[r] * down_e(silu(gate_e(x[r])) * up_e(x[r])) for rows in expert segments (weight optional)."""
    if torch.is_autocast_enabled(x.device.type):  # autocast does not reach custom Functions
        dtype = torch.get_autocast_dtype(x.device.type)
        x, w_gate_up, w_down = x.to(dtype), w_gate_up.to(dtype), w_down.to(dtype)
    return _GroupedSwiGLU.apply(x, w_gate_up, w_down, None if weight is None else weight.to(x.dtype), counts)
