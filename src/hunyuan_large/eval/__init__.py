"""Evaluation: the lm-eval model `hunyuan` (lm.py), perplexity, the shipped offline tasks, `hunyuan eval`."""

from __future__ import annotations

from pathlib import Path

from ..tokenizer import HunyuanTokenizer


def load_tokenizer(folder: str | Path) -> HunyuanTokenizer:
    """The tokenizer of a model folder (the one place evaluation loads a tokenizer)."""
    return HunyuanTokenizer.from_pretrained(folder)
