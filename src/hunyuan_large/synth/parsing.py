"""Reading model outputs robustly: ratings, refusals, final answers, text normalisation."""

from __future__ import annotations

import re
from collections import Counter

# "Rating: 7", "7/10", "score of 7.5", "**8**" ... the first match wins; ratings must lie in 1..10.
_RATING = [
    re.compile(r"(?:rating|score|grade)\s*(?:is|of|[:=])?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?", re.I),
    re.compile(r"\b(\d+(?:\.\d+)?)\s*/\s*10\b"),
    re.compile(r"\b(\d+(?:\.\d+)?)\s+out of\s+10\b", re.I),
    re.compile(r"^\W*(\d+(?:\.\d+)?)\W*$"),  # a bare number
]
TIERS = {"excellent": 9.0, "good": 7.0, "fair": 5.0, "average": 5.0, "poor": 3.0, "bad": 2.0, "terrible": 1.0}
_TIER = re.compile(r"\b(" + "|".join(TIERS) + r")\b", re.I)

from .prompts import LEAK_WORDS

# The template's words, any "#Header#" line in the prompts' marker style ("#Reply#", "#Teacher's
# Example#": small models invent new ones), and "here is a rewritten/revised version" preambles.
LEAK_WORDS_RE = re.compile("|".join([*(re.escape(w) for w in LEAK_WORDS), r"^\s*#[A-Za-z][\w' -]{0,40}#",
                                     r"\bhere(?:'s| is) (?:a|the|my) (?:rewritten|revised|rephrased)\b"]),
                           re.I | re.M)
REFUSAL = re.compile(r"\b(I'?m sorry|I am sorry|I cannot|I can'?t (?:help|assist|do)|As an AI|I am unable|"
                     r"I'?m unable|I apologi[sz]e)\b", re.I)


def parse_rating(text: str) -> float | None:
    """A 1-10 rating from a critique (numbers first, then quality tier words); None if there is none."""
    for pattern in _RATING:
        m = pattern.search(text.strip())
        if m:
            value = float(m.group(1))
            return value if 1 <= value <= 10 else None
    m = _TIER.search(text)
    return TIERS[m.group(1).lower()] if m else None


def is_refusal(text: str) -> bool:
    """Does the text refuse or apologise instead of doing the task?"""
    return REFUSAL.search(text) is not None


def normalize(text: str) -> str:
    """Lower case, words only: how 'unchanged' and duplicates are judged."""
    return " ".join(re.findall(r"\w+", text.lower()))


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The last number in the text ('1,234.50' -> '1234.5'), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    value = float(found[-1].replace(",", ""))
    return str(int(value)) if value.is_integer() else repr(value)


def majority(answers: list[str | None]) -> tuple[str | None, float]:
    """Self-consistency: the most common extracted answer and its share of all samples (None, 0 if none)."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0.0
    answer, n = counts.most_common(1)[0]
    return answer, n / len(answers)


def last_line(text: str) -> str | None:
    """The last non-empty line, normalised."""
    lines = [normalize(l) for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else None


# Answer extractors per domain for self-consistency (None: the domain has no checkable answer).
EXTRACTORS = {"number": final_number, "last_line": last_line}
