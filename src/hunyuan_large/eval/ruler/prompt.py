"""A task instance as text (the question and RULER's answer prefix) and its prompt ids for a model."""

from __future__ import annotations

from dataclasses import dataclass

from ...tokenizer import Tokenizer


@dataclass
class Built:
    """One generated instance: what the user asks, how the answer starts, what the answer must contain."""

    text: str  # the task template filled with its context and query
    answer_prefix: str  # RULER starts the reply ("The special magic number ... is"); the model continues it
    outputs: list[str]  # the reference strings the reply must contain


def prompt_ids(tok: Tokenizer, built: Built, chat: bool) -> list[int]:
    """The ids the model reads: the text plus answer prefix as a document start, or (chat) the text as
    the user's turn with the answer prefix opening the assistant's reply (RULER's chat templates)."""
    if not chat:
        return tok.encode_prompt(built.text + built.answer_prefix)
    head = tok.apply_chat_template([{"role": "user", "content": built.text}], add_generation_prompt=True)
    return [*head, *tok.encode_document(built.answer_prefix)]
