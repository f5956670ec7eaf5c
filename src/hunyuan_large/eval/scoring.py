"""Log-likelihoods of target tokens after inputs, many sequences per forward.

Shapes: B sequences in a batch, T tokens, D hidden, V vocabulary, N scored tokens of a batch.

Sequences are sorted longest first (so an out-of-memory shows at once and padding stays small)
and right-padded into batches: one forward per batch (attention is causal, so padding after a
row's tokens cannot change them, and eval routing is dropless, so padding cannot take a token's
expert), then the LM head and the log-softmax only where a target token is predicted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from ..model import HunyuanForCausalLM


@torch.inference_mode()
def score_batch(model: HunyuanForCausalLM, inputs: Sequence[Sequence[int]],
                targets: Sequence[Sequence[int]]) -> list[tuple[float, bool]]:
    """(sum of log p(target), whether each target is the argmax) per row; a row's targets follow its
    last len(targets) inputs, i.e. inputs[i][-k:] predict targets[i] shifted by one."""
    ids = torch.zeros(len(inputs), max(map(len, inputs)), dtype=torch.long)  # (B, T), padded with id 0
    rows, cols = [], []
    for r, (inp, tgt) in enumerate(zip(inputs, targets)):
        ids[r, : len(inp)] = torch.tensor(inp)
        rows += [r] * len(tgt)
        cols += range(len(inp) - len(tgt), len(inp))
    device = model.model.embed_tokens.weight.device
    hidden = model.model(ids.to(device)).last_hidden_state  # (B, T, D)
    logprobs = model.lm_head(hidden[rows, cols]).float().log_softmax(-1)  # (N, V)
    flat = torch.tensor([t for tgt in targets for t in tgt], device=device)  # (N,)
    token_lp = logprobs.gather(1, flat[:, None])[:, 0].tolist()
    hit = (logprobs.argmax(-1) == flat).tolist()
    out, pos = [], 0
    for tgt in targets:
        out.append((sum(token_lp[pos: pos + len(tgt)]), all(hit[pos: pos + len(tgt)])))
        pos += len(tgt)
    return out


def score(model: HunyuanForCausalLM, inputs: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
          batch_size: int, progress: bool = True, desc: str = "log-likelihood") -> list[tuple[float, bool]]:
    """`score_batch` over all sequences, longest first in batches of `batch_size`; results in input order."""
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
    results: list[tuple[float, bool]] = [(0.0, True)] * len(inputs)
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc=desc, unit="batch"):
        batch = order[start: start + batch_size]
        for i, scored in zip(batch, score_batch(model, [inputs[i] for i in batch], [targets[i] for i in batch])):
            results[i] = scored
    return results
