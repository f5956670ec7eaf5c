"""Measured peak matmul throughput, the denominator of MFU."""

from __future__ import annotations

import functools
import time

import torch


@functools.cache
def measure_peak_flops(device: torch.device, seconds: float = 0.5) -> float:
    """FLOP/s of the best large square GEMM: fp32 on CPU, bf16 on CUDA (what training computes in).

    The best of a few sizes and repeats, so MFU is measured against the most this machine does.
    Measured once per process and device: a sweep of many runs pays for it once.
    """
    sizes, dtype = ((1024, 2048), torch.float32) if device.type == "cpu" else ((4096, 8192), torch.bfloat16)
    return max(gemm_flops(n, dtype, device, seconds / len(sizes)) for n in sizes)


def gemm_flops(n: int, dtype: torch.dtype, device: torch.device, seconds: float) -> float:
    """FLOP/s of an n x n GEMM in `dtype`, best of three timed batches."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def run(reps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    run(2)  # warm up
    per_call = run(3) / 3
    reps = max(3, int(seconds / 3 / max(per_call, 1e-6)))
    best = min(run(reps) / reps for _ in range(3))
    return 2 * n**3 / best
