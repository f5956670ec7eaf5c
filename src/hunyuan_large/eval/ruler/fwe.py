"""Frequent words extraction (RULER's fwe): the three most frequent coded words of a Zipf-like text."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .haystack import coded_word
from .prompt import Built

TEMPLATE = ("Read the following coded text and track the frequency of each coded word. Find the three most "
            "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore "
            "the dots '....'. What are the three most frequently appeared words in the above coded text?")
ANSWER_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"


def zeta(alpha: float, terms: int = 1000) -> float:
    """Riemann zeta(alpha) for alpha > 1: a partial sum plus the Euler-Maclaurin tail."""
    head = sum(k**-alpha for k in range(1, terms))
    return head + terms ** (1 - alpha) / (alpha - 1) + 0.5 * terms**-alpha


@dataclass(frozen=True)
class FrequentWords:
    """Words of rank k appear n k^-alpha / zeta(alpha) times; rank 1 is '...' (noise), ranks 2-4 the answer."""

    alpha: float = 2.0
    word_len: int = 6
    max_new_tokens: int = 50
    unit: str = "word"
    smallest: int = 100  # fewer, and the counts of ranks 2-5 stop being distinct

    def build(self, seed: str, n: int, depth: float | None, length: int) -> Built:
        """An instance of about `n` words over a vocabulary of (length - budget) / 50 coded words (RULER)."""
        rng = random.Random(seed)
        size = max(5, (length - self.max_new_tokens) // 50)
        vocab: set[str] = set()
        while len(vocab) < size:
            vocab.add(coded_word(rng, self.word_len))
        ranked = sorted(vocab)
        rng.shuffle(ranked)
        ranked[0] = "..."
        z = zeta(self.alpha)
        words = [w for k, w in enumerate(ranked, 1) for _ in range(int(n * k**-self.alpha / z))]
        rng.shuffle(words)
        return Built(TEMPLATE.format(context=" ".join(words)), ANSWER_PREFIX, ranked[1:4])

