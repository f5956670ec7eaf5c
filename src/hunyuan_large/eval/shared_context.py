"""Continuations that share a context (the answers of a multiple-choice question), each context run once.

Shapes: G contexts in a batch, C their padded length, R continuation rows, T continuation tokens
(less the last, which is only predicted), D hidden, V vocabulary, Hkv KV heads, d head dim.

A first forward runs the G contexts (right-padded) and records every K/V-owner layer's K and V
in a `ContextKV` store; its hidden state at each context's last token predicts the continuations'
first tokens. A second forward runs all R continuations; the store puts the K/V of each row's
context in front of the row's own, an attention mask hides the context padding, and position ids
go on from the context's length. With four answers of a few tokens after a long question this
runs about a quarter of the tokens of scoring each (context, answer) pair whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from ..model import HunyuanForCausalLM
from .scoring import score_states


class ContextKV:
    """A KVStore: records the owner layers' K/V of the contexts, then prepends them to each row's."""

    def __init__(self):
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> K, V (G, Hkv, C, d)
        self.rows: torch.Tensor | None = None  # (R,) each continuation row's context; None while recording

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rows is None:
            self.kv[layer_idx] = (k, v)
            return k, v
        K, V = self.kv[layer_idx]
        return torch.cat([K[self.rows], k], 2), torch.cat([V[self.rows], v], 2)  # (R, Hkv, C + T, d)


@torch.inference_mode()
def score_shared_batch(model: HunyuanForCausalLM, contexts: Sequence[Sequence[int]],
                       continuations: Sequence[Sequence[Sequence[int]]]) -> list[list[tuple[float, bool]]]:
    """(sum of log p, all argmax) of every continuation (>= 1 token) after its group's context."""
    device = model.model.embed_tokens.weight.device
    lengths = torch.tensor([len(c) for c in contexts])
    G, C = len(contexts), int(lengths.max())
    ids = torch.zeros(G, C, dtype=torch.long)  # (G, C), right-padded
    for g, c in enumerate(contexts):
        ids[g, : len(c)] = torch.tensor(c)
    store = ContextKV()
    hidden = model.model(ids.to(device), cache=store).last_hidden_state  # (G, C, D)
    states = [hidden[torch.arange(G), lengths - 1]]  # (G, D): predict the first continuation tokens
    owner = [g for g, group in enumerate(continuations) for _ in group]
    rows = [k for group in continuations for k in group]
    T = max(map(len, rows)) - 1
    if T > 0:
        ids = torch.zeros(len(rows), T, dtype=torch.long)  # (R, T): each continuation less its last token
        for r, k in enumerate(rows):
            ids[r, : len(k) - 1] = torch.tensor(k[:-1])
        store.rows = torch.tensor(owner, device=device)
        own = lengths[owner][:, None]  # (R, 1) context length of each row
        keys = torch.cat([torch.arange(C)[None] < own, torch.ones(len(rows), T, dtype=torch.bool)], 1)  # (R, C+T)
        out = model.model(ids.to(device), attention_mask=keys.long().to(device), cache=store, past_length=C,
                          position_ids=(own + torch.arange(T)).to(device)).last_hidden_state  # (R, T, D)
        states.append(out.reshape(-1, out.shape[-1]))
    # Row of `states` that predicts token t of continuation r: the context's end, then the row's outputs.
    index = [owner[r] if t == 0 else G + r * T + t - 1 for r, k in enumerate(rows) for t in range(len(k))]
    it = iter(score_states(model, torch.cat(states)[index], rows))
    return [[next(it) for _ in group] for group in continuations]


def score_shared(model: HunyuanForCausalLM, contexts: Sequence[Sequence[int]],
                 continuations: Sequence[Sequence[Sequence[int]]], batch_size: int,
                 progress: bool = True) -> list[list[tuple[float, bool]]]:
    """`score_shared_batch` over all groups, longest context first; a batch holds up to `batch_size`
    contexts and 4 * `batch_size` continuations (at least one group)."""
    order = sorted(range(len(contexts)), key=lambda g: -len(contexts[g]))
    batches, batch, rows = [], [], 0
    for g in order:
        if batch and (len(batch) == batch_size or rows + len(continuations[g]) > 4 * batch_size):
            batches.append(batch)
            batch, rows = [], 0
        batch.append(g)
        rows += len(continuations[g])
    batches += [batch] if batch else []
    results: list[list[tuple[float, bool]]] = [[] for _ in contexts]
    for batch in tqdm(batches, disable=not (progress and batches), desc="shared contexts", unit="batch"):
        scored = score_shared_batch(model, [contexts[g] for g in batch], [continuations[g] for g in batch])
        for g, group in zip(batch, scored):
            results[g] = group
    return results
