"""Readable terminal output: human units and rich tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .config import ModelConfig


def human(n: float, unit: str = "") -> str:
    """1.2345e9 -> '1.23B' (K, M, B, T); small numbers unchanged."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.4g}{suffix}{unit}"
    return f"{n:.4g}{unit}"


def human_bytes(n: float) -> str:
    """Bytes in KiB/MiB/GiB."""
    for div, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.4g} {suffix}"
    return f"{n:.0f} B"


def print_info(name: str, cfg: ModelConfig, info: dict) -> None:
    """The `hunyuan info` tables."""
    console = Console()
    mlp = f"{cfg.num_experts} experts (top-{cfg.moe_topk})" if cfg.is_moe else "dense MLP"
    t = Table(title=f"{name}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {mlp}", show_header=False)
    t.add_row("total parameters", human(info["total_params"]))
    t.add_row("activated parameters / token", human(info["active_params"]))
    for part, n in info["params_by_part"].items():
        t.add_row(f"  {part}", human(n))
    t.add_row(f"training FLOPs / token (seq {info['seq_len']})", human(info["flops_per_token"]))
    t.add_row("paper C/D = 9.59 N + 2.3e8", human(info["paper_flops_per_token"]))
    t.add_row("KV cache / token (bf16, as built)", human_bytes(info["kv_cache_bytes_per_token"]))
    console.print(t)
    kv = info["kv_cache_table2"]
    t2 = Table(title="KV cache per token, bf16 (paper Table 2)")
    t2.add_column("attention")
    t2.add_column("bytes / token", justify="right")
    t2.add_column("vs MHA", justify="right")
    for k, v in kv.items():
        t2.add_row(k, f"{v:,}", f"{v / kv['MHA']:.1%}")
    console.print(t2)
