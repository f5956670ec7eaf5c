"""One MoE layer, forward + backward: our dispatch (each policy) vs a naive loop vs a dense bound.

- ours/<policy>: the package's MoE block in training mode (router, routing, grouped GEMMs).
- naive: the common per-expert loop over separate expert modules (gather the expert's tokens,
  run it, index_add back), as Mixtral-style HF code does.
- dense: one SwiGLU of width F * (shared + k): the same activated FLOPs, no routing (lower bound).
Also decode (1 token, inference): our block vs just the selected + shared expert run densely.

Usage: python benchmarks/moe_layer.py [--tokens 4096 --hidden 512 --width 1024 --experts 16]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from common import machine, print_json, print_table, time_interleaved
from hunyuan_large import ModelConfig
from hunyuan_large.infer.decode_layout import prepare_for_decode
from hunyuan_large.model.layers import SwiGLU
from hunyuan_large.model.moe import MoE
from hunyuan_large.runtime import tune_cpu_allocator


class NaiveMoE(nn.Module):
    """Per-expert loop over separate modules (the baseline), same weights as ours."""

    def __init__(self, ours: MoE):
        super().__init__()
        E, two_f, D = ours.experts.gate_up_proj.shape
        f = two_f // 2
        self.router = nn.Linear(D, E, bias=False)
        self.router.weight.data.copy_(ours.gate.wg.weight)
        self.experts = nn.ModuleList(SwiGLU(D, f) for _ in range(E))
        for e, ex in enumerate(self.experts):
            ex.gate_proj.weight.data.copy_(ours.experts.gate_up_proj[e, :f])
            ex.up_proj.weight.data.copy_(ours.experts.gate_up_proj[e, f:])
            ex.down_proj.weight.data.copy_(ours.experts.down_proj[e])
        self.shared = ours.shared_mlp
        self.k = ours.top_k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = F.linear(x.float(), self.router.weight.float()).softmax(-1)
        w, idx = probs.topk(self.k, dim=-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, choice = torch.where(idx == e)
            if tok.numel():
                out.index_add_(0, tok, expert(x[tok]) * w[tok, choice, None])
        return out + self.shared(x)


def build(tokens: int, hidden: int, width: int, experts: int, topk: int, capacity_factor: float):
    cfg = ModelConfig.from_preset(
        "small", hidden_size=hidden, intermediate_size=width, num_experts=experts, moe_topk=topk,
        capacity_factor=capacity_factor, num_attention_heads=8, num_key_value_heads=2,
    )
    torch.manual_seed(0)
    ours = MoE(cfg)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.02)
    ours.generator = torch.Generator().manual_seed(0)
    dense = SwiGLU(hidden, width * (1 + topk))
    x = torch.randn(1, tokens, hidden)
    return cfg, ours, NaiveMoE(ours), dense, x


def train_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, policy: str | None = None):
    def run():
        for p in module.parameters():
            p.grad = None
        xi = x.detach().requires_grad_()
        if policy is not None:
            module.cfg.set_routing_policy(policy)
            out = module(xi, collect_stats=True)[0]
        else:
            out = module(xi.view(-1, xi.shape[-1])).view_as(xi)
        out.backward(grad)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--topk", type=int, default=1)
    ap.add_argument("--capacity-factor", type=float, default=1.25)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    tune_cpu_allocator()  # applies to every variant alike
    cfg, ours, naive, dense, x = build(args.tokens, args.hidden, args.width, args.experts, args.topk,
                                       args.capacity_factor)
    ours.train()
    grad = torch.randn_like(x)
    fns = {f"ours/{p}": train_step(ours, x, grad, p) for p in ("dropless", "drop", "recycle")}
    fns["naive"] = train_step(naive, x, grad)
    fns["dense"] = train_step(dense, x, grad)
    t = time_interleaved(fns, args.repeats, warmup=3)  # the allocator settles after a few steps

    # Decode: one token through the engine's decode layout, against the selected expert + shared
    # expert run densely.
    ours = prepare_for_decode(ours)
    x1 = torch.randn(1, 1, args.hidden)
    with torch.no_grad():
        e = int(ours.gate(x1.view(1, -1)).argmax())
    gu, dn = ours.experts.gate_up_proj[e], ours.experts.down_proj[e]
    f = args.width

    def selected_dense():
        h = x1 @ gu.t()
        return (F.silu(h[..., :f]) * h[..., f:]) @ dn.t() + ours.shared_mlp(x1)

    with torch.no_grad():
        td = time_interleaved({"ours": lambda: ours(x1), "selected": selected_dense}, repeats=200, warmup=20)

    ms = {k: v * 1e3 for k, v in t.items()}
    rows = [[k, f"{v:.1f}", f"{v / ms['dense']:.2f}x", f"{ms['naive'] / v:.2f}x"] for k, v in ms.items()]
    print(f"machine: {machine()}")
    print_table(
        f"MoE layer fwd+bwd: {args.tokens} tokens, D={args.hidden}, F={args.width}, E={args.experts}, "
        f"top-{args.topk}, 1 shared, capacity factor {args.capacity_factor}, fp32, median of {args.repeats}",
        ["variant", "ms", "vs dense", "naive / this"], rows,
    )
    print_table("Decode, 1 token (inference)", ["variant", "us"],
                [["ours", f"{td['ours'] * 1e6:.0f}"], ["selected + shared dense", f"{td['selected'] * 1e6:.0f}"]])
    print_json({
        "ms": {k: round(v, 3) for k, v in ms.items()},
        "vs_dense": round(ms["ours/recycle"] / ms["dense"], 3),
        "vs_naive": round(ms["naive"] / ms["ours/recycle"], 3),
        "decode_us": {"ours": round(td["ours"] * 1e6, 1), "selected_dense": round(td["selected"] * 1e6, 1)},
        "decode_vs_selected": round(td["ours"] / td["selected"], 3),
    })


if __name__ == "__main__":
    main()
