"""Context stages: the run as phases of steps, each with its sequence length, data, schedule and RoPE.

Phase 0 is the run's [data] and [train] (`train.steps` steps, possibly 0 when starting from a model
folder); phase i >= 1 is `[[train.stages]]` i-1, run after it. A phase is a pure function of the
config, so a resumed run finds the phase of any step without saved state besides the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ModelConfig
from .config import LONG, RunConfig
from .schedule import Schedule


@dataclass(frozen=True)
class Phase:
    """Steps [start, start + steps) of a run and what they train on."""

    index: int
    start: int
    steps: int
    seq_len: int
    batch_size: int
    mixture: dict[str, float]
    anneal_mixture: dict[str, float]
    schedule: Schedule  # indexed by the step within the phase
    long_min_tokens: int = 0
    long_from: tuple[str, ...] = ()
    rope_theta: float = 0.0  # 0: keep
    rope_alpha: float = 0.0  # 0: keep

    @property
    def end(self) -> int:
        return self.start + self.steps

    @property
    def uses_long(self) -> bool:
        return self.mixture.get(LONG, 0) > 0

    def rope_config(self, cfg: ModelConfig) -> ModelConfig:
        """`cfg` with this stage's RoPE changes: theta, NTK-alpha, max_position_embeddings = seq_len."""
        scaling = cfg.rope_scaling
        if self.rope_alpha:
            scaling = {**(scaling if scaling and "type" in scaling else {}),
                       "type": "dynamic", "alpha": self.rope_alpha, "factor": 1.0}
        return cfg.replace(rope_theta=self.rope_theta or cfg.rope_theta, rope_scaling=scaling,
                           max_position_embeddings=self.seq_len)


def plan_phases(cfg: RunConfig, world: int = 1) -> list[Phase]:
    """Phase 0 (the base run) and one phase per context stage, with their step ranges."""
    t, d = cfg.train, cfg.data
    phases = [Phase(0, 0, t.steps, d.seq_len, t.batch_size, dict(d.mixture), dict(d.anneal_mixture),
                    Schedule.from_train(t))]
    for i, s in enumerate(t.stages, start=1):
        prev = phases[-1]
        batch = s.batch_size or max(1, prev.batch_size * prev.seq_len // s.seq_len)
        steps = math.ceil(s.tokens / (batch * t.grad_accum * s.seq_len * world))
        schedule = Schedule(s.lr or t.lr, steps, min(s.warmup_steps, steps - 1), "cosine", t.decay_floor,
                            anneal_fraction=0.0)
        phases.append(Phase(i, prev.end, steps, s.seq_len, batch, dict(s.mixture or d.mixture), {}, schedule,
                            s.long_min_tokens or prev.seq_len, tuple(s.long_from), s.rope_theta, s.rope_alpha))
    return phases


def model_config_at(phases: list[Phase], index: int, base: ModelConfig) -> ModelConfig:
    """The model config of phase `index`: the base run's, changed by each stage up to it in turn."""
    for p in phases[1 : index + 1]:
        base = p.rope_config(base)
    return base


def phase_at(phases: list[Phase], step: int) -> Phase:
    """The phase that runs step `step` (0-based); past the end, the last phase."""
    for p in phases:
        if step < p.end:
            return p
    return phases[-1]
