"""The OpenAI-compatible HTTP server: FastAPI routes over an AsyncEngine, run by uvicorn.

Routes: POST /v1/completions, POST /v1/chat/completions (both with `n` choices, optionally streamed
as Server-Sent Events ending with `data: [DONE]`), GET /v1/models, GET /v1/models/{id}, GET /health,
GET /metrics (Prometheus text format). With an API key every /v1 route needs `Authorization: Bearer
KEY`; bodies over a size limit get a 413 (http_guard.py). Every bad request is answered with
OpenAI's error JSON and a 4xx status; a client that goes away (mid-stream or while waiting) has its
request aborted, which frees its cache blocks before the
engine's next step.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserError
from .async_engine import AsyncEngine, EngineFailure
from .engine import Engine, EngineConfig
from .http_guard import HTTPGuard
from .metrics import engine_metrics_text
from .protocol import (APIError, ChatRequest, Choice, CompletionRequest, ResponseBuilder, check_length, parse,
                       sampling_params)
from .sampling import SamplingParams

log = logging.getLogger(__name__)
POLL_DISCONNECT_S = 0.5  # how often a waiting non-streamed request checks that its client is still there
MAX_BODY_BYTES = 16 * 2**20  # the default request-body limit: ~4M tokens of text, far past any context


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def _sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def create_app(engine: Engine, model_name: str, api_key: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving `engine` under `model_name` (the engine thread runs while it is up)."""
    runner = AsyncEngine(engine)
    tokenizer = engine.require_tokenizer()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runner.start()
        yield
        runner.stop()

    app = FastAPI(title="hunyuan-large", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    app.add_middleware(HTTPGuard, api_key=api_key, max_body_bytes=max_body_bytes)

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return _error(e)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return _error(APIError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):
        log.exception("request failed")
        return _error(APIError(500, f"internal error: {type(e).__name__}", type="server_error"))

    @app.get("/health")
    async def health():
        return {"status": "ok", **runner.load()}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(engine_metrics_text(engine), media_type="text/plain; version=0.0.4")

    card = {"id": model_name, "object": "model", "created": 0, "owned_by": "hunyuan-large",
            "max_model_len": engine.max_len}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != model_name:
            raise APIError(404, f"The model '{model_id}' does not exist; this server has '{model_name}'.",
                           param="model", code="model_not_found")
        return card

    async def body_of(request: Request, schema):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None
        req = parse(schema, body)
        if req.model != model_name:
            raise APIError(404, f"The model '{req.model}' does not exist; this server has '{model_name}'.",
                           param="model", code="model_not_found")
        return req

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await body_of(request, CompletionRequest)
        if req.echo:
            raise APIError(400, "echo is not supported", param="echo")
        try:
            # in a thread: tokenizing a long prompt must not stall other clients' streams
            prompt = (await asyncio.to_thread(engine.encode_prompt, req.prompt) if isinstance(req.prompt, str)
                      else list(req.prompt))
        except UserError as e:
            raise APIError(400, str(e), param="prompt") from None
        params = sampling_params(req, engine.defaults, req.max_tokens, req.logprobs)
        return await respond(request, "cmpl", prompt, params, req, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = await body_of(request, ChatRequest)
        try:
            prompt = await asyncio.to_thread(
                engine.encode_chat, [{"role": m.role, "content": m.text()} for m in req.messages])
        except UserError as e:
            raise APIError(400, str(e), param="messages") from None
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        params = sampling_params(req, engine.defaults, max_tokens, logprobs)
        params = params if req.ignore_eos else engine.chat_params(params)
        return await respond(request, "chatcmpl", prompt, params, req, chat=True)

    async def respond(request: Request, prefix: str, prompt: list[int], params: SamplingParams, req, chat: bool):
        check_length(len(prompt), params.max_new_tokens, engine.max_len)
        try:
            engine.check_prompt(prompt)
        except UserError as e:
            raise APIError(400, str(e), param="prompt") from None
        try:
            engine.check_samples(len(prompt), params.n)
        except UserError as e:
            raise APIError(400, str(e), param="n") from None
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        builder = ResponseBuilder(request_id, model_name, chat, tokenizer)
        outputs = runner.submit(request_id, prompt, params)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(stream(request_id, outputs, builder, include_usage, params.n),
                                     media_type="text/event-stream")
        return JSONResponse(await collect(request, request_id, outputs, builder, params.n))

    async def collect(request: Request, request_id: str, outputs: asyncio.Queue, builder: ResponseBuilder,
                      n: int) -> dict:
        choices = [Choice(i, "", None, None, 0) for i in range(n)]
        finished = prompt_tokens = 0
        loop = asyncio.get_running_loop()
        next_check = loop.time() + POLL_DISCONNECT_S
        try:
            while finished < n:
                try:
                    item = await asyncio.wait_for(outputs.get(), POLL_DISCONNECT_S)
                except asyncio.TimeoutError:
                    item = None
                # checked on a clock, not only when idle: a busy request yields a token every step
                if loop.time() >= next_check:
                    if await request.is_disconnected():
                        return {}  # nobody to answer; `finally` frees the blocks
                    next_check = loop.time() + POLL_DISCONNECT_S
                if item is None:
                    continue
                if isinstance(item, EngineFailure):
                    raise APIError(500, item.message, type="server_error")
                c = choices[item.index]
                c.text += item.text
                if item.logprobs is not None:
                    c.logprobs = (c.logprobs or []) + item.logprobs
                c.finish_reason, c.completion_tokens = item.finish_reason, item.completion_tokens
                finished += item.finished
                prompt_tokens = item.prompt_tokens
            return builder.full(choices, prompt_tokens)
        finally:
            if finished < n:
                runner.abort(request_id)

    async def stream(request_id: str, outputs: asyncio.Queue, builder: ResponseBuilder, include_usage: bool, n: int):
        finished, completion_tokens, prompt_tokens = 0, [0] * n, 0
        try:
            if builder.chat:
                for index in range(n):
                    yield _sse(builder.chunk(None, include_usage, index))
            while finished < n:
                item = await outputs.get()
                if isinstance(item, EngineFailure):
                    yield _sse(APIError(500, item.message, type="server_error").body())
                    break
                finished += item.finished
                completion_tokens[item.index], prompt_tokens = item.completion_tokens, item.prompt_tokens
                if item.text or item.finished or item.logprobs is not None:
                    yield _sse(builder.chunk(item, include_usage))
            if include_usage and finished == n:
                yield _sse(builder.usage_chunk(prompt_tokens, sum(completion_tokens)))
            yield _sse("[DONE]")
        finally:  # also runs when the client disconnects and the response is cancelled
            if finished < n:
                runner.abort(request_id)

    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one line saying why not (before anything is loaded)."""
    try:
        return socket.create_server((host, port))
    except OSError as e:
        why = "the port is in use (another server?); choose --port" if e.errno == errno.EADDRINUSE else e.strerror
        raise UserError(f"cannot listen on {host}:{port}: {why}") from None


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          config: EngineConfig | None = None, device: str = "auto", dtype: str | None = None,
          model_name: str | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Load a model folder and serve it over HTTP until interrupted."""
    import uvicorn

    sock = listen(host, port)
    engine = Engine.from_pretrained(model, config, device=device, dtype=dtype)
    name = model_name or Path(model).resolve().name
    app = create_app(engine, name, api_key, max_body_bytes)
    cache = engine.cache
    print(f"serving '{name}' on http://{host}:{sock.getsockname()[1]}/v1 ({engine.device}, {engine.dtype}, "
          f"{torch.get_num_threads()} CPU threads, "
          f"{engine.config.max_batch} sequences of up to {engine.max_len} tokens, KV cache {cache.num_blocks} "
          f"blocks of {cache.block_size} tokens ({cache.nbytes / 2**20:.0f} MiB), "
          f"{'API key required' if api_key else 'no API key'})", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
