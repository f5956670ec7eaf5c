"""Server throughput: N concurrent streaming clients vs the same N requests one at a time.

A `small`-preset model folder (random weights; a BPE tokenizer of up to 8k ids trained here on
standard-library sources) is served by `hunyuan serve` in a subprocess on loopback. Each request is
a streamed chat completion of --tokens new tokens through the official `openai` client, with
`ignore_eos` so every request does the same work. The baseline is the same requests sent one after
another to the same server, same run.

Usage: python benchmarks/serve_load.py [--clients 16 --tokens 64 --threads N]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import torch

from common import machine, print_json, print_table
from hunyuan_large import HunyuanForCausalLM, ModelConfig, save_pretrained
from hunyuan_large.data.sources import stdlib_files
from hunyuan_large.tokenizer import HunyuanTokenizer

MODEL = "small"


def make_folder(folder: Path, train_bytes: int = 2 << 20) -> None:
    """The small preset with a tokenizer trained on the first `train_bytes` of stdlib sources."""
    files, size = [], 0
    for path in stdlib_files():
        if size >= train_bytes:
            break
        files.append(path)
        size += path.stat().st_size
    cfg = ModelConfig.from_preset(MODEL)
    tok = HunyuanTokenizer.train(files, vocab_size=cfg.vocab_size)
    torch.manual_seed(0)
    save_pretrained(HunyuanForCausalLM(cfg), folder)
    tok.save(folder)


def start_server(folder: Path, clients: int, threads: int | None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "hunyuan_large", "serve", "--model", str(folder), "--port",
                             str(port), "--served-model-name", MODEL, "--max-batch", str(clients),
                             "--max-len", "1024", *(["--threads", str(threads)] if threads else [])], env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def one_request(base: str, prompt: str, tokens: int) -> tuple[int, float, float]:
    """(completion tokens, seconds to the first token, total seconds) of one streamed chat request."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=600)
    t0 = time.perf_counter()
    first, usage = None, None
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=tokens, temperature=0.0,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
        usage = chunk.usage or usage
    return usage.completion_tokens, first or 0.0, time.perf_counter() - t0


def run(base: str, prompts: list[str], tokens: int, concurrent: bool) -> dict:
    t0 = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(len(prompts)) as pool:
            done = list(pool.map(lambda p: one_request(base, p, tokens), prompts))
    else:
        done = [one_request(base, p, tokens) for p in prompts]
    wall = time.perf_counter() - t0
    total = sum(d[0] for d in done)
    return {"tokens": total, "seconds": wall, "tok_s": total / wall,
            "ttft_ms": 1e3 * statistics.median(d[1] for d in done),
            "latency_s": statistics.median(d[2] for d in done)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    ap.add_argument("--threads", type=int, help="the server's --threads (default: the server's own)")
    args = ap.parse_args()
    prompts = [f"Request {i}: explain how a dictionary lookup works in Python, step by step." * (1 + i % 3)
               for i in range(args.clients)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / MODEL
        make_folder(folder)
        proc, base = start_server(folder, args.clients, args.threads)
        try:
            one_request(base, prompts[0], 4)  # warm-up
            seq = run(base, prompts, args.tokens, concurrent=False)
            par = run(base, prompts, args.tokens, concurrent=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    gain = par["tok_s"] / seq["tok_s"]
    print(f"machine: {machine()}")
    rows = [[name, r["tokens"], f"{r['seconds']:.1f}", f"{r['tok_s']:.1f}", f"{r['ttft_ms']:.0f}",
             f"{r['latency_s']:.2f}"] for name, r in (("one at a time", seq), (f"{args.clients} concurrent", par))]
    print_table(f"`hunyuan serve`, {MODEL} preset fp32, {args.clients} streamed chat requests x {args.tokens} "
                f"new tokens", ["clients", "tokens", "wall s", "tokens/s", "median TTFT ms", "median latency s"],
                rows)
    print(f"\nconcurrency gain: {gain:.2f}x")
    print_json({"sequential_tok_s": round(seq["tok_s"], 1), "concurrent_tok_s": round(par["tok_s"], 1),
                "clients": args.clients, "gain": round(gain, 2)})


if __name__ == "__main__":
    main()
