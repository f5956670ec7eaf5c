"""Shared fixtures: the reference data folder and small model builders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hunyuan_large import HunyuanForCausalLM, ModelConfig

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"


def reference_dir(name: str) -> Path:
    """A folder of ../shared/reference, or skip the test with the reason."""
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference data {path} is absent")
    return path


@pytest.fixture
def tiny_ref() -> Path:
    return reference_dir("tiny")


def make_model(seed: int = 0, **overrides) -> HunyuanForCausalLM:
    """A tiny random model whose norms are perturbed so a misplaced norm shows in the output."""
    torch.manual_seed(seed)
    cfg = ModelConfig.from_preset("tiny", initializer_range=0.1, **overrides)
    model = HunyuanForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
    return model.eval()


def dense_weights(routing, num_experts: int) -> torch.Tensor:
    """(N, E) combine weight per token and expert (0 = not selected), like the release's."""
    N = routing.expert.shape[0]
    out = torch.zeros(N, num_experts + 1, dtype=routing.weight.dtype, device=routing.weight.device)
    out.scatter_add_(1, torch.where(routing.dropped, num_experts, routing.expert), routing.weight)
    return out[:, :num_experts]
