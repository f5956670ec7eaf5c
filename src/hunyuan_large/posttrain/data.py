"""Post-training data in jsonl: SFT conversations, preference pairs, online prompts.

A bad line gets one message naming its file and line; by default it is counted, reported at
the end and skipped, with `strict` the run stops at it. Parsers may tokenize too: a conversation
the chat template refuses is a bad line like malformed JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..tokenizer import ROLES, TokenizerError

Messages = list[dict[str, str]]


class PostDataError(UserError):
    """A post-training data file that cannot be used."""


class BadRecord(ValueError):
    """One line's content does not fit the format (the message says why)."""


@dataclass
class Pair:
    """A preference pair: the prompt conversation and two assistant continuations."""

    prompt: Messages
    chosen: Messages
    rejected: Messages


@dataclass
class Report:
    """Bad lines seen while reading: their count and the first few messages."""

    bad: int = 0
    messages: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.bad += 1
        if len(self.messages) < 10:
            self.messages.append(message)

    def summary(self) -> str:
        more = f" (first {len(self.messages)} shown)" if self.bad > len(self.messages) else ""
        return f"{self.bad} bad line(s) skipped{more}:\n  " + "\n  ".join(self.messages)


def _messages(value: Any, what: str) -> Messages:
    if not isinstance(value, list) or not value:
        raise BadRecord(f"{what} must be a non-empty list of messages")
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadRecord(f"{what}[{i}] must be {{\"role\": str, \"content\": str}}")
        if m["role"] not in ROLES:
            raise BadRecord(f"{what}[{i}] has role {m['role']!r} (allowed: {', '.join(ROLES)})")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def parse_sft(record: Any) -> Messages:
    """{"messages": [...]} with at least one assistant message."""
    if not isinstance(record, Mapping) or "messages" not in record:
        raise BadRecord('expected {"messages": [...]}')
    messages = _messages(record["messages"], "messages")
    if not any(m["role"] == "assistant" for m in messages):
        raise BadRecord("no assistant message to learn from")
    return messages


def _response(value: Any, what: str) -> Messages:
    """A response: a string (one assistant message) or a list of assistant messages."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    messages = _messages(value, what)
    if any(m["role"] != "assistant" for m in messages):
        raise BadRecord(f"{what} may hold only assistant messages")
    return messages


def parse_prompt(record: Any) -> Messages:
    """{"prompt": [messages]} ending in a user message."""
    if not isinstance(record, Mapping) or "prompt" not in record:
        raise BadRecord('expected {"prompt": [messages], ...}')
    prompt = _messages(record["prompt"], "prompt")
    if prompt[-1]["role"] != "user":
        raise BadRecord("prompt must end with a user message")
    return prompt


def parse_pair(record: Any) -> Pair:
    """{"prompt": [messages], "chosen": str | [assistant messages], "rejected": ...}."""
    prompt = parse_prompt(record)
    for key in ("chosen", "rejected"):
        if key not in record:
            raise BadRecord(f"missing {key!r}")
    return Pair(prompt, _response(record["chosen"], "chosen"), _response(record["rejected"], "rejected"))


def _json(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRecord(f"not valid JSON ({e.msg} at column {e.colno})") from None


def read_jsonl(paths: list[str], parse: Callable[[Any], Any], strict: bool = False,
               report: Report | None = None) -> list:
    """Every good record of the files, parsed; bad lines go to `report` (or stop when strict)."""
    report = report if report is not None else Report()
    out = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise PostDataError(f"data file {path} does not exist")
        with open(path, encoding="utf-8", errors="replace") as f:  # bad bytes: U+FFFD, not a crash
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(parse(_json(line)))
                except (BadRecord, TokenizerError) as e:  # TokenizerError: the template refuses it
                    message = f"{path}:{number}: {e}"
                    if strict:
                        raise PostDataError(message) from None
                    report.add(message)
    if not out:
        raise PostDataError(f"no usable records in {', '.join(paths)}" + (f"; {report.summary()}" if report.bad else ""))
    return out
