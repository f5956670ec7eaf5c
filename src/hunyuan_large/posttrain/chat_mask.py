"""The tokens of a conversation and which of them the assistant wrote, for any chat template.

No template markers are needed: each assistant message's span is found by rendering the
conversation prefix by prefix. With P = render(messages[:i], generation prompt) and
F = render(messages[:i+1]), the assistant wrote F[len(P):], up to and including its first
end-of-turn token (`chat_stop_ids`); what the template adds after that (ChatML's newline) is
not the model's to predict. A template whose renders are not prefixes of each other is refused.
"""

from __future__ import annotations

from ..tokenizer import Tokenizer, TokenizerError
from .data import Messages


class ChatMaskError(TokenizerError):
    """A chat template that does not render a conversation prefix by prefix."""


def assistant_spans(tok: Tokenizer, messages: Messages, first: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the UTF-8 byte span [start, end) of each assistant message
    from message `first` on."""
    text = tok.render_chat(messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or i < first:
            continue
        before = tok.render_chat(messages[:i], add_generation_prompt=True) if i else ""
        upto = tok.render_chat(messages[: i + 1])
        if not (upto.startswith(before) and text.startswith(upto)):
            raise ChatMaskError("the chat template does not render conversations prefix by prefix "
                                f"(message {i}), so the assistant's tokens cannot be found")
        spans.append((len(before.encode()), len(upto.encode())))
    return text, spans


def tokens_and_mask(tok: Tokenizer, messages: Messages, first: int = 0) -> tuple[list[int], list[bool]]:
    """Ids of the rendered conversation and, per id, whether the assistant wrote it (in the
    messages from `first` on: a preference pair's response after its prompt)."""
    text, spans = assistant_spans(tok, messages, first)
    ids = tok.encode(text, add_special_tokens=False)
    starts, offset = [], 0
    for i in ids:
        starts.append(offset)
        offset += len(tok.token_bytes(i))
    if offset != len(text.encode()):
        raise ChatMaskError("the tokenizer's tokens do not spell the rendered text byte for byte")
    stops = set(tok.chat_stop_ids)
    mask = [False] * len(ids)
    for a, b in spans:
        for j, s in enumerate(starts):
            if a <= s < b:
                mask[j] = True
                if ids[j] in stops:
                    break
    return ids, mask
