"""Long prompts: chunked prefill vs one-shot prefill, time, peak memory, and a running stream's stalls.

A small model (the `tiny` preset with a long context, fp32, random weights, 2 layers with CLA: one
K/V-owning layer) and prompts of random token ids. Every case runs in a fresh subprocess, so that
its peak memory is its own:
- prefill: one prompt of L tokens through the engine (first token only), with `prefill_chunk` =
  `--chunk` and with 0 (one shot). Wall time, and peak extra memory: on CPU the peak resident set
  (VmHWM, reset by writing 5 to /proc/self/clear_refs) above the resident set before the prompt,
  with the engine built, its KV cache written and a short prompt run once; on CUDA the peak
  allocated bytes above the allocated bytes before the prompt.
- stall: a stream decodes (16-token prompt) while an L-token prompt arrives; the stream's worst
  gap between two tokens from the arrival until the long prompt's first token, with and without
  chunking (one-shot: one step holds the whole prefill; chunked: one chunk per step).

Usage: python benchmarks/long_prefill.py [--lengths 4k,16k,64k --chunk 512 --stall-length 16k --threads N]
(on a machine shared with other jobs, --threads 1: many small ops wait at OpenMP barriers otherwise)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from common import add_threads_arg, machine, print_json, print_table, set_up_process
from hunyuan_large import HunyuanForCausalLM, ModelConfig
from hunyuan_large.infer import Engine, EngineConfig, SamplingParams

STREAM_PROMPT = 16
GREEDY = SamplingParams(temperature=0.0)


def build_engine(context: int, chunk: int, max_batch: int, device: str) -> Engine:
    """The benchmark's model (seed 0) in an engine holding `max_batch` sequences of `context` tokens."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", num_hidden_layers=2, max_position_embeddings=context)
    model = HunyuanForCausalLM(cfg).to(device).eval()
    return Engine(model, config=EngineConfig(max_batch=max_batch, max_len=context, prefill_chunk=chunk,
                                             num_blocks=max_batch * -(-context // 16)))


def prompt(n: int, seed: int) -> list[int]:
    return torch.randint(3, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def memory_now(device: str) -> int:
    """Bytes in use now, and the peak counter reset to it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    return _status_kib("VmRSS") * 1024


def memory_peak(device: str) -> int:
    """Peak bytes since the last `memory_now`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _status_kib("VmHWM") * 1024


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def case_prefill(length: int, chunk: int, device: str) -> dict:
    """Seconds and peak extra bytes of prefilling one `length`-token prompt."""
    engine = build_engine(length + 16, chunk, 1, device)
    engine.generate([prompt(256, 1)], GREEDY.replace(max_new_tokens=2))  # warm-up
    engine.cache.k.add_(0), engine.cache.v.add_(0)  # the whole cache resident: it is not extra
    long = prompt(length, 2)
    base = memory_now(device)
    t0 = time.perf_counter()
    engine.generate([long], GREEDY.replace(max_new_tokens=1))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "extra_bytes": memory_peak(device) - base}


def case_stall(length: int, chunk: int, device: str) -> dict:
    """A stream's worst and median inter-token gap while a `length`-token prompt is prefilled."""
    engine = build_engine(length + 16, chunk, 2, device)
    steps = -(-length // chunk) if chunk else 1
    engine.add_request(prompt(STREAM_PROMPT, 1), GREEDY.replace(max_new_tokens=steps + 24), request_id="stream")
    times, first_long = [], None
    for i in range(steps + 16):
        if i == 8:
            engine.add_request(prompt(length, 2), GREEDY.replace(max_new_tokens=1), request_id="long")
            arrival = time.perf_counter()
        outs = engine.step()
        now = time.perf_counter()
        if any(o.request_id == "stream" and o.token_ids for o in outs):
            times.append(now)
        if first_long is None and any(o.request_id == "long" for o in outs):
            first_long = now
    window = [t for t in times if arrival <= t <= first_long]
    gaps = [b - a for a, b in zip(times, times[1:]) if b >= arrival and a <= first_long]
    steady = sorted(b - a for a, b in zip(times[:8], times[1:8]))
    return {"worst_gap": max(gaps), "median_gap_before": steady[len(steady) // 2], "tokens_during": len(window),
            "ttft_long": first_long - arrival}


def run_case(kind: str, length: int, chunk: int, args) -> dict:
    """One case in a fresh interpreter; its JSON result."""
    cmd = [sys.executable, __file__, "--case", kind, "--lengths", str(length), "--chunk", str(chunk),
           "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def parse_lengths(text: str) -> list[int]:
    return [int(float(x[:-1]) * 1024) if x.lower().endswith("k") else int(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="4k,16k,64k", help="prompt lengths in tokens (4k = 4096)")
    ap.add_argument("--chunk", type=int, default=512, help="prefill_chunk of the chunked runs")
    ap.add_argument("--stall-length", default="16k", help="the long prompt of the stall measurement")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--case", choices=["prefill", "stall"], help=argparse.SUPPRESS)  # one subprocess case
    add_threads_arg(ap)
    args = ap.parse_args()
    set_up_process(args.threads)
    lengths = parse_lengths(args.lengths)
    if args.case:
        fn = case_prefill if args.case == "prefill" else case_stall
        print(json.dumps(fn(lengths[0], args.chunk, args.device)))
        return

    print(f"machine: {machine()}")
    rows, results = [], {}
    for length in lengths:
        for chunk in (args.chunk, 0):
            results[length, chunk] = r = run_case("prefill", length, chunk, args)
            print(f"  prefill {length} tokens, chunk {chunk or 'none'}: {r['seconds']:.1f} s, "
                  f"{r['extra_bytes'] / 2**20:.0f} MiB extra", file=sys.stderr)
        c, o = results[length, args.chunk], results[length, 0]
        rows.append([length, f"{o['seconds']:.2f}", f"{c['seconds']:.2f}", f"{o['extra_bytes'] / 2**20:.0f}",
                     f"{c['extra_bytes'] / 2**20:.0f}", f"{c['extra_bytes'] / o['extra_bytes']:.3f}"])
    print_table(f"prefill of one prompt, chunk {args.chunk} vs one shot (tiny preset, 2 layers, {args.device})",
                ["tokens", "one-shot s", "chunked s", "one-shot MiB", "chunked MiB", "mem ratio"], rows)

    stall_len = parse_lengths(args.stall_length)[0]
    stall = {chunk: run_case("stall", stall_len, chunk, args) for chunk in (args.chunk, 0)}
    print_table(f"a decoding stream while a {stall_len}-token prompt arrives",
                ["prefill", "worst gap ms", "median gap before ms", "stream tokens meanwhile", "long TTFT s"],
                [[f"chunk {c}" if c else "one shot", f"{s['worst_gap'] * 1e3:.1f}",
                  f"{s['median_gap_before'] * 1e3:.1f}", s["tokens_during"], f"{s['ttft_long']:.2f}"]
                 for c, s in stall.items()])
    longest = lengths[-1]
    print_json({
        "peak_mem_ratio": round(results[longest, args.chunk]["extra_bytes"] / results[longest, 0]["extra_bytes"], 4),
        "stall_ratio": round(stall[args.chunk]["worst_gap"] / stall[0]["worst_gap"], 4),
        "longest": longest, "chunk": args.chunk, "stall_length": stall_len,
        "prefill_seconds": {str(k[0]) + ("_chunked" if k[1] else "_one_shot"): round(v["seconds"], 3)
                            for k, v in results.items()},
    })


if __name__ == "__main__":
    main()
