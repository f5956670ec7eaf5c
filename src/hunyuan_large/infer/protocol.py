"""The OpenAI API's request bodies (validated strictly) and response objects, for the server.

Bodies are pydantic models in strict mode: a field of the wrong type is a 400 naming the field,
not a coercion. Unknown fields are ignored, as OpenAI-compatible servers do, except OpenAI fields
that would change the answer and that this server does not implement (`UNSUPPORTED`): a client
relying on them gets a 400 naming the field rather than a silently different answer. `top_k` and
`repetition_penalty` are accepted as extensions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import UserError
from ..tokenizer import Tokenizer
from .engine import StepOutput, TokenLogprob
from .sampling import SamplingParams


class APIError(Exception):
    """An error answered as OpenAI's error JSON with an HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        """OpenAI's error JSON."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False


class _SamplingFields(_Strict):
    model: str
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # extension
    repetition_penalty: float | None = None  # extension
    ignore_eos: bool = False  # extension (as vLLM): do not stop on the model's stop ids
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None


class CompletionRequest(_SamplingFields):
    prompt: str | list[int]
    max_tokens: int | None = 16  # OpenAI's default for completions
    logprobs: int | None = None
    echo: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        """The content as one string (text parts joined)."""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_SamplingFields):
    messages: list[ChatMessage]
    max_tokens: int | None = None  # None: up to the end of the context
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}
# OpenAI fields not implemented here -> their values that ask for nothing (accepted).
UNSUPPORTED = {"tools": [[]], "tool_choice": ["none"], "functions": [[]], "function_call": ["none"],
               "response_format": [{"type": "text"}], "logit_bias": [{}], "best_of": [1], "suffix": [""]}


def parse(model: type[BaseModel], body: object) -> BaseModel:
    """Validate a JSON body; the first problem becomes a 400 naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    for name, harmless in UNSUPPORTED.items():
        if body.get(name) is not None and body[name] not in harmless:
            raise APIError(400, f"'{name}' is not supported by this server", param=name)
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        # The location without pydantic's union-member tags ('str', 'list[int]'): messages.0.role
        path = [str(x) for x in err["loc"] if isinstance(x, int) or (x.isidentifier() and x not in _TYPE_TAGS)]
        field = ".".join(path) or "body"
        raise APIError(400, f"invalid value for '{field}': {err['msg']}", param=path[0] if path else None) from None


def sampling_params(req: _SamplingFields, defaults: SamplingParams, max_tokens: int | None,
                    logprobs: int | None) -> SamplingParams:
    """The engine's SamplingParams for a request: the model's defaults, overridden by what it sets."""
    if req.n < 1:
        raise APIError(400, f"n must be at least 1, got {req.n}", param="n")
    if req.presence_penalty or req.frequency_penalty:
        raise APIError(400, "presence_penalty and frequency_penalty are not supported; "
                            "use repetition_penalty", param="presence_penalty")
    if max_tokens is not None and max_tokens < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
    if logprobs is not None and not 0 <= logprobs <= 20:
        raise APIError(400, f"logprobs must be between 0 and 20, got {logprobs}", param="logprobs")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    changes = dict(max_new_tokens=max_tokens, stop=stop, logprobs=logprobs, seed=req.seed, n=req.n)
    if req.ignore_eos:
        changes["stop_token_ids"] = ()
    for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
        if getattr(req, name) is not None:
            changes[name] = getattr(req, name)
    try:
        return defaults.replace(**changes)
    except UserError as e:  # SamplingParams validation: one line naming the value
        raise APIError(400, str(e)) from None


def check_length(prompt_tokens: int, max_tokens: int | None, context: int) -> None:
    """400 when the prompt, or the prompt plus max_tokens, does not fit the context."""
    if prompt_tokens >= context:
        raise APIError(400, f"This model's maximum context length is {context} tokens; the prompt has "
                            f"{prompt_tokens} tokens (no room left for the completion).", param="messages")
    if max_tokens is not None and prompt_tokens + max_tokens > context:
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, you "
                            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, "
                            f"{max_tokens} for the completion). Please reduce max_tokens.", param="max_tokens")


# ----- responses ---------------------------------------------------------------------------------
def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """OpenAI's usage object."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _token_str(tok: Tokenizer, token_id: int) -> str:
    return tok.token_bytes(token_id).decode("utf-8", errors="replace") if token_id < tok.vocab_size else ""


