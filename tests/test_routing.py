"""Routing policies: invariants on random inputs, recycle uniformity, simple references."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from hunyuan_large.model.routing import route


def _probs(n, e, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, e, generator=g) * 2, dim=-1)


def _capacity(cf, n, k, e, minimum=0):
    return max(math.ceil(cf * n * k / e), minimum)


def drop_reference(probs, k, capacity):
    """Sequential: all first choices in token order, then second choices, ...; full -> dropped."""
    n, e = probs.shape
    chosen = probs.topk(k, dim=1).indices if k > 1 else probs.argmax(1, keepdim=True)
    used = [0] * e
    expert = torch.full((n, k), -1)
    for j in range(k):
        for t in range(n):
            c = int(chosen[t, j])
            if used[c] < capacity:
                expert[t, j] = c
                used[c] += 1
    return expert


def recycle_reference_top1(probs, capacity, generator):
    """k = 1: overflow tokens, in token order, take the free slots of a random permutation."""
    expert = drop_reference(probs, 1, capacity)
    used = torch.bincount(expert[expert >= 0], minlength=probs.shape[1]).tolist()
    free = [(e, s) for e in range(probs.shape[1]) for s in range(used[e], capacity)]
    perm = torch.randperm(len(free), generator=generator).tolist()
    slots = torch.full((probs.shape[0], 1), -1)
    for i, t in enumerate((expert[:, 0] < 0).nonzero().flatten().tolist()):
        if i < len(perm):
            expert[t, 0], slots[t, 0] = free[perm[i]]
    return expert, slots


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 120), e=st.integers(2, 12), k=st.integers(1, 4), cf=st.floats(0.2, 2.0),
       policy=st.sampled_from(["drop", "recycle"]), seed=st.integers(0, 10**6))
def test_capacity_policies_invariants(n, e, k, cf, policy, seed):
    k = min(k, e)
    probs = _probs(n, e, seed)
    cap = _capacity(cf, n, k, e)
    r = route(probs, k, policy, cap, torch.Generator().manual_seed(seed))
    kept = r.expert >= 0
    counts = r.counts(e)
    assert (counts <= cap).all()  # capacity never exceeded
    # Slots are distinct positions inside each expert's buffer.
    pairs = {(int(x), int(s)) for x, s in zip(r.expert[kept], r.slot[kept])}
    assert len(pairs) == int(kept.sum()) and all(0 <= s < cap for _, s in pairs)
    # A token never holds one expert twice.
    for row, ok in zip(r.expert, kept):
        assert len(set(row[ok].tolist())) == int(ok.sum())
    # Weights: raw probability for top-1, renormalised over the final experts for k > 1.
    raw = probs.gather(1, r.expert.clamp(min=0)) * kept
    want = raw if k == 1 else raw / raw.sum(1, keepdim=True).clamp(min=torch.finfo(torch.float32).eps)
    assert torch.allclose(r.weight, want, atol=1e-7)
    if policy == "drop":
        assert torch.equal(r.expert, drop_reference(probs, k, cap))
        assert not r.recycled.any()
    else:
        # No drop while the token could still take a free slot of an expert it does not hold.
        free = (cap - counts) > 0
        for t, j in (~kept).nonzero().tolist():
            held = set(r.expert[t][kept[t]].tolist())
            assert all(x in held for x in free.nonzero().flatten().tolist()), (t, j)
        # Recycled choices are exactly the overflow of the drop policy that found a slot.
        dropped_by_drop = drop_reference(probs, k, cap) < 0
        assert torch.equal(r.recycled, dropped_by_drop & kept)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 100), e=st.integers(2, 10), cf=st.floats(0.3, 1.5), seed=st.integers(0, 10**6))
def test_recycle_top1_equals_sequential_reference(n, e, cf, seed):
    probs = _probs(n, e, seed)
    cap = _capacity(cf, n, 1, e)
    r = route(probs, 1, "recycle", cap, torch.Generator().manual_seed(seed))
    want_expert, want_slot = recycle_reference_top1(probs, cap, torch.Generator().manual_seed(seed))
    assert torch.equal(r.expert, want_expert)
    moved = r.recycled
    assert torch.equal(r.slot[moved], want_slot[moved])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_dropless_is_release_top_k(k):
    probs = _probs(64, 6, 1)
    r = route(probs, k, "dropless")
    if k == 1:
        assert torch.equal(r.expert[:, 0], probs.argmax(1))
        assert torch.equal(r.weight[:, 0], probs.max(1).values)  # not renormalised
    else:
        top = probs.topk(k, 1)
        assert torch.equal(r.expert, top.indices)
        assert torch.allclose(r.weight, top.values / top.values.sum(1, keepdim=True))
    assert not r.dropped.any() and r.capacity is None


def test_recycle_is_uniform_over_free_slots():
    # 8 tokens all prefer expert 0 with capacity 4: 4 overflow onto the 12 free slots of 1..3.
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(8, 1)
    gen = torch.Generator().manual_seed(1234)
    first, everyone = torch.zeros(12), torch.zeros(12)
    draws = 3000
    for _ in range(draws):
        r = route(probs, 1, "recycle", 4, gen)
        moved = r.recycled[:, 0]
        flat = (r.expert[moved, 0] - 1) * 4 + r.slot[moved, 0]  # slot id among the 12 free
        assert moved.sum() == 4 and len(set(flat.tolist())) == 4  # without replacement
        first[flat[0]] += 1
        everyone.index_add_(0, flat, torch.ones(4))
    for counts, total in ((first, draws), (everyone, 4 * draws)):
        assert chisquare(counts.numpy(), [total / 12] * 12).pvalue > 1e-3


def test_all_full_recycle_drops_only_the_excess():
    probs = _probs(20, 4, 3)
    r = route(probs, 1, "recycle", 3, torch.Generator().manual_seed(0))  # 12 slots, 20 tokens
    assert int(r.dropped.sum()) == 8 and (r.counts(4) == 3).all()


def test_recycle_is_reproducible_from_the_seed():
    probs = _probs(50, 4, 5)
    a = route(probs, 1, "recycle", 8, torch.Generator().manual_seed(7))
    b = route(probs, 1, "recycle", 8, torch.Generator().manual_seed(7))
    assert torch.equal(a.expert, b.expert) and torch.equal(a.slot, b.slot)
