"""`make demo`: build the tiny preset, print its accounting, run a forward pass."""

from __future__ import annotations

import time

import torch

from .accounting import summary
from .config import ModelConfig
from .model import HunyuanForCausalLM
from .report import print_info


def run_demo() -> None:
    """Build `tiny`, show its accounting and time one forward pass with a loss."""
    cfg = ModelConfig.from_preset("tiny")
    print_info("tiny", cfg, summary(cfg, seq_len=256))
    torch.manual_seed(0)
    model = HunyuanForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (4, 256))
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model(ids, labels=ids)
    dt = time.perf_counter() - t0
    print(f"forward of {ids.numel()} tokens: {dt * 1e3:.1f} ms, loss {out.loss.item():.3f} "
          f"(ln V = {torch.log(torch.tensor(float(cfg.vocab_size))).item():.3f} for a random model)")
