"""Terminal front ends of the engine: one-shot generation and an interactive chat, both streamed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from ..errors import UserError
from .engine import Engine
from .sampling import SamplingParams


def stream_to(out: TextIO, engine: Engine, prompt: list[int], params: SamplingParams) -> tuple[str, str, int]:
    """Stream one generation's text to `out`; returns (text, finish reason, tokens generated)."""
    parts, reason, tokens = [], "abort", 0
    for step in engine.stream(prompt, params):
        out.write(step.text)
        out.flush()
        parts.append(step.text)
        tokens = step.completion_tokens
        reason = step.finish_reason or reason
    return "".join(parts), reason, tokens


def generate(engine: Engine, prompt: str, params: SamplingParams, out: TextIO | None = None,
             err: TextIO | None = None) -> str:
    """Continue `prompt`, streaming the text to `out` and a one-line summary to `err` (default:
    sys.stdout and sys.stderr as they are at the call, which redirection and test capture replace)."""
    out, err = out or sys.stdout, err or sys.stderr
    ids = engine.encode_prompt(prompt)
    t0 = time.perf_counter()
    text, reason, tokens = stream_to(out, engine, ids, params)
    dt = time.perf_counter() - t0
    out.write("\n")
    err.write(f"[{len(ids)} prompt tokens, {tokens} generated in {dt:.2f} s "
              f"({tokens / dt:.1f} tokens/s), finish: {reason}]\n")
    return text


def chat(engine: Engine, params: SamplingParams, system: str | None = None,
         read: Callable[[str], str] = input, out: TextIO | None = None) -> None:
    """A chat in the terminal with the Instruct template; /reset clears it, /exit or Ctrl-D ends it."""
    out = out or sys.stdout
    params = engine.chat_params(params)
    head = [{"role": "system", "content": system}] if system else []
    messages = list(head)
    out.write("chat: type a message; /reset starts over, /exit quits; Ctrl-C stops a reply\n")
    while True:
        try:
            line = read("> ").strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            messages = list(head)
            continue
        if not line:
            continue
        messages.append({"role": "user", "content": line})
        try:
            ids = engine.encode_chat(messages)
            engine.check_prompt(ids)
        except UserError as e:
            messages.pop()
            out.write(f"error: {e} (use /reset to start over)\n")
            continue
        try:
            reply, _, _ = stream_to(out, engine, ids, params)
        except KeyboardInterrupt:  # the turn is dropped from the history
            messages.pop()
            out.write(" [stopped]\n")
            continue
        out.write("\n")
        messages.append({"role": "assistant", "content": reply})
