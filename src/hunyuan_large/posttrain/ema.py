"""An exponential moving average of the policy's weights, checkpointed beside it.

After every optimizer step: ema <- decay * ema + (1 - decay) * policy, for every parameter and
floating buffer. `PolicyWithEMA` puts both under one module so the run's checkpoints (model,
optimizer, EMA) stay one atomic, exactly resumable unit.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class PolicyWithEMA(nn.Module):
    """The trained policy and a frozen averaged copy of it."""

    def __init__(self, policy: nn.Module, decay: float):
        super().__init__()
        self.policy = policy
        self.ema = copy.deepcopy(policy).eval().requires_grad_(False)
        self.decay = decay
        self.config = policy.config  # checkpoints record the model's config

    @torch.no_grad()
    def update(self) -> None:
        """ema <- decay * ema + (1 - decay) * policy."""
        torch._foreach_lerp_(_floats(self.ema), _floats(self.policy), 1.0 - self.decay)


def _floats(module: nn.Module) -> list[torch.Tensor]:
    """Parameters (a tied weight once) and floating buffers, in module order."""
    return [*module.parameters(), *(b for b in module.buffers() if b.is_floating_point())]
