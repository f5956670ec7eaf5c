"""AdamW with the paper's parameter groups: routed experts get a scaled learning rate.

A routed expert sees about k/E of the tokens of a step, so its effective batch is smaller; for
Adam the best learning rate depends on the batch (Li et al. 2024, "surge" phenomenon):
    eps_opt(B) = 2 * eps_max / (sqrt(B_noise / B) + sqrt(B / B_noise)),
and the paper scales the experts' rate down (0.31x in its setting). Router, attention, shared
expert and embeddings use the base rate. Norm weights get no weight decay.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..model.layers import RMSNorm
from ..model.moe import RoutedExperts
from .config import TrainSection


def surge_optimal_lr(batch: float, b_noise: float, lr_max: float = 1.0) -> float:
    """eps_opt(B) for Adam-style optimisers, peaking at lr_max when B = B_noise."""
    return 2 * lr_max / (math.sqrt(b_noise / batch) + math.sqrt(batch / b_noise))


def surge_expert_scale(batch_tokens: float, b_noise: float, top_k: int, num_experts: int) -> float:
    """eps_opt(B k / E) / eps_opt(B): the routed experts' rate relative to the base rate."""
    return surge_optimal_lr(batch_tokens * top_k / num_experts, b_noise) / surge_optimal_lr(batch_tokens, b_noise)


def param_groups(model: nn.Module, weight_decay: float, expert_lr_scale: float) -> list[dict]:
    """Three groups: 'expert' (routed experts, scaled LR), 'no_decay' (norms), 'base'."""
    expert, no_decay, base = [], [], []
    seen: set[int] = set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if isinstance(module, RoutedExperts):
                expert.append(p)
            elif isinstance(module, RMSNorm):
                no_decay.append(p)
            else:
                base.append(p)
    specs = [("base", base, 1.0, weight_decay), ("expert", expert, expert_lr_scale, weight_decay),
             ("no_decay", no_decay, 1.0, 0.0)]
    return [{"params": params, "name": name, "lr_scale": scale, "weight_decay": wd}
            for name, params, scale, wd in specs if params]


def build_optimizer(model: nn.Module, t: TrainSection, expert_lr_scale: float) -> torch.optim.AdamW:
    """AdamW over `param_groups` from a [train] section; each group's lr is lr * lr_scale (the
    schedule rescales it).

    The fused kernel does the whole update in one pass per tensor: on CPU ~9x faster than the
    multi-kernel version, which matters for MoE's many (mostly idle) expert parameters.
    """
    groups = param_groups(model, t.weight_decay, expert_lr_scale)
    for g in groups:
        g["lr"] = t.lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, fused=True)


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float) -> dict[str, float]:
    """Apply the scheduled base rate to every group; returns the rate of each group."""
    for g in optimizer.param_groups:
        g["lr"] = base_lr * g["lr_scale"]
    return {g["name"]: g["lr"] for g in optimizer.param_groups}
