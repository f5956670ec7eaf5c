"""Needle in a haystack (RULER's niah_*): key-value needles in noise, essay or needle haystacks."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from .haystack import NOISE, essay_text, random_value, sentences
from .prompt import Built

NEEDLE = "One of the special magic {values} for {key} is: {value}."
# RULER's template, in its plural form and (one needle asked, one value) its singular form.
TEMPLATE = ("Some special magic {values} are hidden within the following text. Make sure to memorize it. I will "
            "quiz you about the {values} afterwards.\n{context}\nWhat are all the special magic {values} for "
            "{query} mentioned in the provided text?")
ANSWER_PREFIX = " The special magic {values} for {query} mentioned in the provided text are"
TEMPLATE_ONE = ("A special magic {value} is hidden within the following text. Make sure to memorize it. I will "
                "quiz you about the {value} afterwards.\n{context}\nWhat is the special magic {value} for "
                "{query} mentioned in the provided text?")
ANSWER_PREFIX_ONE = " The special magic {value} for {query} mentioned in the provided text is"
DEPTHS = tuple(round(i * 100 / 39) for i in range(40))  # RULER's 40 evenly spaced insertion depths (%)


@dataclass(frozen=True)
class Niah:
    """A niah task: haystack kind, needle key/value kinds and counts (RULER's synthetic.yaml args)."""

    haystack: str = "essay"  # noise (a paragraph repeated), essay (text) or needle (distractor needles)
    key_kind: str = "words"  # numbers, words or uuids
    value_kind: str = "numbers"
    keys: int = 1  # needles with distinct keys
    values: int = 1  # values per key
    queries: int = 1  # keys asked for
    max_new_tokens: int = 128
    unit: str = "haystack unit"  # what `n` counts, for messages
    smallest: int = 1  # the fewest units an instance has

    def build(self, seed: str, n: int, depth: float | None, length: int) -> Built:
        """An instance with `n` haystack units (words of essay text, or lines); the first asked
        needle sits at `depth` percent of the context, the others at random RULER depths."""
        rng = random.Random(seed)
        keys, values = [], []
        for _ in range(max(self.keys, self.queries)):
            keys.append(random_value(rng, self.key_kind))
            values.append([random_value(rng, self.value_kind) for _ in range(self.values)])
        asked = rng.sample(range(len(keys)), self.queries)
        needles = [NEEDLE.format(values=self.value_kind, key=keys[k], value=v) for k in asked for v in values[k]]
        needles += [NEEDLE.format(values=self.value_kind, key=keys[k], value=v)
                    for k in range(len(keys)) if k not in asked for v in values[k]]
        first, rest = needles[0], needles[1:]
        rng.shuffle(rest)
        placed = [(50.0 if depth is None else depth, first), *zip(rng.choices(DEPTHS, k=len(rest)), rest)]
        context = self._haystack(rng, n, placed)
        query = ", ".join(keys[k] for k in asked[:-1]) + ", and " + keys[asked[-1]] if self.queries > 1 \
            else keys[asked[0]]
        answers = [v for k in asked for v in values[k]]
        if len(answers) == 1:
            value = self.value_kind[:-1]  # "number", "uuid"
            return Built(TEMPLATE_ONE.format(value=value, context=context, query=query),
                         ANSWER_PREFIX_ONE.format(value=value, query=query), answers)
        return Built(TEMPLATE.format(values=self.value_kind, context=context, query=query),
                     ANSWER_PREFIX.format(values=self.value_kind, query=query), answers)

    def _haystack(self, rng: random.Random, n: int, placed: list[tuple[float, str]]) -> str:
        """`n` units with each needle inserted at its depth (the share of the haystack's words before it)."""
        if self.haystack == "essay":
            units, sep = sentences(essay_text(n)), " "
        elif self.haystack == "noise":
            units, sep = [NOISE] * n, "\n"
        else:
            units = [NEEDLE.format(values=self.value_kind, key=random_value(rng, self.key_kind),
                                   value=random_value(rng, self.value_kind)) for _ in range(n)]
            sep = "\n"
        # A needle goes to the unit boundary nearest its depth in words (essay sentences vary in length).
        ends = list(itertools.accumulate((len(u.split()) for u in units), initial=0))  # words before boundary k
        slots = [min(range(len(ends)), key=lambda k: abs(ends[k] - ends[-1] * d / 100)) for d, _ in placed]
        # Insert from the back so earlier slots keep their meaning.
        for slot, (_, needle) in sorted(zip(slots, placed), key=lambda p: p[0], reverse=True):
            units.insert(slot, needle)
        return sep.join(units)
