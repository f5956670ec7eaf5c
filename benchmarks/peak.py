"""The machine's peak matmul throughput: the denominator of every MFU this project reports.

Usage: python benchmarks/peak.py [--device auto]
"""

from __future__ import annotations

import argparse

import torch

from common import machine, print_json, print_table, time_interleaved
from hunyuan_large.runtime import resolve_device
from hunyuan_large.train.mfu import measure_peak_flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    peak = measure_peak_flops(device, seconds=2.0)
    rows = []
    sizes = (1024, 2048, 4096) if device.type == "cpu" else (4096, 8192)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        t = time_interleaved({"mm": lambda: a @ b}, repeats=5)["mm"]
        rows.append([n, str(dtype).removeprefix("torch."), f"{2 * n**3 / t / 1e9:.1f}"])
    print(f"machine: {machine()}")
    print_table("Square GEMM throughput", ["n", "dtype", "GFLOP/s"], rows)
    print(f"\npeak (best of the measured GEMMs, what MFU divides by): {peak / 1e9:.1f} GFLOP/s")
    print_json({"peak_gflops": round(peak / 1e9, 1), "device": device.type})


if __name__ == "__main__":
    main()
