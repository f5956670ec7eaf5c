"""Tokenizers of model folders behind one interface (`Tokenizer`): the release's `hy.tiktoken`
vocabulary and HF `tokenizer.json` files; chat templates; BPE training.

`load_tokenizer(folder)` picks the one a folder holds.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Messages, Tokenizer, TokenizerError
from .bpe import byte_to_char, ranks_from_bpe, train_bpe
from .chat import CHAT_TEMPLATE, ROLES, render_chat, render_template
from .hf import HF_TOKENIZER_FILE, HFTokenizer
from .hunyuan import HunyuanTokenizer
from .vocab import (CONFIG_FILE, DEFAULT_CHAT_STOP, ENDOFTEXT, EOS, EXTRA_0, EXTRA_4, EXTRA_5, MIN_VOCAB_SIZE,
                    PAD, PATTERN, SPECIAL_TOKENS, STARTOFTEXT, VOCAB_FILE, read_ranks)

TOKENIZER_FILES = (VOCAB_FILE, HF_TOKENIZER_FILE)


def has_tokenizer(folder: str | os.PathLike[str]) -> bool:
    """Whether a folder holds a tokenizer (`hy.tiktoken` or `tokenizer.json`)."""
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(folder: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer of a model folder: the release's `hy.tiktoken`, else an HF `tokenizer.json`."""
    folder = Path(folder)
    if (folder / VOCAB_FILE).is_file():
        return HunyuanTokenizer.from_pretrained(folder)
    if (folder / HF_TOKENIZER_FILE).is_file():
        return HFTokenizer.from_pretrained(folder)
    raise TokenizerError(f"{folder} has no tokenizer (a model folder holds {VOCAB_FILE} or {HF_TOKENIZER_FILE})")


__all__ = [
    "CHAT_TEMPLATE", "CONFIG_FILE", "DEFAULT_CHAT_STOP", "ENDOFTEXT", "EOS", "EXTRA_0", "EXTRA_4", "EXTRA_5",
    "HF_TOKENIZER_FILE", "HFTokenizer", "HunyuanTokenizer", "MIN_VOCAB_SIZE", "Messages", "PAD", "PATTERN", "ROLES",
    "SPECIAL_TOKENS", "STARTOFTEXT", "TOKENIZER_FILES", "Tokenizer", "TokenizerError", "VOCAB_FILE", "byte_to_char",
    "has_tokenizer", "load_tokenizer", "ranks_from_bpe", "read_ranks", "render_chat", "render_template", "train_bpe",
]
