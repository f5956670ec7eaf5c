"""GridSpec: where on each isoFLOP curve the planned runs go, and how compute is counted."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError, require
from .compute import COMPUTE_MODES
from .options import option


class GridError(UserError):
    """A grid specification that cannot be planned."""


@dataclass(frozen=True)
class GridSpec:
    """Where on each isoFLOP curve the runs go, and how compute is counted."""

    points: int = option(5, "runs per budget")
    spread: float = option(8.0, "largest / smallest activated-parameter target on a curve")
    tokens_per_param: float = option(20.0, "D/N of the curve's centre (Chinchilla: ~20)")
    min_steps: int = option(50, "fewest optimizer steps a run may get (fewer would measure the warmup)")
    compute: str = option("exact", "exact (accounting.flops_per_token) or paper (9.59 N D + 2.3e8 D)")

    def __post_init__(self) -> None:
        require([
            (self.points >= 3, f"points must be >= 3 (a quadratic needs three), got {self.points}"),
            (self.spread > 1, f"spread must be > 1, got {self.spread}"),
            (self.tokens_per_param > 0, f"tokens_per_param must be > 0, got {self.tokens_per_param}"),
            (self.min_steps >= 1, f"min_steps must be >= 1, got {self.min_steps}"),
            (self.compute in COMPUTE_MODES, f"compute {self.compute!r} is not one of {', '.join(COMPUTE_MODES)}"),
        ], GridError)
