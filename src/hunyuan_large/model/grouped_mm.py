"""Grouped GEMM over stacked expert weights, with a backward that writes one weight gradient.

Autograd through a Python loop of `x_e @ W[e].T` on a stacked W allocates a full (E, ., .)
gradient per slice; this Function computes each segment's products into preallocated outputs.
"""

from __future__ import annotations

import torch


class _GroupedMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, counts: list[int]) -> torch.Tensor:
        # x (R, K) in expert segments; w (E, N, K) -> y (R, N), y_seg = x_seg @ w[e].T
        y = x.new_empty(x.shape[0], w.shape[1])
        start = 0
        for e, n in enumerate(counts):
            if n:
                torch.mm(x[start : start + n], w[e].t(), out=y[start : start + n])
                start += n
        ctx.save_for_backward(x, w)
        ctx.counts = counts
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, w = ctx.saved_tensors
        dy = dy.contiguous()
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dw = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        start = 0
        for e, n in enumerate(ctx.counts):
            if not n:
                continue
            seg = slice(start, start + n)
            if dx is not None:
                torch.mm(dy[seg], w[e], out=dx[seg])
            if dw is not None:
                torch.mm(dy[seg].t(), x[seg], out=dw[e])
            start += n
        return dx, dw, None


def grouped_mm(x: torch.Tensor, w: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """y[seg_e] = x[seg_e] @ w[e].T for consecutive segments of `counts[e]` rows; (R, K) -> (R, N)."""
    if torch.is_autocast_enabled(x.device.type):  # autocast does not reach custom Functions
        dtype = torch.get_autocast_dtype(x.device.type)
        x, w = x.to(dtype), w.to(dtype)
    return _GroupedMM.apply(x, w, counts)
