"""Log-likelihoods of target tokens after inputs, many sequences per forward.

Shapes: B sequences in a batch, T tokens, D hidden, V vocabulary, N scored tokens of a batch.

Requests with the same input ids share one row (a multiple-choice question with one-token
answers runs its context once). Rows are sorted longest first (so an out-of-memory shows at once
and padding stays small) and right-padded into batches: one forward per batch (attention is
causal, so padding after a row's tokens cannot change them, and eval routing is dropless, so
padding cannot take a token's expert), then the LM head and the log-softmax only where a target
token is predicted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from ..model import HunyuanForCausalLM


@torch.inference_mode()
def score_batch(model: HunyuanForCausalLM, inputs: Sequence[Sequence[int]],
                targets: Sequence[Sequence[int]]) -> list[tuple[float, bool]]:
    """(sum of log p(target), whether each target is the argmax) per request: its last len(targets)
    input positions predict its targets. Requests with equal inputs share a row of the forward."""
    row_of: dict[tuple[int, ...], int] = {}
    for inp in inputs:
        row_of.setdefault(tuple(inp), len(row_of))
    ids = torch.zeros(len(row_of), max(map(len, inputs)), dtype=torch.long)  # (B, T), padded with id 0
    for seq, r in row_of.items():
        ids[r, : len(seq)] = torch.tensor(seq)
    rows, cols = [], []
    for inp, tgt in zip(inputs, targets):
        rows += [row_of[tuple(inp)]] * len(tgt)
        cols += range(len(inp) - len(tgt), len(inp))
    hidden = model.model(ids.to(model.model.embed_tokens.weight.device)).last_hidden_state  # (B, T, D)
    return score_states(model, hidden[rows, cols], targets)


def score_states(model: HunyuanForCausalLM, states: torch.Tensor,
                 targets: Sequence[Sequence[int]]) -> list[tuple[float, bool]]:
    """(sum of log p, all argmax) of each target list, whose tokens the consecutive rows of the
    final hidden `states` (N, D) predict, in order; the LM head runs on these N rows only."""
    logprobs = model.lm_head(states).float().log_softmax(-1)  # (N, V)
    flat = torch.tensor([t for tgt in targets for t in tgt], dtype=torch.long, device=logprobs.device)  # (N,)
    token_lp = logprobs.gather(1, flat[:, None])[:, 0].tolist()
    hit = (logprobs.argmax(-1) == flat).tolist()
    out, pos = [], 0
    for tgt in targets:
        out.append((sum(token_lp[pos: pos + len(tgt)]), all(hit[pos: pos + len(tgt)])))
        pos += len(tgt)
    return out


def score(model: HunyuanForCausalLM, inputs: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
          batch_size: int, progress: bool = True, desc: str = "log-likelihood") -> list[tuple[float, bool]]:
    """`score_batch` over all requests, `batch_size` distinct inputs per forward, longest first;
    results in request order."""
    groups: dict[tuple[int, ...], list[int]] = {}  # distinct input -> its requests
    for i, inp in enumerate(inputs):
        groups.setdefault(tuple(inp), []).append(i)
    order = sorted(groups.values(), key=lambda g: -len(inputs[g[0]]))
    results: list[tuple[float, bool]] = [(0.0, True)] * len(inputs)
    for start in tqdm(range(0, len(order), batch_size), disable=not (progress and order), desc=desc, unit="batch"):
        batch = [i for group in order[start: start + batch_size] for i in group]
        for i, scored in zip(batch, score_batch(model, [inputs[i] for i in batch], [targets[i] for i in batch])):
            results[i] = scored
    return results
