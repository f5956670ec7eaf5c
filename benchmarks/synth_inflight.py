"""`hunyuan synth`'s endpoint backend: records/s with 8 requests in flight vs one at a time.

A model folder is served by `hunyuan serve` in a subprocess on loopback; the same seeded chat
requests (the respond step's shape) go through OpenAIBackend with max_in_flight = 1, then 8.

Usage: python benchmarks/synth_inflight.py --model DIR [--requests 32 --tokens 32 --threads N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import machine, print_json, print_table
from serve_load import start_server

from hunyuan_large.synth.backends import BackendConfig, OpenAIBackend, Request


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a model folder with a tokenizer")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="the server's torch threads")
    args = ap.parse_args()
    proc, base = start_server(Path(args.model), 8, args.threads)
    try:
        reqs = [Request(messages=({"role": "user", "content": f"Write a short note about the number {i}."},),
                        max_tokens=args.tokens, temperature=0.7, seed=i) for i in range(args.requests)]
        rows, out = [], {"machine": machine(), "requests": args.requests, "max_tokens": args.tokens}
        for in_flight in (1, 8):
            backend = OpenAIBackend("bench", BackendConfig(kind="openai", model="small", endpoints=[f"{base}/v1"],
                                                           max_in_flight=in_flight))
            backend.generate(reqs[:2])  # warm-up
            t = time.perf_counter()
            texts = backend.generate(reqs)
            dt = time.perf_counter() - t
            out[f"records_per_s_{in_flight}"] = len(texts) / dt
            rows.append([in_flight, f"{dt:.1f}", f"{len(texts) / dt:.2f}"])
        out["speedup"] = out["records_per_s_8"] / out["records_per_s_1"]
        print_table("synth endpoint backend vs hunyuan serve", ["in flight", "s", "records/s"], rows)
        print(f"speedup: {out['speedup']:.2f}x")
        print_json(out)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
