"""The release's vocabulary format: `hy.tiktoken` ranks, the 209 special tokens and the split regex.

A vocabulary is a list of byte strings whose rank is their line number in `hy.tiktoken`, then 209
special tokens numbered from the number of ranks upward (SPEC §4). Encoding NFC-normalises the
text and pre-tokenises it with the release's regex (digits one at a time) before BPE.
"""

from __future__ import annotations

import base64
import binascii
import os
import unicodedata
from pathlib import Path

from .base import TokenizerError

VOCAB_FILE = "hy.tiktoken"
CONFIG_FILE = "tokenizer_config.json"

# The release's pre-tokenisation: cl100k's alternatives, except one digit per piece (`\p{N}`).
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

ENDOFTEXT, STARTOFTEXT, BOS, EOS, PAD = "<|endoftext|>", "<|startoftext|>", "<|bos|>", "<|eos|>", "<|pad|>"
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, STARTOFTEXT, BOS, EOS, PAD) + tuple(
    f"<|extra_{n}|>" for n in range(204)
)
EXTRA_0, EXTRA_4, EXTRA_5 = "<|extra_0|>", "<|extra_4|>", "<|extra_5|>"
# The Instruct model ends a turn with <|eos|>; the release also stops on <|extra_5|>.
DEFAULT_CHAT_STOP = (EOS, EXTRA_5)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


def nfc(text: str) -> str:
    # CPython's normalize() runs the NFC quick check first and returns already-NFC text as is,
    # so this costs ~1 ms per MB on typical corpora.
    return unicodedata.normalize("NFC", text)


def read_ranks(path: str | os.PathLike[str]) -> dict[bytes, int]:
    """Token bytes -> rank from a `hy.tiktoken` file: rank = line order (as the release's code).

    The number column must equal that rank: the release's file satisfies it, and a missing,
    duplicated or reordered line would otherwise shift every later token silently.
    """
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise TokenizerError(f"cannot read vocabulary {path}: {e.strerror}") from None
    ranks: dict[bytes, int] = {}
    first_line: dict[bytes, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise TokenizerError(f"{path} line {lineno}: expected 'base64 number', got {line[:60]!r}")
        try:
            token = base64.b64decode(fields[0], validate=True)
        except binascii.Error:
            raise TokenizerError(f"{path} line {lineno}: {fields[0][:60]!r} is not base64") from None
        if token in ranks:
            raise TokenizerError(
                f"{path} line {lineno}: duplicate token {token!r} (first on line {first_line[token]})"
            )
        if fields[1] != str(len(ranks)).encode():
            raise TokenizerError(
                f"{path} line {lineno}: rank column is {fields[1][:20].decode(errors='replace')!r} but the line "
                f"is rank {len(ranks)} (a line is missing or out of order)"
            )
        ranks[token] = len(ranks)
        first_line[token] = lineno
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"{path} lacks {len(missing)} single-byte tokens (e.g. {bytes([missing[0]])!r})")
    return ranks
