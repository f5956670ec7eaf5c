"""Offline haystack text and random needles: the noise paragraph, an essay-like text, words, values."""

from __future__ import annotations

import functools
import random
import re
import string
import uuid

# RULER's noise haystack: one paragraph repeated.
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

# Needle keys are adjective-noun pairs, as RULER's ("tasteful-moose").
ADJECTIVES = ("able", "bitter", "brave", "bright", "calm", "clever", "cold", "curious", "damp", "dark", "eager",
              "early", "empty", "fancy", "fierce", "gentle", "giant", "glossy", "golden", "grumpy", "hollow",
              "humble", "icy", "jolly", "kind", "lazy", "loud", "lucky", "mellow", "misty", "modern", "narrow",
              "noisy", "odd", "pale", "plain", "proud", "quiet", "rapid", "rough", "rusty", "shiny", "silent",
              "silly", "sleepy", "smooth", "sour", "steep", "sturdy", "sweet", "tame", "tender", "tiny", "vast",
              "warm", "wild", "windy", "witty", "young", "zealous")
NOUNS = ("anchor", "apple", "badger", "barn", "basket", "beacon", "bicycle", "blanket", "bottle", "bridge",
         "candle", "canyon", "castle", "cherry", "cloud", "comet", "cottage", "crayon", "desert", "dolphin",
         "engine", "falcon", "feather", "forest", "garden", "glacier", "hammer", "harbor", "helmet", "island",
         "jacket", "kettle", "ladder", "lantern", "lemon", "meadow", "mirror", "moose", "needle", "orchard",
         "otter", "pebble", "pepper", "piano", "pillow", "planet", "pocket", "rabbit", "river", "saddle",
         "shovel", "spider", "teapot", "thimble", "tiger", "tractor", "tunnel", "violin", "walrus", "window")


@functools.cache
def essay_words() -> tuple[str, ...]:
    """The essay haystack as words: Python's own reference text (pydoc_data), whitespace collapsed.

    It ships with every CPython, so no download is needed; ~470 KB (~100K tokens) before it repeats."""
    from pydoc_data.topics import topics

    return tuple(re.sub(r"\s+", " ", " ".join(topics[k] for k in sorted(topics))).split(" "))


@functools.cache
def vocabulary() -> tuple[str, ...]:
    """Distinct lowercase words of the essay text (3-12 letters, whole words only, not fragments
    like the "reak" of "b(reak)"), sorted: the common-words pool."""
    words = {w.strip(".,;:!?()\"'") for w in essay_words()}
    return tuple(sorted(w for w in words if w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 12))


def essay_text(n: int) -> str:
    """The first `n` words of the essay text, repeated as needed."""
    words = essay_words()
    return " ".join(words[i % len(words)] for i in range(n))


def sentences(text: str) -> list[str]:
    """Split text after sentence ends (., ! or ? then a space); the split keeps every character."""
    return [s for s in re.split(r"(?<=[.!?]) (?=\S)", text) if s]


def distinct_words(rng: random.Random, n: int) -> list[str]:
    """`n` distinct words from the vocabulary; beyond its size, hyphenated pairs of its words."""
    pool = vocabulary()
    if n <= len(pool):
        return rng.sample(pool, n)
    picked = set(pool)
    while len(picked) < n:
        picked.add(f"{rng.choice(pool)}-{rng.choice(pool)}")
    return rng.sample(sorted(picked), n)


def random_value(rng: random.Random, kind: str) -> str:
    """A needle key or value: a 7-digit number, an adjective-noun word or a uuid4 string."""
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown needle kind {kind!r}")


def coded_word(rng: random.Random, length: int) -> str:
    """A random lowercase letter string (fwe's coded words)."""
    return "".join(rng.choices(string.ascii_lowercase, k=length))
