"""Shared benchmark helpers: interleaved timing with medians, machine description, a table."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def machine() -> str:
    """One line naming the machine, threads and torch build."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each fn, running them round-robin so drift hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """A plain fixed-width table (copied into docs/benchmarks.md as is)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def print_json(obj: dict) -> None:
    """The last line of every benchmark: one JSON object."""
    print(json.dumps(obj))


def add_threads_arg(ap) -> None:
    """The `--threads` option of the in-process benchmarks."""
    ap.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")


def set_up_process(threads: int | None) -> None:
    """The process settings every in-process benchmark runs with: thread count, tuned CPU allocator."""
    from hunyuan_large.runtime import tune_cpu_allocator

    if threads:
        torch.set_num_threads(threads)
    tune_cpu_allocator()
