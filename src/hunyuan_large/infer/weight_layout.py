"""A CPU weight layout for decoding: every matrix stored column-major, same shapes and values.

Decode multiplies a few rows by each weight, a GEMV bound by how fast the weight streams from
memory. With the usual row-major weight, `x @ W.T` runs MKL's dot-product GEMV; with W column-major
(W.T contiguous) it runs the column (axpy) form, which streams faster on the CPUs we measured
(docs/benchmarks.md, "Decode layout"). Prefill GEMMs run about as fast either way. Only the memory
order changes (a transposed copy viewed back), so module names, shapes, state dicts and results
stay the same up to float rounding order.
"""

from __future__ import annotations

import torch
from torch import nn


def is_column_major(t: torch.Tensor) -> bool:
    """Whether the last two dims of `t` are stored column by column (a fused block may be wider)."""
    return t.dim() >= 2 and t.stride(-2) == 1 and t.stride(-1) >= t.shape[-2]


@torch.no_grad()
def use_column_major_weights(model: nn.Module) -> None:
    """Re-store every CPU matrix parameter of `model` column-major, in place (tied weights once)."""
    for p in model.parameters():
        if p.dim() >= 2 and p.device.type == "cpu" and not is_column_major(p):
            p.data = p.data.transpose(-1, -2).contiguous().transpose(-1, -2)
