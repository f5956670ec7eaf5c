"""Byte-level BPE training with HF `tokenizers`, turned into tiktoken ranks of the release's format."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from .base import TokenizerError
from .vocab import PATTERN


def byte_to_char() -> dict[int, str]:
    """The byte-level alphabet of HF's ByteLevel (GPT-2's): printable bytes map to themselves,
    the others to chr(256 + n) in byte order, so every byte is one visible character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = (b for b in range(256) if b not in keep)
    table = {b: chr(b) for b in keep}
    table.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return table


def _training_texts(items: Iterable[str | os.PathLike[str]], seen: list[int]) -> Iterator[str]:
    """Texts as given; files read whole as UTF-8 (one document each). Counts characters in `seen`."""
    for item in items:
        if isinstance(item, str):
            text = item
        elif isinstance(item, os.PathLike):
            try:
                text = Path(item).read_text(encoding="utf-8")
            except OSError as e:
                raise TokenizerError(f"cannot read training file {item}: {e.strerror}") from None
            except UnicodeDecodeError as e:
                raise TokenizerError(f"training file {item} is not UTF-8 (byte {e.start})") from None
        else:
            raise TokenizerError(f"training items must be str texts or paths, got {type(item).__name__}")
        seen[0] += len(text)
        yield text


def train_bpe(
    texts_or_files: Iterable[str | os.PathLike[str]],
    n_ranks: int,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> Tokenizer:
    """An HF byte-level BPE tokenizer of up to `n_ranks` tokens that splits text exactly as ours does.

    NFC, then the release's regex (isolated pieces), then ByteLevel without its own regex.
    `ignore_merges` makes a piece that is already a token encode as that token, as tiktoken does.
    """
    bpe = Tokenizer(models.BPE(ignore_merges=True))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_ranks,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    seen = [0]
    bpe.train_from_iterator(_training_texts(texts_or_files, seen), trainer)
    if seen[0] == 0:
        raise TokenizerError("no training text: every text and file given was empty")
    return bpe


def ranks_from_bpe(bpe: Tokenizer) -> dict[bytes, int]:
    """Tiktoken ranks of a trained byte-level BPE: the 256 bytes in byte order, then each merged
    token in creation order, so merging the lowest-ranked pair replays the training merges."""
    char_to_byte = {c: b for b, c in byte_to_char().items()}
    ranks = {bytes([b]): b for b in range(256)}
    for token, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]):
        data = bytes(char_to_byte[c] for c in token)
        if data not in ranks:
            ranks[data] = len(ranks)
    return ranks
