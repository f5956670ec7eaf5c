"""Samples of a task at a length: instances sized with the model's tokenizer, deterministic by seed."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import UserError
from ...tokenizer import Tokenizer
from .prompt import Built, prompt_ids
from .sizing import fit
from .tasks import TaskSpec


@dataclass
class Sample:
    """One prompt of a task at a length, with what its answer must contain."""

    task: str
    length: int  # requested tokens: prompt + generation budget <= length
    index: int
    depth: float | None  # percent of the context before the (first asked) needle; None: no single needle
    n: int  # haystack units that made the prompt fit
    built: Built
    ids: list[int] = field(repr=False)
    max_new_tokens: int  # the task's generation budget (RULER's tokens_to_generate)


def depths(count: int) -> list[float]:
    """`count` needle depths spread evenly over the context, 0% (start) to 100% (end)."""
    return [50.0] if count == 1 else [100 * i / (count - 1) for i in range(count)]


def make_samples(task: TaskSpec, tok: Tokenizer, length: int, count: int, seed: int = 0,
                 chat: bool = False) -> list[Sample]:
    """`count` samples of `task` whose prompt plus its generation budget fill at most `length` tokens
    of `tok`, as close to it as a haystack unit allows."""
    b = task.builder
    samples = []
    for i, depth in enumerate(depths(count) if task.has_depth else [None] * count):
        key = f"ruler-{task.name}-{length}-{seed}-{i}"

        def tokens(n: int) -> int:
            return len(prompt_ids(tok, b.build(key, n, depth, length), chat))

        least = tokens(b.smallest) + b.max_new_tokens
        if least > length:
            raise UserError(f"length {length} is too small for {task.name}: its template with {b.smallest} "
                            f"{b.unit}(s) and a {b.max_new_tokens}-token answer needs {least}")
        n = fit(tokens, length - b.max_new_tokens, b.smallest)
        built = b.build(key, n, depth, length)
        ids = prompt_ids(tok, built, chat)
        samples.append(Sample(task.name, length, i, depth, n, built, ids, b.max_new_tokens))
    return samples
