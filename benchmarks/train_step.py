"""Training step of the `small` preset: tokens/s and MFU, our dispatch vs the naive per-expert loop.

A step is forward + backward + AdamW on (batch, seq_len) random tokens, with the trainer's loss
(cross-entropy + 0.01 * load-balancing loss). `ours` routes as training does (recycle, capacity
1.25); the naive loop has no capacity, so `ours/dropless` is its like-for-like comparison (an
untrained router is unbalanced, and without a capacity its experts get bigger GEMMs). MFU = FLOPs per token (accounting.py, at this
sequence length) x tokens/s / the peak measured by benchmarks/peak.py's GEMM. Three warm-up
steps per variant first: the allocator reaches its steady state (no page faults) after a few.

Usage: python benchmarks/train_step.py [--batch 8 --seq-len 512 --repeats 5]
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from common import machine, print_json, print_table, time_interleaved
from hunyuan_large import HunyuanForCausalLM, ModelConfig
from hunyuan_large.accounting import flops_per_token
from hunyuan_large.model.moe import MoE
from hunyuan_large.runtime import tune_cpu_allocator
from hunyuan_large.train.mfu import measure_peak_flops
from hunyuan_large.train.config import TrainSection
from hunyuan_large.train.optim import build_optimizer
from moe_layer import NaiveMoE


class NaiveBlock(torch.nn.Module):
    """The naive per-expert loop as a drop-in MLP (no routing statistics)."""

    def __init__(self, moe: MoE):
        super().__init__()
        self.inner = NaiveMoE(moe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.reshape(-1, x.shape[-1])).view_as(x)


def step_fn(model, batch, aux_coef: float = 0.01):
    opt = build_optimizer(model, TrainSection(lr=1e-4, weight_decay=0.1, beta1=0.9, beta2=0.95, eps=1e-8), 0.31)

    def step():
        out = model(batch[:, :-1])
        loss = F.cross_entropy(out.logits.flatten(0, 1), batch[:, 1:].flatten())
        if out.aux_loss is not None:
            loss = loss + aux_coef * out.aux_loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tune_cpu_allocator()
    cfg = ModelConfig.from_preset("small")
    torch.manual_seed(0)
    ours = HunyuanForCausalLM(cfg).train()
    ours.set_routing_seed(0)
    dropless = copy.deepcopy(ours)
    dropless.config.set_routing_policy("dropless")  # the layers share this config object
    naive = copy.deepcopy(dropless)
    for layer in naive.model.layers:
        layer.mlp = NaiveBlock(layer.mlp)
    batch = torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len + 1))
    peak = measure_peak_flops(torch.device("cpu"), seconds=2.0)
    t = time_interleaved({"ours": step_fn(ours, batch), "ours/dropless": step_fn(dropless, batch),
                          "naive": step_fn(naive, batch)}, args.repeats, warmup=3)
    tokens = args.batch * args.seq_len
    fpt = flops_per_token(cfg, args.seq_len)
    rows, result = [], {}
    for name, sec in t.items():
        tps = tokens / sec
        mfu = tps * fpt / peak
        result[name] = (tps, mfu)
        rows.append([name, f"{sec * 1e3:.0f}", f"{tps:,.0f}", f"{mfu:.1%}"])
    print(f"machine: {machine()}")
    print(f"model: small preset, {fpt / 1e6:.1f} MFLOP/token (training, seq {args.seq_len}); "
          f"peak {peak / 1e9:.1f} GFLOP/s (fp32 GEMM, same run)")
    print_table(f"Training step (fwd + bwd + AdamW), {args.batch} x {args.seq_len} tokens, "
                f"median of {args.repeats}", ["dispatch", "ms/step", "tokens/s", "MFU"], rows)
    print_json({"tokens_per_s": round(result["ours"][0], 1), "mfu": round(result["ours"][1], 4),
                "vs_naive": round(result["ours/dropless"][0] / result["naive"][0], 3),
                "tokens_per_s_by_variant": {k: round(v[0], 1) for k, v in result.items()},
                "peak_gflops": round(peak / 1e9, 1)})


if __name__ == "__main__":
    main()
