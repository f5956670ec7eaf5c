"""Where text comes from: our engine in-process on a model folder, or OpenAI-compatible endpoints.

Every backend answers a batch of `Request`s with one text each, in order, or None for a request
the model refuses to take (a prompt longer than its context: HTTP 400). The endpoint backend
keeps at most `max_in_flight` requests open, spreads them round-robin over its endpoints and
retries connection errors, timeouts, 429 and 5xx with exponential backoff.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import UserError, check, require
from ..tokenizer import Tokenizer, load_tokenizer


@dataclass(frozen=True)
class Request:
    """One generation: chat messages, or a raw prompt (text or ids) to continue."""

    messages: tuple[dict, ...] | None = None
    prompt: str | tuple[int, ...] | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def sampling(self) -> dict:
        """The sampling parameters, as recorded in provenance."""
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": self.seed, "stop": list(self.stop)}


@dataclass
class BackendConfig:
    """A `[backends.NAME]` table: kind "engine" (model = a folder) or "openai" (model = a served name)."""

    kind: str
    model: str
    endpoints: list[str] = field(default_factory=list)  # base URLs, e.g. http://127.0.0.1:8000/v1
    api_key: str = ""
    max_in_flight: int = 8
    timeout: float = 120.0  # seconds per request
    retries: int = 4
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    tokenizer: str | None = None  # openai: a model folder whose chat template prefixes use
    device: str = "auto"  # engine
    max_batch: int = 16  # engine

    def __post_init__(self) -> None:
        require([(self.kind in ("engine", "openai"), f"kind must be 'engine' or 'openai', got {self.kind!r}"),
                 (self.kind == "engine" or bool(self.endpoints), "an openai backend needs endpoints = [URL, ...]"),
                 (self.max_in_flight >= 1, "max_in_flight must be >= 1"),
                 (self.retries >= 0, "retries must be >= 0")], prefix=f"backend {self.model!r}: ")


class Backend:
    """Text for batches of requests, plus the chat template's user-turn opening."""

    name: str
    tokenizer: Tokenizer | None = None

    def generate(self, requests: list[Request]) -> list[str | None]:
        """One text per request, in order; None where the request was refused."""
        raise NotImplementedError

    def user_prefix(self, system: str = "") -> tuple[tuple[int, ...], tuple[str, ...]]:
        """Prompt ids that open a user turn in the model's own template, and the strings that close it."""
        check(self.tokenizer is not None, f"backend {self.name!r} has no tokenizer for template prefixes "
              "(an openai backend takes tokenizer = MODEL_FOLDER)")
        mark = "\x00USER\x00"
        head = [{"role": "system", "content": system}] if system else []
        text = self.tokenizer.render_chat([*head, {"role": "user", "content": mark}])
        before, after = text.split(mark)
        ids = tuple(self.tokenizer.encode(before, add_special_tokens=False))
        return ids, ((after,) if after else ())


