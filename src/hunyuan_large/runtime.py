"""Process-level settings for speed: device choice and the CPU allocator."""

from __future__ import annotations

import ctypes
import sys

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def tune_cpu_allocator() -> bool:
    """Let glibc keep large freed blocks for reuse instead of unmapping them.

    PyTorch's CPU allocator is plain malloc; glibc serves blocks over 32 MB with mmap and unmaps
    them on free, so every training step page-faults its activations and the (E, ., .) expert
    gradients in again (measured: ~9% of an MoE layer's step). Raising the mmap and trim
    thresholds makes such blocks come from, and return to, the heap. Linux/glibc only; returns
    whether it applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
