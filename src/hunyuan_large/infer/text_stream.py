"""Incremental decoding of generated ids to text, with stop strings.

Token bytes go through an incremental UTF-8 decoder, so a character split across tokens appears
once complete. Special tokens (and ids beyond the tokenizer, e.g. unused embedding rows) add no
text. Text that could still turn out to be the start of a stop string is held back until it
cannot, so a streamed output never shows part of a stop string.
"""

from __future__ import annotations

import codecs

from ..tokenizer import Tokenizer


class TextStream:
    """The output text of one request, built token by token."""

    def __init__(self, tokenizer: Tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = stop
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # decoded so far, cut before a stop string once one appears
        self.sent = 0  # characters already handed out by `take`
        self.stopped = False  # a stop string appeared

    def add(self, token_id: int) -> None:
        """Append one generated id; sets `stopped` if the text now contains a stop string."""
        if self.stopped or self.tokenizer.is_special(token_id):  # specials and unused rows: no text
            return
        before = len(self.text)
        self.text += self._utf8.decode(self.tokenizer.token_bytes(token_id))
        if self.stop:
            # Only a match that ends in the new text is new: start far enough back to catch it.
            lo = max(0, before - self.holdback)
            hits = [i for i in (self.text.find(s, lo) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True

    def take(self, final: bool = False) -> str:
        """The text not yet handed out that no stop string can still claim (all of it if final)."""
        if final and not self.stopped:
            self.text += self._utf8.decode(b"", final=True)  # a dangling partial character
        end = len(self.text) if final or self.stopped else max(self.sent, len(self.text) - self.holdback)
        out, self.sent = self.text[self.sent : end], end
        return out
