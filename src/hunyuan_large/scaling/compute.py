"""Training compute of a run, the batch-size correction to C_min, and power laws in compute.

SPEC §5.4: C ≈ 9.59·N·D + 2.3e8·D (the paper's formula) and C_min = C / (1 + B/B_crit). The
default is the exact count of `accounting.flops_per_token`: the paper's constant attention term
(2.3e8 FLOPs per token, sized for 4K-token contexts of large models) would dominate the compute
of any model under ~25M activated parameters and bury the N-dependence the fits look for.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..accounting import closed_form_params, flops_per_token, paper_compute
from ..config import ModelConfig

COMPUTE_MODES = ("exact", "paper")

# Kaplan et al. (2020), eq. 5.5: the critical batch B_crit(L) = B* / L^(1/alpha_B), L in nats.
KAPLAN_B_STAR = 2e8  # tokens
KAPLAN_ALPHA_B = 0.21

PAPER_BUDGET = 3.1e24  # the C_min at which the paper quotes its optimum (SPEC §5.4)


def training_flops(cfg: ModelConfig, seq_len: int, tokens: float, mode: str = "exact") -> float:
    """Training FLOPs of `tokens` tokens: exact matmul FLOPs (default) or the paper's formula."""
    if mode == "exact":
        return flops_per_token(cfg, seq_len) * tokens
    if mode == "paper":
        return paper_compute(closed_form_params(cfg).active, tokens)
    raise ValueError(f"compute mode {mode!r} is not one of {COMPUTE_MODES}")


def kaplan_b_crit(loss: float) -> float:
    """Kaplan et al.'s critical batch size in tokens at a loss (nats per token)."""
    return KAPLAN_B_STAR / loss ** (1 / KAPLAN_ALPHA_B)


def c_min(compute: float, batch_tokens: float, loss: float, b_crit: float | None = None) -> float:
    """C_min = C / (1 + B/B_crit): the compute the same loss needs at a batch far below B_crit.

    `b_crit` in tokens; None uses Kaplan's B_crit(loss). A batch of 0 means no correction.
    """
    critical = kaplan_b_crit(loss) if b_crit is None else b_crit
    return compute / (1 + batch_tokens / critical)


@dataclass(frozen=True)
class PowerLaw:
    """y = coef · C^exponent."""

    coef: float
    exponent: float

    def __call__(self, compute: float) -> float:
        return self.coef * compute ** self.exponent


# The paper's compute-optimal allocation (SPEC §5.4), C = C_min.
PAPER_N_OPT = PowerLaw(5.9e-3, 0.5305)
PAPER_D_OPT = PowerLaw(3.2, 0.50)
