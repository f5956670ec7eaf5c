"""Token-to-expert assignment: top-k choice, per-expert capacity, drop and recycle routing.

Shapes: N tokens, E experts, k choices per token, C capacity (slots per expert).

Policies (SPEC §2.6, §5.2):
- dropless: every token keeps its top-k experts (the release's semantics; capacity unbounded).
- drop: slots fill in order of choice rank, then token index; assignments past an expert's
  capacity are dropped (the token keeps the shared expert and the residual).
- recycle: overflow assignments, in the same order, take free slots of experts that are not
  full, uniformly at random without replacement; a token never gets an expert twice. It is
  dropped only when no valid free slot is left.

Combine weights: top-1 uses the raw softmax probability of the final expert (not renormalised,
as the release); k > 1 renormalises over the experts the token ends on (clamped at fp32 eps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ROUTING_POLICIES


@dataclass
class Routing:
    """The result of routing N tokens."""

    expert: torch.Tensor  # (N, k) long: final expert of each choice, -1 where dropped
    slot: torch.Tensor  # (N, k) long: position in that expert's buffer, -1 where dropped
    weight: torch.Tensor  # (N, k) fp32 combine weight, 0 where dropped (differentiable)
    chosen: torch.Tensor  # (N, k) long: the router's top-k before capacity
    recycled: torch.Tensor  # (N, k) bool: the choice was moved to another expert
    capacity: int | None  # slots per expert; None when dropless

    @property
    def dropped(self) -> torch.Tensor:
        """(N, k) bool: the choice has no expert."""
        return self.expert < 0

    def counts(self, num_experts: int) -> torch.Tensor:
        """(E,) tokens each expert processes."""
        e = self.expert[self.expert >= 0]
        return torch.bincount(e, minlength=num_experts)


def top_k_choice(probs: torch.Tensor, k: int) -> torch.Tensor:
    """(N, E) probabilities -> (N, k) expert ids, best first (argmax for k = 1, as the release)."""
    if k == 1:
        return probs.argmax(dim=1, keepdim=True)
    return probs.topk(k, dim=1).indices


def combine_weights(probs: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
    """(N, k) weights of the experts tokens end on (-1 = none): the raw probability for top-1,
    renormalised over the kept experts for k > 1 (sum clamped at fp32 eps), as the release."""
    kept = expert >= 0
    weight = probs.gather(1, expert.clamp(min=0)) * kept
    if expert.shape[1] > 1:
        weight = weight / weight.sum(dim=1, keepdim=True).clamp(min=torch.finfo(weight.dtype).eps)
    return weight


def dropless_choice(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, E) probabilities -> the (N, k) weights and expert ids of routing without capacity.

    Equals combine_weights(probs, top_k_choice(probs, k)); for k = 1 it is one `max` (which, like
    argmax, returns the first of tied maxima), the op count that matters at decode.
    """
    if k == 1:
        return probs.max(dim=1, keepdim=True)
    idx = top_k_choice(probs, k)
    return combine_weights(probs, idx), idx


def rank_in_group(group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """For each element, how many earlier elements share its group id (stable order)."""
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    ranks = torch.empty_like(group)
    ranks[order] = torch.arange(group.numel(), device=group.device) - starts[group[order]]
    return ranks


def route(
    probs: torch.Tensor,
    k: int,
    policy: str = "dropless",
    capacity: int | None = None,
    generator: torch.Generator | None = None,
) -> Routing:
    """Assign N tokens to experts from their router probabilities (N, E) under `policy`."""
    if policy not in ROUTING_POLICIES:
        raise ValueError(f"routing policy {policy!r} is not one of {ROUTING_POLICIES}")
    N, E = probs.shape
    chosen = top_k_choice(probs, k)
    flat = chosen.t().reshape(-1)  # (k*N,) rank-major: every first choice before any second
    slot = rank_in_group(flat, E)
    expert = flat.clone()
    recycled = torch.zeros_like(flat, dtype=torch.bool)
    if policy != "dropless":
        if capacity is None:
            raise ValueError(f"policy {policy!r} needs a capacity")
        over = slot >= capacity
        expert[over] = -1
        slot[over] = -1
        if policy == "recycle" and bool(over.any()):
            _recycle(expert, slot, recycled, over.nonzero().squeeze(1), N, E, capacity, generator)
    else:
        capacity = None
    expert = expert.view(k, N).t()
    slot = slot.view(k, N).t()
    recycled = recycled.view(k, N).t()
    return Routing(expert, slot, combine_weights(probs, expert), chosen, recycled, capacity)


def _recycle(
    expert: torch.Tensor,  # (k*N,) rank-major, -1 where overflowed; updated in place
    slot: torch.Tensor,
    recycled: torch.Tensor,
    pending: torch.Tensor,  # flat indices of the overflow, in fill order
    N: int,
    E: int,
    capacity: int,
    generator: torch.Generator | None,
) -> None:
    """Move overflow assignments to random free slots of non-full experts (see module doc)."""
    dev = expert.device
    kept_counts = torch.bincount(expert[expert >= 0], minlength=E)
    free = (capacity - kept_counts).clamp(min=0)
    free_expert = torch.repeat_interleave(torch.arange(E, device=dev), free)  # one entry per slot
    free_slot = kept_counts[free_expert] + rank_in_group(free_expert, E)

    def shuffled(idx: torch.Tensor) -> torch.Tensor:
        perm = torch.randperm(idx.numel(), generator=generator, device="cpu").to(dev)
        return idx[perm]

    avail = shuffled(torch.arange(free_expert.numel(), device=dev))
    # held[t, e]: token t already has expert e (matters only for k > 1).
    held = torch.zeros(N, E, dtype=torch.bool, device=dev)
    kept = (expert >= 0).nonzero().squeeze(1)
    held[kept % N, expert[kept]] = True

    while pending.numel() and avail.numel():
        m = min(pending.numel(), avail.numel())
        p, s = pending[:m], avail[:m]
        tok, ex = p % N, free_expert[s]
        ok = ~held[tok, ex]
        # Two choices of one token drawing the same expert in one round: keep the first only.
        key = tok * E + ex
        order = torch.argsort(key, stable=True)
        repeat = torch.zeros_like(ok)
        repeat[order[1:]] = key[order[1:]] == key[order[:-1]]
        ok &= ~repeat
        if not bool(ok.any()):
            _recycle_exact(expert, slot, recycled, pending, avail, free_expert, free_slot, held, N)
            return
        expert[p[ok]] = ex[ok]
        slot[p[ok]] = free_slot[s[ok]]
        recycled[p[ok]] = True
        held[tok[ok], ex[ok]] = True
        pending = torch.cat([p[~ok], pending[m:]])
        avail = shuffled(torch.cat([s[~ok], avail[m:]]))


def _recycle_exact(expert, slot, recycled, pending, avail, free_expert, free_slot, held, N) -> None:
    """Sequential fallback for the rare leftovers whose drawn slots all clash (k > 1 only)."""
    avail_list = avail.tolist()
    for p in pending.tolist():
        tok = p % N
        for j, s in enumerate(avail_list):
            e = int(free_expert[s])
            if not held[tok, e]:
                expert[p], slot[p], recycled[p] = e, int(free_slot[s]), True
                held[tok, e] = True
                del avail_list[j]
                break
