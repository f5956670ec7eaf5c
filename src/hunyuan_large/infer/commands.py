"""`hunyuan generate`, `hunyuan chat` and `hunyuan serve`: argument parsing for the inference commands."""

from __future__ import annotations

import argparse
import os

import torch

from ..errors import UserError
from ..runtime import parse_size, tune_cpu_allocator

API_KEY_ENV = "HUNYUAN_API_KEY"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the generate, chat and serve subcommands to the `hunyuan` parser."""
    p = sub.add_parser("generate", help="continue a prompt with a model folder (streams the text)")
    p.add_argument("--model", required=True, help="a model folder with its tokenizer")
    p.add_argument("prompt", help="the text to continue")
    _engine_args(p, max_batch=1)
    _sampling_args(p, max_new_tokens=128)
    p.set_defaults(func=_generate)

    p = sub.add_parser("chat", help="chat in the terminal with the Instruct template (streams replies)")
    p.add_argument("--model", required=True, help="a model folder with its tokenizer")
    p.add_argument("--system", help="a system prompt")
    _engine_args(p, max_batch=1)
    _sampling_args(p, max_new_tokens=None)
    p.set_defaults(func=_chat)

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (completions, chat, streaming)")
    p.add_argument("--model", required=True, help="a model folder with its tokenizer")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes "
                                     f"(default: ${API_KEY_ENV} if set; on a shared machine prefer it)")
    p.add_argument("--max-request-size", default="16MB", help="largest request body accepted (default 16MB)")
    p.add_argument("--served-model-name", help="the model id clients send (default: the folder name)")
    _engine_args(p, max_batch=16)
    p.set_defaults(func=_serve)


def _engine_args(p: argparse.ArgumentParser, max_batch: int) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="weights dtype (default: float32 on CPU, the config's torch_dtype on GPU)")
    g.add_argument("--max-batch", type=int, default=max_batch, help="sequences decoded together")
    g.add_argument("--max-len", type=int, help="tokens per sequence (default: the model's context)")
    g.add_argument("--cache-memory", help="KV cache budget, e.g. 2GB (default: a share of free memory)")
    g.add_argument("--block-size", type=int, default=16, help="tokens per KV-cache block")
    g.add_argument("--num-blocks", type=int, help="KV-cache blocks (default: what --cache-memory holds)")
    g.add_argument("--no-prefix-caching", action="store_true", help="do not share cached prompt blocks")
    g.add_argument("--prefill-chunk", type=int, default=512,
                   help="prompt tokens prefilled per step: a longer prompt arrives in chunks between other "
                        "streams' tokens (default 512; 0: whole prompts at once)")
    g.add_argument("--threads", type=int, help="CPU intra-op threads (default: torch's; serve: all cores "
                                              "but one, left to the HTTP event loop)")


def _sampling_args(p: argparse.ArgumentParser, max_new_tokens: int | None) -> None:
    g = p.add_argument_group("sampling (defaults: the model folder's generation_config.json)")
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--repetition-penalty", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--greedy", action="store_true", help="temperature 0")
    g.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")


def _runtime(args: argparse.Namespace, serving: bool = False):
    """Apply --threads and the CPU allocator tuning; return the EngineConfig the arguments describe."""
    from .engine import EngineConfig

    threads = args.threads
    if threads is None and serving:
        threads = max(1, torch.get_num_threads() - 1)
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    tune_cpu_allocator()
    if args.max_batch < 1:
        raise UserError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.max_len is not None and args.max_len < 2:
        raise UserError(f"--max-len must be >= 2, got {args.max_len}")
    if args.block_size < 1 or (args.num_blocks is not None and args.num_blocks < 1):
        raise UserError(f"--block-size and --num-blocks must be >= 1, got {args.block_size} and {args.num_blocks}")
    if args.prefill_chunk < 0:
        raise UserError(f"--prefill-chunk must be >= 0 (0: whole prompts at once), got {args.prefill_chunk}")
    return EngineConfig(max_batch=args.max_batch, max_len=args.max_len,
                        cache_memory=parse_size(args.cache_memory) if args.cache_memory else None,
                        block_size=args.block_size, num_blocks=args.num_blocks,
                        prefix_caching=not args.no_prefix_caching, prefill_chunk=args.prefill_chunk)


def _engine(args: argparse.Namespace):
    from .engine import Engine

    config = _runtime(args)
    engine = Engine.from_pretrained(args.model, config, device=args.device, dtype=args.dtype)
    engine.require_tokenizer()
    return engine


def _params(args: argparse.Namespace, defaults):
    changes = {k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_k", "top_p",
                                             "repetition_penalty", "seed") if getattr(args, k) is not None}
    if args.greedy:
        changes["temperature"] = 0.0
    if args.stop:
        changes["stop"] = tuple(args.stop)
    return defaults.replace(**changes)


def _generate(args: argparse.Namespace) -> None:
    from .interactive import generate

    engine = _engine(args)
    generate(engine, args.prompt, _params(args, engine.defaults))


def _chat(args: argparse.Namespace) -> None:
    from .interactive import chat

    engine = _engine(args)
    chat(engine, _params(args, engine.defaults), system=args.system)


def _serve(args: argparse.Namespace) -> None:
    from .server import serve

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    if api_key is not None and not api_key.strip():
        raise UserError("the API key is empty; give a real key, or none to serve without one")
    max_body = parse_size(args.max_request_size)
    if max_body < 1024:
        raise UserError(f"--max-request-size must be at least 1KB, got {args.max_request_size}")
    config = _runtime(args, serving=True)
    serve(args.model, host=args.host, port=args.port, api_key=api_key, config=config,
          device=args.device, dtype=args.dtype, model_name=args.served_model_name, max_body_bytes=max_body)
