"""The shape rule: how width, depth, heads, experts and expert width grow with model size.

One knob sets the size: the hidden size, a multiple of the head dim. Depth follows a fixed
aspect ratio (hidden / layers), the query heads are hidden / head_dim with one KV head per
`kv_group` of them, the expert count and top-k stay fixed, and every expert (and the shared
MLP) is `expert_ratio` x hidden wide. Everything else (vocabulary, CLA, QK-norm, shared expert,
routing) comes from the base model. `ladder` lists every model the rule can build with its exact
activated-parameter count (accounting.py), from which the planner picks sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..accounting import closed_form_params
from ..config import ModelConfig
from ..errors import UserError, require
from .options import option


class ShapeError(UserError):
    """A shape rule that cannot build the model asked for."""


@dataclass(frozen=True)
class ShapeRule:
    """Defaults match the demo model (hidden 256, 4 layers, 4 heads of 64, 1 KV head, 8 experts)."""

    aspect: float = option(64.0, "hidden_size / num_hidden_layers")
    head_dim: int = option(64, "the hidden size grows in steps of this")
    kv_group: int = option(4, "query heads per KV head (GQA), at most")
    num_experts: int = option(8, "routed experts per layer")
    moe_topk: int = option(1, "experts per token")
    expert_ratio: float = option(1.5, "expert (and shared MLP) width / hidden_size")
    max_hidden: int = option(32768, "the largest hidden size considered")

    def __post_init__(self) -> None:
        require([
            (self.aspect > 0, f"aspect must be > 0, got {self.aspect}"),
            (self.head_dim >= 2 and self.head_dim % 2 == 0, f"head_dim must be even and >= 2, got {self.head_dim}"),
            (self.kv_group >= 1, f"kv_group must be >= 1, got {self.kv_group}"),
            (1 <= self.moe_topk <= self.num_experts,
             f"moe_topk {self.moe_topk} must be in [1, num_experts={self.num_experts}]"),
            (self.expert_ratio > 0, f"expert_ratio must be > 0, got {self.expert_ratio}"),
            (self.max_hidden >= self.head_dim, f"max_hidden must be >= head_dim {self.head_dim}"),
        ], ShapeError, "shape rule: ")

    def fields(self, hidden: int) -> dict[str, int]:
        """The ModelConfig fields this rule sets for one hidden size (a multiple of head_dim)."""
        heads = hidden // self.head_dim
        # The largest KV-head count that divides the heads and keeps >= kv_group queries per KV head.
        kv = max(k for k in range(1, max(1, heads // self.kv_group) + 1) if heads % k == 0)
        return {
            "hidden_size": hidden,
            "num_hidden_layers": max(1, round(hidden / self.aspect)),
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "intermediate_size": max(8, 8 * round(self.expert_ratio * hidden / 8)),  # GEMM-friendly
            "num_experts": self.num_experts,
            "moe_topk": self.moe_topk,
        }

    def build(self, base: ModelConfig, hidden: int) -> ModelConfig:
        return base.replace(**self.fields(hidden))

    def ladder(self, base: ModelConfig) -> list[tuple[int, ModelConfig]]:
        """Every model the rule can build, smallest first, with its activated-parameter count."""
        out = []
        for hidden in range(self.head_dim, self.max_hidden + 1, self.head_dim):
            cfg = self.build(base, hidden)
            out.append((closed_form_params(cfg).active, cfg))
        return out
