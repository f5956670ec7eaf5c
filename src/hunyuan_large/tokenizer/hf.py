"""An HF `tokenizer.json` vocabulary (+ `tokenizer_config.json`: chat template, bos/eos/pad) behind our interface.

Model folders imported from other open checkpoints carry their own tokenizer this way. Encoding is
the `tokenizers` library's; the chat template is rendered with jinja2 in a sandbox (chat.py).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFBackend

from ..generation_config import eos_token_ids, read_generation_config
from .base import Messages, Tokenizer, TokenizerError
from .bpe import byte_to_char
from .chat import render_template

HF_TOKENIZER_FILE = "tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"  # newer HF folders keep the template here
SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")


def _token_text(value: Any) -> str | None:
    """A special token of tokenizer_config.json: a string or an AddedToken dict {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _uses_byte_level(backend: HFBackend) -> bool:
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    return any(d.get("type") == "ByteLevel" for d in parts)


class HFTokenizer(Tokenizer):
    """A `tokenizers` vocabulary with the special tokens and chat template of its tokenizer_config.json."""

    def __init__(self, backend: HFBackend, config: dict[str, Any] | None = None,
                 chat_stop_ids: Sequence[int] | None = None):
        """`config` is tokenizer_config.json's dict; stop ids default to the eos id."""
        self.backend, self.config = backend, dict(config or {})
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self.special_tokens = {name: _token_text(self.config.get(name)) for name in SPECIAL_NAMES}
        self._ids = {name: self._id_of(name, text) for name, text in self.special_tokens.items()}
        self._added = backend.get_added_tokens_decoder()  # id -> AddedToken
        self._special = {i for i, t in self._added.items() if t.special}
        self._byte_level = _uses_byte_level(backend)
        template = self.config.get("chat_template")
        if isinstance(template, list):  # [{"name": ..., "template": ...}]: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        self.chat_template: str | None = template
        stops = tuple(chat_stop_ids) if chat_stop_ids else ((self.eos_id,) if self.eos_id is not None else ())
        bad = [i for i in stops if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(f"stop id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        self.chat_stop_ids = stops

    def _id_of(self, name: str, text: str | None) -> int | None:
        if text is None:
            return None
        token_id = self.backend.token_to_id(text)
        if token_id is None:
            raise TokenizerError(f"{name} {text!r} of {HF_CONFIG_FILE} is not in the vocabulary")
        return token_id

    # ---- loading and saving -------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str]) -> HFTokenizer:
        """Load tokenizer.json, tokenizer_config.json (and chat_template.jinja), and the stop ids of
        generation_config.json."""
        folder = Path(folder)
        try:
            backend = HFBackend.from_file(str(folder / HF_TOKENIZER_FILE))
        except Exception as e:  # tokenizers raises a bare Exception for a bad file
            raise TokenizerError(f"cannot read {folder / HF_TOKENIZER_FILE}: {e}") from None
        config: dict[str, Any] = {}
        if (folder / HF_CONFIG_FILE).is_file():
            try:
                config = json.loads((folder / HF_CONFIG_FILE).read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise TokenizerError(f"{folder / HF_CONFIG_FILE} is not valid JSON: {e}") from None
        if (folder / TEMPLATE_FILE).is_file():
            config["chat_template"] = (folder / TEMPLATE_FILE).read_text(encoding="utf-8")
        stops = eos_token_ids(read_generation_config(folder) or {}, folder)
        return cls(backend, config, stops)

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write tokenizer.json and tokenizer_config.json (with the chat template)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / HF_TOKENIZER_FILE))
        config = dict(self.config, chat_template=self.chat_template) if self.chat_template else self.config
        (folder / HF_CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    # ---- ids -----------------------------------------------------------------------------------

    @property
    def bos_id(self) -> int | None:
        return self._ids["bos_token"]

    @property
    def eos_id(self) -> int | None:
        return self._ids["eos_token"]

    @property
    def pad_id(self) -> int | None:
        return self._ids["pad_token"]

    @property
    def special_texts(self) -> tuple[str, ...]:
        return tuple(t.content for t in self._added.values() if t.special)

    def is_special(self, token_id: int) -> bool:
        return token_id >= self.vocab_size or token_id in self._special

    # ---- encoding and decoding -----------------------------------------------------------------

    def _check_text(self, text: object) -> None:
        if not isinstance(text, str):
            raise TokenizerError(f"text to encode must be a str, got {type(text).__name__}")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self._check_text(text)
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    @functools.cached_property
    def _plain(self) -> HFBackend:
        """A copy that encodes special-token text as ordinary text."""
        plain = HFBackend.from_str(self.backend.to_str())
        plain.encode_special_tokens = True
        return plain

    def encode_document(self, text: str) -> list[int]:
        self._check_text(text)
        return self._plain.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        for text in texts:
            self._check_text(text)
        return [e.ids for e in self._plain.encode_batch(list(texts), add_special_tokens=False)]

    def encode_prompt(self, text: str) -> list[int]:
        """The text with what the tokenizer's post-processor adds (e.g. a bos), as HF's tokenizer() does."""
        return self.encode(text, add_special_tokens=True)

    def _check_ids(self, ids: list[int]) -> None:
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise TokenizerError(f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    @functools.cached_property
    def _char_to_byte(self) -> dict[str, int]:
        return {c: b for b, c in byte_to_char().items()}

    def token_bytes(self, token_id: int) -> bytes:
        self._check_ids([token_id])
        token = self.backend.id_to_token(token_id)
        if token_id in self._added:
            return token.encode()
        if self._byte_level:
            return bytes(self._char_to_byte[c] for c in token)
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):  # sentencepiece byte fallback
            return bytes([int(token[3:5], 16)])
        return token.replace("\u2581", " ").encode()

    # ---- chat ------------------------------------------------------------------------------------

    def render_chat(self, messages: Messages, add_generation_prompt: bool = False) -> str:
        """The folder's jinja chat template, sandboxed, with HF's variables."""
        if not self.chat_template:
            raise TokenizerError(f"this tokenizer has no chat template ({HF_CONFIG_FILE} lacks 'chat_template')")
        return render_template(self.chat_template, messages, add_generation_prompt, self.special_tokens)
