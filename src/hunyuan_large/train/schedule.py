"""The paper's learning-rate schedule: warmup, long decay, then a short anneal to 0.1x peak.

Steps carry a constant number of tokens, so fractions of tokens are fractions of steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import TrainSection


@dataclass(frozen=True)
class Schedule:
    """lr(step) = peak * factor(step) over `total` steps."""

    peak: float
    total: int
    warmup: int
    decay: str = "cosine"  # cosine | linear | constant
    decay_floor: float = 0.3
    anneal_fraction: float = 0.05
    anneal_floor: float = 0.1

    @classmethod
    def from_train(cls, t: TrainSection) -> Schedule:
        """The schedule a run's [train] section describes."""
        return cls(t.lr, t.steps, t.warmup_steps, t.decay, t.decay_floor, t.anneal_fraction, t.anneal_floor)

    @property
    def anneal_start(self) -> int:
        """First step of the anneal (and of the annealing data mixture)."""
        return self.total - math.ceil(self.anneal_fraction * self.total)

    def phase(self, step: int) -> str:
        if step < self.warmup:
            return "warmup"
        return "anneal" if step >= self.anneal_start else "decay"

    def _decay_end(self) -> float:
        return 1.0 if self.decay == "constant" else self.decay_floor

    def factor(self, step: int) -> float:
        """Multiplier of the peak at `step` (0-based)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        if step < self.anneal_start:
            span = max(1, self.anneal_start - self.warmup)
            p = (step - self.warmup) / span
            if self.decay == "cosine":
                return self.decay_floor + (1 - self.decay_floor) * 0.5 * (1 + math.cos(math.pi * p))
            if self.decay == "linear":
                return 1 - (1 - self.decay_floor) * p
            return 1.0
        n = self.total - self.anneal_start
        start = self._decay_end()
        return start + (self.anneal_floor - start) * (step - self.anneal_start + 1) / n

    def lr(self, step: int) -> float:
        return self.peak * self.factor(step)
