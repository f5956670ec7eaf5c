"""Variable tracking (RULER's vt): follow chains of `VAR X = VAR Y` assignments hidden in noise."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from .haystack import NOISE
from .prompt import Built

TEMPLATE = ("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
            "Question: Find all variables that are assigned the value {query} in the text above.")
ANSWER_PREFIX = (" Answer: According to the chain(s) of variable assignment in the text above, {count} variables "
                 "are assigned the value {query}, they are: ")


@dataclass(frozen=True)
class VariableTracking:
    """`chains` chains of `hops` assignments each; the first chain's variables are the answer.

    As in RULER, a solved example (3-letter names, a short noise haystack) precedes the question."""

    chains: int = 1
    hops: int = 4
    example_noise: int = 20  # noise lines of the solved example (RULER sizes it to ~500 tokens)
    max_new_tokens: int = 30
    unit: str = "noise line"
    smallest: int = 1

    def build(self, seed: str, n: int, depth: float | None, length: int) -> Built:
        """An instance with `n` noise lines; chain statements at random lines, in chain order.

        The example shrinks with the haystack (n // 4 lines at most) so that short lengths fit."""
        rng = random.Random(seed)
        names, values, context = self._chains(rng, n, name_len=5)
        ex_names, ex_values, ex_context = self._chains(rng, min(self.example_noise, n // 4 + 1), name_len=3)
        example = (TEMPLATE.format(context=ex_context, query=ex_values[0])
                   + ANSWER_PREFIX.format(count=self.hops + 1, query=ex_values[0]) + " " + " ".join(ex_names[0]))
        return Built(example + "\n\n" + TEMPLATE.format(context=context, query=values[0]),
                     ANSWER_PREFIX.format(count=self.hops + 1, query=values[0]), names[0])

    def _chains(self, rng: random.Random, n: int, name_len: int) -> tuple[list[list[str]], list[str], str]:
        """Variable names and start values per chain, and the noise text with the statements inserted."""
        names: list[list[str]] = []
        seen: set[str] = set()
        while len(seen) < self.chains * (self.hops + 1):
            seen.add("".join(rng.choices(string.ascii_uppercase, k=name_len)))
        pool = sorted(seen)
        rng.shuffle(pool)
        values = [str(rng.randint(10000, 99999)) for _ in range(self.chains)]
        lines = [NOISE] * n
        for c in range(self.chains):
            chain = pool[c * (self.hops + 1):(c + 1) * (self.hops + 1)]
            names.append(chain)
            statements = [f"VAR {chain[0]} = {values[c]}"] + [f"VAR {b} = VAR {a}" for a, b in zip(chain, chain[1:])]
            slots = sorted(rng.choices(range(len(lines) + 1), k=len(statements)))
            for j, (slot, statement) in enumerate(zip(slots, statements)):
                lines.insert(slot + j, statement)  # j: the statements already inserted before this slot
        return names, values, "\n".join(lines)