class EngineBackend(Backend):
    """Our engine on a model folder, in this process; a batch runs with continuous batching."""

    def __init__(self, name: str, cfg: BackendConfig):
        from ..infer import Engine, EngineConfig

        self.name = name
        self.engine = Engine.from_pretrained(cfg.model, EngineConfig(max_batch=cfg.max_batch), device=cfg.device)
        self.tokenizer = self.engine.require_tokenizer()

    def generate(self, requests: list[Request]) -> list[str | None]:
        base = self.engine.chat_params()
        prompts, params = [], []
        for r in requests:
            ids = (self.engine.encode_chat(list(r.messages)) if r.messages is not None
                   else self.engine.encode_prompt(r.prompt) if isinstance(r.prompt, str) else list(r.prompt))
            prompts.append(ids)
            # Special tokens add no text, so a stop string that is one special token stops by its id.
            special = [self._special_id(s) for s in r.stop]
            params.append(base.replace(
                max_new_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, seed=r.seed,
                stop=tuple(s for s, i in zip(r.stop, special) if i is None),
                stop_token_ids=(*base.stop_token_ids, *(i for i in special if i is not None))))
        # Requests have their own params: queue them all, then step until every one is done.
        ids = [self._add(p, sp) for p, sp in zip(prompts, params)]
        texts = {i: "" for i in ids if i is not None}
        while self.engine.has_unfinished():
            for out in self.engine.step():
                texts[out.request_id] += out.text
        return [None if i is None else texts[i] for i in ids]

    def _add(self, prompt: list[int], params) -> str | None:
        """Queue a request; None if the engine refuses its prompt (too long for the context)."""
        try:
            return self.engine.add_request(prompt, params)
        except UserError:
            return None

    def _special_id(self, text: str) -> int | None:
        """The id of `text` if it is exactly one special token (around whitespace, e.g. '<|im_end|>\\n')."""
        ids = self.tokenizer.encode(text.strip(), add_special_tokens=False)
        return ids[0] if len(ids) == 1 and self.tokenizer.is_special(ids[0]) else None


class RetryableError(Exception):
    """A failure worth retrying (connection, timeout, 429, 5xx)."""


class OpenAIBackend(Backend):
    """OpenAI-compatible endpoints (vLLM, `hunyuan serve`, ...): chat and completions over httpx."""

    def __init__(self, name: str, cfg: BackendConfig):
        import httpx

        self.name, self.cfg = name, cfg
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        limits = httpx.Limits(max_connections=cfg.max_in_flight)
        self.clients = [httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=cfg.timeout, limits=limits)
                        for url in cfg.endpoints]
        self._next = itertools.cycle(range(len(self.clients)))
        self._lock = threading.Lock()
        self.tokenizer = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
        self.attempts = 0  # requests sent, retries included

    def generate(self, requests: list[Request]) -> list[str | None]:
        pool = ThreadPoolExecutor(self.cfg.max_in_flight)
        try:
            return list(pool.map(self._one, requests))
        finally:  # on Ctrl-C, queued requests are dropped rather than sent
            pool.shutdown(wait=False, cancel_futures=True)

    def _one(self, r: Request) -> str | None:
        body = {"model": self.cfg.model, **{k: v for k, v in r.sampling().items() if v is not None and v != []}}
        if r.messages is not None:
            path, body["messages"] = "/chat/completions", list(r.messages)
        else:
            path, body["prompt"] = "/completions", r.prompt if isinstance(r.prompt, str) else list(r.prompt)
        delay = self.cfg.backoff
        for attempt in range(self.cfg.retries + 1):
            with self._lock:
                client = self.clients[next(self._next)]
                self.attempts += 1
            try:
                data = self._post(client, path, body)
                if data is None:
                    return None
                choice = data["choices"][0]
                return choice["message"]["content"] if r.messages is not None else choice["text"]
            except RetryableError as e:
                if attempt == self.cfg.retries:
                    raise UserError(f"backend {self.name!r}: {e} (after {attempt + 1} attempts)") from None
                time.sleep(delay)
                delay *= 2

    @staticmethod
    def _post(client, path: str, body: dict) -> dict | None:
        """The response's JSON; None for a 400 (the request itself is refused, e.g. too long)."""
        import httpx

        try:
            resp = client.post(path, json=body)
        except httpx.TransportError as e:  # connection refused/reset, timeouts
            raise RetryableError(f"{client.base_url}{path}: {type(e).__name__}") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise RetryableError(f"{client.base_url}{path}: HTTP {resp.status_code}")
        if resp.status_code == 400:
            return None
        if resp.status_code != 200:
            raise UserError(f"{client.base_url}{path}: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()


def make_backend(name: str, cfg: BackendConfig) -> Backend:
    """The backend a `[backends.NAME]` table describes."""
    return EngineBackend(name, cfg) if cfg.kind == "engine" else OpenAIBackend(name, cfg)
