"""The machine's peak matmul throughput: the denominator of every MFU this project reports.

Usage: python benchmarks/peak.py [--device auto]
"""

from __future__ import annotations

import argparse

import torch

from common import machine, print_json, print_table
from hunyuan_large.runtime import resolve_device
from hunyuan_large.train.mfu import gemm_flops, measure_peak_flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    sizes = (1024, 2048, 4096) if device.type == "cpu" else (4096, 8192)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    flops = {n: gemm_flops(n, dtype, device, seconds=1.0) for n in sizes}
    trainer_peak = measure_peak_flops(device)
    print(f"machine: {machine()}")
    print_table("Square GEMM throughput (best of 3 batches)", ["n", "dtype", "GFLOP/s"],
                [[n, str(dtype).removeprefix("torch."), f"{f / 1e9:.1f}"] for n, f in flops.items()])
    print(f"\npeak the trainer measures at start (what its MFU divides by): {trainer_peak / 1e9:.1f} GFLOP/s")
    print_json({"peak_gflops": round(max(flops.values()) / 1e9, 1), "trainer_peak_gflops": round(trainer_peak / 1e9, 1),
                "device": device.type})


if __name__ == "__main__":
    main()
