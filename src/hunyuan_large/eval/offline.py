"""The shipped offline tasks' data: generated from fixed seeds at first use, kept as JSONL in a cache folder.

- arithmetic: "What is 47 - 18?" with the integer answer (a generate_until task, exact match on the
  final number of the reply);
- choice: four-way questions with one right answer (largest number, next weekday, next letter,
  opposite word; a multiple_choice task, acc and acc_norm);
- text: held-out paragraphs from a small seeded grammar (a loglikelihood_rolling task: word and
  byte perplexity, bits per byte).
The same version and seed give the same files on every machine; no download is involved.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

VERSION = 1  # bump when a generator changes: the cache keeps one file per version
SIZES = {"train": 32, "test": 200}  # train holds the few-shot examples
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
OPPOSITES = (("hot", "cold"), ("big", "small"), ("up", "down"), ("early", "late"), ("open", "closed"),
             ("light", "dark"), ("fast", "slow"), ("old", "new"), ("full", "empty"), ("happy", "sad"))


def cache_dir() -> Path:
    """Where generated data lives: $HUNYUAN_EVAL_DATA, or ~/.cache/hunyuan_large/eval."""
    default = Path.home() / ".cache" / "hunyuan_large" / "eval"
    return Path(os.environ.get("HUNYUAN_EVAL_DATA", default))


def arithmetic_doc(rng: random.Random) -> dict:
    """One sum, difference or product of two numbers below 100."""
    a, b, op = rng.randint(1, 99), rng.randint(1, 99), rng.choice("+-*")
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return {"question": f"What is {a} {op} {b}?", "answer": str(value)}


def choice_doc(rng: random.Random) -> dict:
    """One question with four choices, `label` the index of the right one."""
    kind = rng.randrange(4)
    if kind == 0:
        numbers = rng.sample(range(1, 1000), 4)
        question, right, choices = "Which number is the largest?", str(max(numbers)), [str(n) for n in numbers]
    elif kind == 1:
        day = rng.randrange(7)
        question, right = f"Which day comes after {WEEKDAYS[day]}?", WEEKDAYS[(day + 1) % 7]
        choices = [right, *rng.sample([d for d in WEEKDAYS if d != right], 3)]
    elif kind == 2:
        letter = rng.randrange(25)
        question, right = f"Which letter comes after {chr(65 + letter)}?", chr(66 + letter)
        choices = [right, *rng.sample([chr(65 + i) for i in range(26) if i != letter + 1], 3)]
    else:
        word, right = rng.choice(OPPOSITES)
        question = f"What is the opposite of {word}?"
        choices = [right, *rng.sample([b for a, b in OPPOSITES if b != right], 3)]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "label": choices.index(right)}


_SUBJECTS = ("the old miller", "a young painter", "the river guard", "my neighbour", "the baker's cat",
             "a travelling singer", "the village teacher", "two fishermen")
_VERBS = ("carried", "painted", "found", "sold", "mended", "watched", "counted", "forgot")
_OBJECTS = ("a wooden boat", "seven red apples", "the broken clock", "a map of the hills", "three letters",
            "the blue door", "a basket of bread", "an empty bottle")
_PLACES = ("near the bridge", "before dawn", "in the market", "under the oak tree", "after the storm",
           "by the harbour", "at the edge of town", "on a quiet Sunday")


def text_doc(rng: random.Random) -> dict:
    """A paragraph of four to eight sentences from a small grammar, with a number now and then."""
    sentences = []
    for _ in range(rng.randint(4, 8)):
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}"
        if rng.random() < 0.3:
            s += f", and it cost {rng.randint(2, 90)} coins"
        sentences.append(s[0].upper() + s[1:] + ".")
    return {"text": " ".join(sentences)}


GENERATORS: dict[str, Callable[[random.Random], dict]] = {
    "arithmetic": arithmetic_doc, "choice": choice_doc, "text": text_doc}


def make_split(task: str, split: str) -> list[dict]:
    """The documents of a task's split, from a seed fixed by task, split and VERSION."""
    rng = random.Random(f"hunyuan-{task}-{split}-v{VERSION}")
    return [GENERATORS[task](rng) for _ in range(SIZES[split])]


def load_split(task: str, split: str) -> list[dict]:
    """A split's documents: read from the cache, generated and written there at first use."""
    path = cache_dir() / f"{task}-{split}-v{VERSION}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text("".join(json.dumps(d) + "\n" for d in make_split(task, split)))
        tmp.replace(path)  # atomic: concurrent first uses never read half a file
    return [json.loads(line) for line in path.read_text().splitlines()]


def dataset(task: str):
    """The task's splits as a `datasets.DatasetDict` (what lm-eval's `custom_dataset` returns)."""
    from datasets import Dataset, DatasetDict

    return DatasetDict({split: Dataset.from_list(load_split(task, split)) for split in SIZES})
