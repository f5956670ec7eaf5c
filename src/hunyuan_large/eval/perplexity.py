"""Perplexity of text files: mean NLL per token, perplexity, and bits per byte (comparable across tokenizers).

A text is <|startoftext|> + its tokens; every token after the first is predicted exactly once. A
text longer than the window is scored by windows of `window` tokens that move by `stride`: each
window predicts only the tokens no earlier window did, so every token but those of the first
window sees at least window - stride tokens of context. stride == window gives disjoint chunks
(each conditioned on the token before it); a smaller stride costs window/stride times the compute
for more context per token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..model import HunyuanForCausalLM
from .scoring import score


@dataclass
class Perplexity:
    """The summed negative log-likelihood of a text (or several) and its size."""

    name: str
    nll: float  # nats, summed over the predicted tokens
    tokens: int  # predicted tokens
    bytes: int  # UTF-8 bytes of the text

    @property
    def mean_nll(self) -> float:
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    @property
    def bits_per_byte(self) -> float:
        return self.nll / (self.bytes * math.log(2))

    def row(self) -> dict:
        """The numbers as one JSON-ready dict."""
        return {"name": self.name, "tokens": self.tokens, "bytes": self.bytes, "mean_nll": self.mean_nll,
                "perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte}


def sliding_windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, k) per window over a sequence of n ids: the window's input is ids[begin:end - 1] and it
    scores its last k predictions, ids[end - k:end]."""
    if not 1 <= stride <= window:
        raise UserError(f"stride must be between 1 and the window ({window}), got {stride}")
    out, begin, done = [], 0, 1  # ids[0] (bos) is never predicted
    while done < n:
        end = min(begin + window + 1, n)
        out.append((begin, end, end - done))
        done, begin = end, begin + stride
    return out


def text_perplexity(model: HunyuanForCausalLM, tokenizer, texts: Sequence[tuple[str, str]], window: int,
                    stride: int, batch_size: int = 8, progress: bool = True) -> list[Perplexity]:
    """A Perplexity per (name, text), all windows of all texts batched together."""
    inputs, targets, owner, sizes = [], [], [], []
    for i, (_, text) in enumerate(texts):
        ids = [tokenizer.bos_id, *tokenizer.encode(text, add_special_tokens=False)]
        if len(ids) < 2:
            raise UserError(f"{texts[i][0]} has no text to score")
        for begin, end, k in sliding_windows(len(ids), window, stride):
            inputs.append(ids[begin:end - 1])
            targets.append(ids[end - k:end])
            owner.append(i)
        sizes.append(len(ids) - 1)
    nll = [0.0] * len(texts)
    for i, (lp, _) in zip(owner, score(model, inputs, targets, batch_size, progress, desc="perplexity")):
        nll[i] -= lp
    return [Perplexity(name, nll[i], sizes[i], len(text.encode("utf-8"))) for i, (name, text) in enumerate(texts)]


def total(results: Sequence[Perplexity]) -> Perplexity:
    """All texts as one: summed NLL, tokens and bytes."""
    return Perplexity("total", sum(r.nll for r in results), sum(r.tokens for r in results),
                      sum(r.bytes for r in results))


def read_texts(paths: Sequence[str | Path]) -> list[tuple[str, str]]:
    """(path, UTF-8 text) per file; a missing or undecodable file is a UserError."""
    texts = []
    for p in paths:
        try:
            texts.append((str(p), Path(p).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read {p} as UTF-8 text: {e}") from None
    return texts
