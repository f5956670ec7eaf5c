"""Common words extraction (RULER's cwe): the ten words repeated most often in a numbered list."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .haystack import distinct_words
from .prompt import Built

TEMPLATE = ("Below is a numbered list of words. In these words, some appear more often than others. Memorize the "
            "ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?")
ANSWER_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
SHORT = 4096  # below this length RULER uses fewer repeats (6 vs 1, example 3 vs 1)


@dataclass(frozen=True)
class CommonWords:
    """`common` words repeated `freq_common` times among others repeated `freq_uncommon` times."""

    freq_common: int = 30
    freq_uncommon: int = 3
    common: int = 10
    max_new_tokens: int = 120
    unit: str = "distinct word"
    smallest: int = 11  # the common words and at least one other

    def build(self, seed: str, n: int, depth: float | None, length: int) -> Built:
        """An instance with `n` distinct words, after one solved example (as RULER)."""
        rng = random.Random(seed)
        short = length < SHORT
        ex_context, ex_answer = self._example(rng, 20 if short else 40, 3 if short else 10, 1 if short else 3)
        context, answer = self._example(rng, n, 6 if short else self.freq_common, 1 if short else self.freq_uncommon)
        example = TEMPLATE.format(context=ex_context) + ANSWER_PREFIX + " " + _numbered(ex_answer)
        return Built(example + "\n" + TEMPLATE.format(context=context), ANSWER_PREFIX, answer)

    def _example(self, rng: random.Random, n: int, common_repeats: int, other_repeats: int) -> tuple[str, list[str]]:
        """A shuffled numbered list of `n` distinct words, and its `common` most frequent ones."""
        words = distinct_words(rng, n)
        common, others = words[:self.common], words[self.common:]
        listed = common * common_repeats + others * other_repeats
        rng.shuffle(listed)
        return _numbered(listed), common


def _numbered(words: list[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))
