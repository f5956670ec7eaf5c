"""Checking kept answers against seed reference answers: precision with and without self-consistency.

Only verbatim seeds with a reference (`answer_field`) in a domain with an answer extractor count:
their instruction is the seed's question, so the reference still applies.
"""

from __future__ import annotations

import math

from .config import SynthConfig
from .parsing import EXTRACTORS, majority


def wilson(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion correct/total."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def _row(name: str, outcomes: list[bool], instructions: int) -> dict:
    correct, total = sum(outcomes), len(outcomes)
    low, high = wilson(correct, total)
    return {"selection": name, "kept": total, "of": instructions, "correct": correct,
            "precision": correct / total if total else None, "ci95": [round(low, 4), round(high, 4)]}


def reference_precision(cfg: SynthConfig, responded: list[dict], kept: list[dict]) -> list[dict] | None:
    """Precision of the answers each selection keeps; None when no record has a checkable reference.

    Selections: `one sample` (the first response of every instruction, what samples = 1 keeps),
    `self-consistency` (the majority answer where its share reaches vote_share) and `pipeline output`
    (the chosen response of every kept record, after votes, critic and rules)."""
    def checkable(rec):
        extractor = cfg.domain(rec["domain"]).extractor
        return extractor is not None and "answer" in rec["seed"] and rec["seed"].get("verbatim")

    responded = [r for r in responded if checkable(r)]
    if not responded:
        return None
    extract = lambda rec, text: EXTRACTORS[cfg.domain(rec["domain"]).extractor](text)  # noqa: E731
    truth = {r["id"]: extract(r, r["seed"]["answer"]) for r in responded}
    single, voted = [], []
    for rec in responded:
        answers = [extract(rec, resp["text"]) for resp in rec["responses"]]
        if answers[0] is not None:
            single.append(answers[0] == truth[rec["id"]])
        answer, share = majority(answers)
        if answer is not None and share >= cfg.filter.vote_share:
            voted.append(answer == truth[rec["id"]])
    final = [extract(r, r["chosen"]) == truth[r["id"]] for r in kept if r["id"] in truth]
    return [_row("one sample", single, len(responded)), _row("self-consistency", voted, len(responded)),
            _row("pipeline output", final, len(responded))]
