"""Chat templates: the release's Instruct template in Python (exact), and any HF jinja template, sandboxed."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .base import Messages, TokenizerError
from .vocab import EOS, EXTRA_0, EXTRA_4, STARTOFTEXT

# The release's tokenizer_config.json, written verbatim so HF users of a saved folder get the same
# template. Its `context.update` branch fails under HF's sandbox; `render_chat` documents ours.
CHAT_TEMPLATE = (
    "{% set context = {'has_head': true} %}{% set loop_messages = messages %}"
    "{% for message in loop_messages %}{% set content = message['content'] %}"
    "{% if loop.index0 == 0 %}{% if content == '' %}{% set _ = context.update({'has_head': false}) %}"
    "{% elif message['role'] == 'system' %}{% set content = '<|startoftext|>' + content + '<|extra_4|>' %}"
    "{% endif %}{% endif %}{% if message['role'] == 'user' %}"
    "{% if loop.index0 == 1 and not context.has_head %}{% set content = '<|startoftext|>' + content %}{% endif %}"
    "{% if loop.index0 == 1 and context.has_head %}{% set content = content + '<|extra_0|>' %}"
    "{% else %}{% set content = '<|startoftext|>' + content + '<|extra_0|>' %}{% endif %}"
    "{% elif message['role'] == 'assistant' %}{% set content = content + '<|eos|>' %}{% endif %}"
    "{{ content }}{% endfor %}"
)
ROLES = ("system", "user", "assistant")  # "tool" messages are not modelled yet


def render_chat(messages: Messages) -> str:
    """The release's Instruct template in Python, byte for byte (SPEC §4).

    - a first system message: <|startoftext|>{sys}<|extra_4|>
    - a user message: <|startoftext|>{user}<|extra_0|>, except the message at index 1, which is
      {user}<|extra_0|> (the template's "user right after the system prompt" rule)
    - an assistant message: {reply}<|eos|>
    An empty first message switches that header off: it renders as nothing if it is a system
    message, and every user message is then wrapped in full. (The Jinja template's `dict.update`
    is refused by HF's sandbox, and outside it would give index 1 two <|startoftext|>; we give one,
    so an empty system prompt renders exactly like no system prompt.) A system message anywhere
    but first is refused: the template would paste it in unmarked.
    """
    check_messages(messages)
    has_head = messages[0]["content"] != ""
    parts = []
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "system":
            parts.append(f"{STARTOFTEXT}{content}{EXTRA_4}" if content else "")
        elif role == "user":
            head = "" if index == 1 and has_head else STARTOFTEXT
            parts.append(f"{head}{content}{EXTRA_0}")
        else:
            parts.append(f"{content}{EOS}")
    return "".join(parts)


def check_messages(messages: Messages, first_system_only: bool = True) -> None:
    """Each message a {"role", "content"} dict of a known role with str content; a system message only first."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise TokenizerError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise TokenizerError(f"message {index} must be a dict with 'role' and 'content', got {message!r:.80}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise TokenizerError(f"message {index} has role {role!r}; allowed: {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise TokenizerError(f"message {index} content must be a str, got {type(content).__name__}")
        if first_system_only and role == "system" and index > 0:
            raise TokenizerError(f"message {index} is a system message; only the first message may be one")


# ---- HF chat templates (jinja2, sandboxed) -----------------------------------------------------


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    # HF's filter: jinja's own escapes HTML characters, which a prompt must not get.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    """A chat template compiled as HF compiles it: sandboxed, trim_blocks, lstrip_blocks, loop controls."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TokenizerError(f"the chat template does not compile: {e} (line {e.lineno})") from None


def render_template(source: str, messages: Messages, add_generation_prompt: bool,
                    special_tokens: Mapping[str, str | None]) -> str:
    """Render an HF chat template with `messages`, `add_generation_prompt` and the special token texts."""
    check_messages(messages, first_system_only=False)
    try:
        return compile_template(source).render(messages=[dict(m) for m in messages],
                                               add_generation_prompt=add_generation_prompt, **special_tokens)
    except jinja2.exceptions.SecurityError as e:
        raise TokenizerError(f"the chat template did something the sandbox refuses: {e}") from None
    except jinja2.TemplateError as e:
        raise TokenizerError(f"the chat template refused the messages: {e}") from None
