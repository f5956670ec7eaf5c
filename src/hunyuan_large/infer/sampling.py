"""Sampling parameters, their defaults from `generation_config.json`, and next-token selection.

Shapes: B rows, V vocabulary, k candidates after top-k.

The logits pipeline is Hugging Face's order: repetition penalty (over prompt and output ids), then
temperature, top-k, top-p (keep the smallest set of most likely tokens whose probability reaches
top_p), then one draw from the request's own seeded generator. Temperature 0 is greedy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError, check, is_int, is_number
from ..generation_config import GENERATION_CONFIG, eos_token_ids, read_generation_config

GREEDY_BELOW = 1e-5  # temperatures below this are greedy (dividing by them would overflow)


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens and when it stops."""

    max_new_tokens: int | None = None  # None: until the context is full
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    repetition_penalty: float = 1.0  # 1: off; > 1 discourages tokens already seen
    seed: int | None = None  # None: a random draw; sample i of n draws from seed + i
    n: int = 1  # samples of the prompt (they share its KV-cache blocks)
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()  # stop strings (not included in the output text)
    logprobs: int | None = None  # None: off; n: the chosen token's log-probability and the top n

    def __post_init__(self) -> None:
        check(self.max_new_tokens is None or is_int(self.max_new_tokens) and self.max_new_tokens >= 1,
              f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        check(is_number(self.temperature) and self.temperature >= 0,
              f"temperature must be a number >= 0, got {self.temperature!r}")
        check(is_int(self.top_k) and self.top_k >= 0, f"top_k must be an integer >= 0, got {self.top_k!r}")
        check(is_number(self.top_p) and 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}")
        check(is_number(self.repetition_penalty) and self.repetition_penalty > 0,
              f"repetition_penalty must be a number > 0, got {self.repetition_penalty!r}")
        check(self.seed is None or is_int(self.seed) and 0 <= self.seed < 2**63,
              f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        check(is_int(self.n) and self.n >= 1, f"n must be an integer >= 1, got {self.n!r}")
        check(all(is_int(i) and i >= 0 for i in self.stop_token_ids),
              f"stop_token_ids must be integers >= 0, got {self.stop_token_ids!r}")
        check(all(isinstance(s, str) and s for s in self.stop), f"stop must be non-empty strings, got {self.stop!r}")
        check(self.logprobs is None or is_int(self.logprobs) and self.logprobs >= 0,
              f"logprobs must be an integer >= 0, got {self.logprobs!r}")

    @property
    def greedy(self) -> bool:
        """Temperature ~0 (below 1e-5, as vLLM): always the most likely token."""
        return self.temperature < GREEDY_BELOW

    def replace(self, **changes) -> "SamplingParams":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def load_generation_defaults(folder: str | Path) -> SamplingParams:
    """SamplingParams from a model folder's `generation_config.json` (neutral values without one).

    `do_sample: false` (or absent) means greedy; `eos_token_id` (an id or a list) gives the stop ids.
    """
    g = read_generation_config(folder)
    if g is None:
        return SamplingParams(temperature=0.0)
    stop_ids = eos_token_ids(g, folder)
    try:
        return SamplingParams(
            max_new_tokens=g.get("max_new_tokens"),
            temperature=g.get("temperature", 1.0) if g.get("do_sample", False) else 0.0,
            top_k=g.get("top_k", 0) or 0,
            top_p=g.get("top_p") or 1.0,
            repetition_penalty=g.get("repetition_penalty", 1.0) or 1.0,
            stop_token_ids=stop_ids,
        )
    except UserError as e:
        raise UserError(f"{Path(folder) / GENERATION_CONFIG}: {e}") from None


def penalize_repetition(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (V,) with every seen id's logit divided by `penalty` if > 0, multiplied if < 0."""
    scores = logits.gather(0, seen)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(0, seen, scores)


def sample(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None,
           generator: torch.Generator | None) -> int:
    """One token id from one row of logits (V,) float32; `seen` = prompt + output ids so far."""
    if params.repetition_penalty != 1.0 and seen is not None and seen.numel():
        logits = penalize_repetition(logits, seen, params.repetition_penalty)
    if params.greedy:
        return int(logits.argmax())
    logits = logits / params.temperature
    if params.top_k:
        logits, ids = logits.topk(min(params.top_k, logits.shape[0]))  # (k,) sorted, descending
    else:
        ids = None
    if params.top_p < 1.0:
        if ids is None:
            logits, ids = logits.sort(descending=True)
        probs = logits.softmax(-1)
        # Drop a token once the more likely ones before it already reach top_p (keeps >= 1).
        drop = (probs.cumsum(-1) - probs) >= params.top_p
        logits = logits.masked_fill(drop, float("-inf"))
    # Extreme penalties can overflow a logit to inf; keep the draw defined (inf -> the largest float).
    logits = logits.nan_to_num(nan=float("-inf"), posinf=torch.finfo(logits.dtype).max)
    choice = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
    return choice if ids is None else int(ids[choice])


def top_logprobs(logits: torch.Tensor, token: int, n: int) -> tuple[float, list[tuple[int, float]]]:
    """The model's log-probability of `token` and its n most likely alternatives, from raw logits (V,)."""
    logp = logits.log_softmax(-1)
    best = logp.topk(n) if n else None
    alternatives = [] if best is None else list(zip(best.indices.tolist(), best.values.tolist()))
    return float(logp[token]), alternatives
