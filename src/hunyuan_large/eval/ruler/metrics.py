"""RULER's scores: the share of reference strings a prediction contains, case-insensitively, x100."""

from __future__ import annotations

import re
from collections.abc import Sequence


def postprocess(prediction: str) -> str:
    """RULER's clean-up: control characters become newlines, outer whitespace goes."""
    return re.sub(r"[\x00-\x1f]", "\n", prediction.strip()).strip()


def string_match_all(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over predictions of the fraction of its references it contains, x100 (niah, vt, cwe, fwe)."""
    total = sum(sum(r.lower() in p.lower() for r in refs) / len(refs) for p, refs in zip(predictions, references))
    return round(total / len(predictions) * 100, 2)


def string_match_part(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over predictions of whether it contains any of its references, x100 (RULER's qa tasks)."""
    total = sum(max(r.lower() in p.lower() for r in refs) for p, refs in zip(predictions, references))
    return round(total / len(predictions) * 100, 2)
