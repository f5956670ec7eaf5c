"""Activation-by-weight products for decoding; on CPU, skinny products are split across threads.

A decode step multiplies a few rows by each weight matrix, a GEMV bound by how fast the weight
streams from memory. MKL runs such a product on one core however many threads torch has.
Splitting the reduction dimension K into C blocks makes it a batched product of C independent
GEMVs, which torch runs one per thread, plus a sum of C small partial results; only the summation
order changes. Measured gains: docs/benchmarks.md ("Decode layout").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SKINNY_ROWS = 16  # products with at most this many rows are memory-bound GEMVs
MIN_BLOCK_K = 128  # a shorter K block is not worth a thread


def _k_blocks(K: int) -> int:
    """How many K blocks a skinny CPU product uses: at most one per thread, dividing K evenly."""
    c = torch.get_num_threads()
    while c > 1 and (K % c or K // c < MIN_BLOCK_K):
        c -= 1
    return c


def matmul(x: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
    """x (..., K) @ wt (K, N) -> (..., N); a CPU product of few rows runs as thread-parallel K blocks."""
    K, N = wt.shape
    rows = x.numel() // K
    c = _k_blocks(K) if x.device.type == "cpu" and rows <= SKINNY_ROWS else 1
    if c == 1:
        return x @ wt
    # (c, rows, K/c) blocks of x; one row needs no transpose (fewer ops: decode is op-bound too)
    xb = x.reshape(c, 1, K // c) if rows == 1 else x.reshape(rows, c, K // c).transpose(0, 1)
    y = torch.bmm(xb, wt.view(c, K // c, N)).sum(0)  # (c, rows, N) partials -> (rows, N)
    return y.view(*x.shape[:-1], N)


class SplitLinear(nn.Linear):
    """nn.Linear (same parameters and state dict) whose CPU product goes through `matmul`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return F.linear(x, self.weight, self.bias)
        y = matmul(x, self.weight.t())
        return y if self.bias is None else y + self.bias
