"""The one tokenizer interface that the engine, server and trainer use, whatever the vocabulary."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, overload

from ..errors import UserError

Messages = Sequence[Mapping[str, str]]  # [{"role": "user", "content": "..."}, ...]
# Private-use characters that mark, while a template renders, where a message held special-token text.
SHIELD_OPEN, SHIELD_CLOSE = "\ue000", "\ue001"
_SENTINEL = re.compile(f"{SHIELD_OPEN}(\\d+){SHIELD_CLOSE}")


class TokenizerError(UserError):
    """A bad vocabulary file or folder, training request, text, id or chat message."""


class Tokenizer(ABC):
    """Text <-> ids, the chat template and the special ids of one model folder's vocabulary."""

    vocab_size: int  # ids the tokenizer produces; embedding tables may be larger
    chat_stop_ids: tuple[int, ...]  # ids that end an assistant turn

    @property
    @abstractmethod
    def bos_id(self) -> int | None:
        """The beginning-of-text id, or None when the vocabulary has none."""

    @property
    @abstractmethod
    def eos_id(self) -> int | None:
        """The end-of-text id (ends a training document), or None."""

    @property
    @abstractmethod
    def pad_id(self) -> int | None:
        """The padding id, or None."""

    @abstractmethod
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Text -> ids, special-token text recognised; add_special_tokens adds the vocabulary's bos/eos."""

    @abstractmethod
    def encode_document(self, text: str) -> list[int]:
        """Raw corpus text -> ids: nothing added, special-token text encoded as ordinary text."""

    @abstractmethod
    def encode_prompt(self, text: str) -> list[int]:
        """A completion prompt: the text as a document starts (bos if the vocabulary adds one), not ended."""

    @abstractmethod
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Ids -> text (invalid UTF-8 replaced)."""

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's text in UTF-8), e.g. for streaming decode."""

    @abstractmethod
    def is_special(self, token_id: int) -> bool:
        """True for special (control) ids and ids beyond the vocabulary: they add no text."""

    @abstractmethod
    def render_chat(self, messages: Messages, add_generation_prompt: bool = False) -> str:
        """The conversation as the model's chat template writes it."""

    @abstractmethod
    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write this tokenizer's files into a model folder."""

    def document(self, text: str) -> list[int]:
        """A training document: bos (if the vocabulary has one) + `encode_document(text)` + eos."""
        head = [self.bos_id] if self.bos_id is not None else []
        tail = [self.eos_id] if self.eos_id is not None else []
        return [*head, *self.encode_document(text), *tail]

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """`encode_document` of each text."""
        return [self.encode_document(t) for t in texts]

    @overload
    def apply_chat_template(self, messages: Messages, add_generation_prompt: bool = ...,
                            tokenize: Literal[True] = ...) -> list[int]: ...
    @overload
    def apply_chat_template(self, messages: Messages, add_generation_prompt: bool = ...,
                            *, tokenize: Literal[False]) -> str: ...

    def apply_chat_template(self, messages: Messages, add_generation_prompt: bool = False,
                            tokenize: bool = True) -> list[int] | str:
        """The chat prompt of a conversation: ids, or the text if not tokenize.

        Tokenising recognises the special tokens the template writes and adds no bos/eos (the
        template writes its own). Special-token text inside a message is encoded as plain text, so
        what a user types can never forge a turn boundary or a stop token; a conversation without
        such text is encoded exactly as a whole (as transformers' apply_chat_template does).
        """
        if not tokenize:
            return self.render_chat(messages, add_generation_prompt)
        pattern = re.compile("|".join(map(re.escape, sorted({*self.special_texts, SHIELD_OPEN}, key=len, reverse=True))))
        typed: list[str] = []  # special text found in messages, in order; a sentinel marks each place

        def shield(match: re.Match) -> str:
            typed.append(match.group())
            return f"{SHIELD_OPEN}{len(typed) - 1}{SHIELD_CLOSE}"

        if isinstance(messages, Sequence) and not isinstance(messages, (str, bytes)):  # else render_chat refuses it
            messages = [{**m, "content": pattern.sub(shield, m["content"])}
                        if isinstance(m, Mapping) and isinstance(m.get("content"), str) else m for m in messages]
        pieces = _SENTINEL.split(self.render_chat(messages, add_generation_prompt))
        ids: list[int] = []
        for i, piece in enumerate(pieces):  # template text, then (index of typed text, template text)...
            ids += self.encode(piece, add_special_tokens=False) if i % 2 == 0 else self.encode_document(typed[int(piece)])
        return ids

    @property
    @abstractmethod
    def special_texts(self) -> tuple[str, ...]:
        """The text of every special token: what a chat template may write and a message may not."""
