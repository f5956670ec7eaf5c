"""The single-stage DPO objective of Hunyuan-Large's post-training, as pure functions.

    delta = (log pi(y+) - log pi_ref(y+)) - (log pi(y-) - log pi_ref(y-))
    loss  = mean_pairs[-log sigmoid(beta * delta)] + nll_weight * NLL(y+)

log-probs are sums over response tokens (or means with `length_normalize`); NLL(y+) is the mean
over all chosen response tokens of the batch. `ipo` replaces the first term with
(delta - 1 / (2 beta))^2 (Azar et al. 2023). Implicit rewards are beta * (log pi - log pi_ref).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def response_logps(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: summed log-prob of the learned targets (-100 = not) and their count. logits (B, T, V)."""
    learned = targets != -100
    logp = torch.log_softmax(logits.float(), -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return (logp * learned).sum(-1), learned.sum(-1)


@dataclass
class DPOTerms:
    """The loss and what is logged of it (per-pair tensors are (B,))."""

    loss: torch.Tensor
    pref: torch.Tensor  # the DPO (or IPO) term, mean over pairs
    nll: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_terms(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,  # (B,) summed log-probs
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,  # (B,)
    chosen_count: torch.Tensor, rejected_count: torch.Tensor,  # (B,) response tokens
    beta: float, nll_weight: float, kind: str = "sigmoid", length_normalize: bool = False,
) -> DPOTerms:
    """The objective above from sequence log-probs."""
    nll = -policy_chosen.sum() / chosen_count.sum()
    if length_normalize:
        policy_chosen, ref_chosen = policy_chosen / chosen_count, ref_chosen / chosen_count
        policy_rejected, ref_rejected = policy_rejected / rejected_count, ref_rejected / rejected_count
    chosen, rejected = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    delta = chosen - rejected
    pref = (delta - 1 / (2 * beta)) ** 2 if kind == "ipo" else -F.logsigmoid(beta * delta)
    pref = pref.mean()
    return DPOTerms(pref + nll_weight * nll, pref, nll, beta * chosen.detach(), beta * rejected.detach())