def completion_logprobs(tok: Tokenizer, items: list[TokenLogprob], offset: int) -> tuple[dict, int]:
    """The legacy completions `logprobs` object and the text offset after it.

    Special tokens are named in `tokens` but add no text, so they do not advance `text_offset`.
    """
    tokens, offsets = [], []
    for x in items:
        tokens.append(_token_str(tok, x.token_id))
        offsets.append(offset)
        offset += len(tokens[-1]) if not tok.is_special(x.token_id) else 0
    return {"tokens": tokens, "token_logprobs": [x.logprob for x in items],
            "top_logprobs": [{_token_str(tok, i): lp for i, lp in x.top} for x in items],
            "text_offset": offsets}, offset


def chat_logprobs(tok: Tokenizer, items: list[TokenLogprob]) -> dict:
    """The chat `logprobs` object: one entry per token with its bytes and top alternatives."""
    def entry(i: int, lp: float) -> dict:
        raw = tok.token_bytes(i) if i < tok.vocab_size else b""
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": lp, "bytes": list(raw)}

    return {"content": [entry(x.token_id, x.logprob) | {"top_logprobs": [entry(i, lp) for i, lp in x.top]}
                        for x in items]}


@dataclass
class Choice:
    """One sample's whole answer, for the non-streamed response."""

    index: int
    text: str
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None
    completion_tokens: int


class ResponseBuilder:
    """Builds one request's OpenAI response objects (whole, or as stream chunks), one choice per sample."""

    def __init__(self, request_id: str, model: str, chat: bool, tokenizer: Tokenizer):
        self.id, self.model, self.chat, self.tok = request_id, model, chat, tokenizer
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        self.text_offset: dict[int, int] = {}  # per choice: the completions logprobs' running offset

    def _base(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _logprobs(self, index: int, items: list[TokenLogprob] | None) -> dict | None:
        if items is None:
            return None
        if self.chat:
            return chat_logprobs(self.tok, items)
        out, self.text_offset[index] = completion_logprobs(self.tok, items, self.text_offset.get(index, 0))
        return out

    def full(self, choices: list[Choice], prompt_tokens: int) -> dict:
        """The non-streamed response; usage counts the completion tokens of all choices."""
        out = []
        for c in sorted(choices, key=lambda c: c.index):
            choice = {"index": c.index, "logprobs": self._logprobs(c.index, c.logprobs),
                      "finish_reason": c.finish_reason}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": c.text}
            else:
                choice["text"] = c.text
            out.append(choice)
        completion = sum(c.completion_tokens for c in choices)
        return self._base(self.object) | {"choices": out, "usage": usage(prompt_tokens, completion)}

    def chunk(self, out: StepOutput | None, include_usage: bool, index: int = 0) -> dict:
        """One stream chunk for a step's output; None gives the chat stream's opening role chunk of choice `index`."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        choice: dict = {"index": index if out is None else out.index, "logprobs": None, "finish_reason": None}
        if out is None:
            choice["delta"] = {"role": "assistant", "content": ""}
        else:
            choice["logprobs"] = self._logprobs(out.index, out.logprobs)
            choice["finish_reason"] = out.finish_reason
            if self.chat:
                choice["delta"] = {"content": out.text} if out.text or not out.finished else {}
            else:
                choice["text"] = out.text
        chunk = self._base(obj) | {"choices": [choice]}
        if include_usage:
            chunk["usage"] = None
        return chunk

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        """The last chunk of a stream with `include_usage`: no choices, the usage."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return self._base(obj) | {"choices": [], "usage": usage(prompt_tokens, completion_tokens)}
