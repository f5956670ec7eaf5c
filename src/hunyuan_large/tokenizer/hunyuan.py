"""The release's tokenizer: a tiktoken-format vocabulary (`hy.tiktoken` or a trained one) + 209 specials.

Encoding NFC-normalises the text and pre-tokenises it with the release's regex (digits one at a
time) before tiktoken's rank-based BPE (a lone surrogate, which has no UTF-8, becomes U+FFFD).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import tiktoken

from ..generation_config import eos_token_ids, read_generation_config
from .base import Messages, Tokenizer, TokenizerError
from .bpe import ranks_from_bpe, train_bpe
from .chat import CHAT_TEMPLATE, render_chat
from .vocab import (CONFIG_FILE, DEFAULT_CHAT_STOP, ENDOFTEXT, EOS, EXTRA_0, EXTRA_4, EXTRA_5, MIN_VOCAB_SIZE,
                    PAD, PATTERN, SPECIAL_TOKENS, STARTOFTEXT, VOCAB_FILE, nfc, read_ranks)

_CONFIG = {
    "model_max_length": 1048576,
    "tokenizer_class": "HYTokenizer",
    "auto_map": {"AutoTokenizer": ["tokenization_hy.HYTokenizer", None]},
    "additional_special_tokens": [STARTOFTEXT, EXTRA_0, EXTRA_4, EXTRA_5, EOS],
    "chat_template": CHAT_TEMPLATE,
}


class HunyuanTokenizer(Tokenizer):
    """A tiktoken-format vocabulary (the release's `hy.tiktoken` or a trained one) + the 209 specials."""

    def __init__(self, ranks: Mapping[bytes, int], chat_stop_ids: Sequence[int] | None = None):
        """`ranks` must be 0..n-1; specials take ids n..n+208; stop ids default to <|eos|>, <|extra_5|>."""
        if sorted(ranks.values()) != list(range(len(ranks))):
            raise TokenizerError("vocabulary ranks must be exactly 0..n-1, each once")
        self.n_ranks = len(ranks)
        self.special_ids = {tok: self.n_ranks + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self._enc = tiktoken.Encoding(
            "hunyuan",
            pat_str=PATTERN,
            mergeable_ranks=dict(ranks),
            special_tokens=self.special_ids,
            explicit_n_vocab=self.n_ranks + len(SPECIAL_TOKENS),
        )
        stops = tuple(chat_stop_ids) if chat_stop_ids is not None else tuple(map(self.token_id, DEFAULT_CHAT_STOP))
        bad = [i for i in stops if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(f"stop id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        self.chat_stop_ids = stops

    # ---- loading and saving -------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> HunyuanTokenizer:
        """Load a `hy.tiktoken` file (default chat stop ids)."""
        return cls(read_ranks(path))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str]) -> HunyuanTokenizer:
        """Load a model folder: `hy.tiktoken`, and the stop ids of `generation_config.json` if present."""
        folder = Path(folder)
        if not (folder / VOCAB_FILE).is_file():
            raise TokenizerError(f"{folder} has no {VOCAB_FILE} (a tokenizer folder holds {VOCAB_FILE})")
        stops = eos_token_ids(read_generation_config(folder) or {}, folder)
        return cls(read_ranks(folder / VOCAB_FILE), stops or None)  # none: the release's chat stops

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write `hy.tiktoken` and `tokenizer_config.json` as in the release's model folders."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lines = (f"{base64.b64encode(self.token_bytes(rank)).decode()} {rank}\n" for rank in range(self.n_ranks))
        (folder / VOCAB_FILE).write_text("".join(lines), encoding="utf-8")
        (folder / CONFIG_FILE).write_text(json.dumps(_CONFIG, indent=2, ensure_ascii=False) + "\n")

    # ---- ids -----------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Ranks + specials (128166 for the release); embedding tables may be larger."""
        return self._enc.n_vocab

    def token_id(self, name: str) -> int:
        """The id of a special token by its text, e.g. token_id('<|eos|>')."""
        if name not in self.special_ids:
            raise TokenizerError(f"{name!r} is not a special token (use <|endoftext|>, <|eos|>, <|extra_N|>, ...)")
        return self.special_ids[name]

    @property
    def special_texts(self) -> tuple[str, ...]:
        return tuple(self.special_ids)

    @property
    def bos_id(self) -> int:
        """<|startoftext|>, the beginning-of-document token the release adds."""
        return self.special_ids[STARTOFTEXT]

    bod_id = bos_id

    @property
    def eos_id(self) -> int:
        """<|endoftext|>, the end-of-document token the release adds."""
        return self.special_ids[ENDOFTEXT]

    eod_id = eos_id

    @property
    def pad_id(self) -> int:
        """<|pad|>."""
        return self.special_ids[PAD]

    @property
    def chat_eos_id(self) -> int:
        """<|eos|> (127960 in the release): ends an assistant turn in the Instruct template."""
        return self.special_ids[EOS]

    @property
    def extra_0_id(self) -> int:
        """<|extra_0|>: ends a user turn in the Instruct template."""
        return self.special_ids[EXTRA_0]

    @property
    def extra_4_id(self) -> int:
        """<|extra_4|>: ends the system prompt in the Instruct template."""
        return self.special_ids[EXTRA_4]

    @property
    def extra_5_id(self) -> int:
        """<|extra_5|>: a stop token of the release's generation_config.json."""
        return self.special_ids[EXTRA_5]

    # ---- encoding and decoding -----------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """NFC text -> ids, special-token text recognised; wrapped in <|startoftext|>...<|endoftext|>."""
        if not isinstance(text, str):
            raise TokenizerError(f"text to encode must be a str, got {type(text).__name__}")
        ids = self._enc.encode(nfc(text), allowed_special="all")
        return [self.bos_id, *ids, self.eos_id] if add_special_tokens else ids

    def encode_prompt(self, text: str) -> list[int]:
        """<|startoftext|> + the text (no end-of-text, since the model continues it)."""
        return [self.bos_id, *self.encode(text, add_special_tokens=False)]

    def encode_document(self, text: str) -> list[int]:
        """Raw corpus text -> ids: NFC, nothing added, special-token text encoded as ordinary text."""
        if not isinstance(text, str):
            raise TokenizerError(f"text to encode must be a str, got {type(text).__name__}")
        return self._enc.encode_ordinary(nfc(text))

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """`encode_document` of each text, in parallel threads (tiktoken releases the GIL)."""
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise TokenizerError(f"texts to encode must be str, got {type(bad).__name__}")
        threads = num_threads or os.cpu_count() or 1
        return self._enc.encode_ordinary_batch([nfc(t) for t in texts], num_threads=threads)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's text in UTF-8), e.g. for streaming decode."""
        if not 0 <= token_id < self.vocab_size:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self._enc.decode_single_token_bytes(token_id)

    def is_special(self, token_id: int) -> bool:
        """Specials are the ids from n_ranks on (and ids beyond the vocabulary, e.g. padded rows)."""
        return token_id >= self.n_ranks

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False, errors: str = "replace") -> str:
        """Ids -> text; skip_special_tokens drops every id >= n_ranks; bad UTF-8 per `errors`."""
        ids = [int(i) for i in ids]
        if ids and not 0 <= min(ids) <= max(ids) < self.vocab_size:
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise TokenizerError(f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        if skip_special_tokens:
            ids = [i for i in ids if i < self.n_ranks]
        return self._enc.decode(ids, errors=errors)

    # ---- chat ------------------------------------------------------------------------------------

    def render_chat(self, messages: Messages, add_generation_prompt: bool = False) -> str:
        """The release's Instruct template; it has no generation prompt (the reply follows <|extra_0|>)."""
        return render_chat(messages)

    # ---- training --------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts_or_files: Iterable[str | os.PathLike[str]],
        vocab_size: int,
        *,
        min_frequency: int = 2,
        show_progress: bool = False,
    ) -> HunyuanTokenizer:
        """Train a byte-level BPE vocabulary; str items are texts, path objects are UTF-8 files.

        `vocab_size` counts the ranks and the 209 specials; the result is smaller when the text
        runs out of pairs seen `min_frequency` times.
        """
        if vocab_size < MIN_VOCAB_SIZE:
            raise TokenizerError(
                f"vocab_size {vocab_size} is too small: it must be >= {MIN_VOCAB_SIZE} "
                f"(256 byte tokens + {len(SPECIAL_TOKENS)} special tokens)"
            )
        bpe = train_bpe(texts_or_files, vocab_size - len(SPECIAL_TOKENS), min_frequency, show_progress)
        return cls(ranks_from_bpe(bpe))
