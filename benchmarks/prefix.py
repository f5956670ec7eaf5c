"""Shared prompts: n samples of one prompt, and multi-turn chats over one system prompt, with and without sharing.

The `small` preset (fp32, random weights), prompts of random token ids, one engine per variant on the
same model:
- n samples: one request for `--samples` samples (temperature 1, seed s) of a `--prompt`-token
  prompt, which is prefilled once and forked, against the same number of separate requests for that
  prompt with seeds s, s+1, ... (the seeds the samples draw from, so both decode the same tokens) on
  an engine without prefix caching (each request prefills the prompt; batched as the engine batches
  prefills). Wall time for `--new` tokens per sample, a fresh prompt per repeat (so nothing is
  cached across repeats), median of interleaved repeats after a short warm-up.
- chats: `--chats` conversations of `--turns` turns sharing one `--prompt`-token system prompt; a
  turn's prompt is the previous prompt + its answer (`--new` greedy tokens) + a 20-token user
  message. Each turn is sent alone to the engine with prefix caching and to the one without, one
  after the other; time to first token (arrival to the first streamed token) per request, medians.

Usage: python benchmarks/prefix.py [--prompt 1024 --samples 8 --new 16 --chats 2 --turns 3 --repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import add_threads_arg, machine, print_json, print_table, set_up_process
from hunyuan_large import HunyuanForCausalLM, ModelConfig
from hunyuan_large.infer import Engine, EngineConfig, SamplingParams

USER_TOKENS = 20


def ttft(engine: Engine, prompt: list[int], params: SamplingParams) -> tuple[float, list[int]]:
    """Seconds from queueing `prompt` to its first token, and the whole answer."""
    start = time.perf_counter()
    outputs = engine.stream(prompt, params)
    first = next(outputs)
    seconds = time.perf_counter() - start
    return seconds, first.token_ids + [t for out in outputs for t in out.token_ids]


def separate_requests(engine: Engine, prompt: list[int], params: SamplingParams, k: int) -> list[list[int]]:
    """`prompt` as k requests with seeds seed .. seed+k-1, run together; their token ids."""
    ids = [engine.add_request(prompt, params.replace(seed=params.seed + i)) for i in range(k)]
    got: dict[str, list[int]] = {i: [] for i in ids}
    while engine.has_unfinished():
        for out in engine.step():
            got[out.request_id] += out.token_ids
    return [got[i] for i in ids]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=1024, help="tokens of the shared prompt / system prompt")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--new", type=int, default=16, help="new tokens per sample / answer")
    ap.add_argument("--chats", type=int, default=2)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    add_threads_arg(ap)
    args = ap.parse_args()
    set_up_process(args.threads)
    torch.manual_seed(0)
    model = HunyuanForCausalLM(ModelConfig.from_preset("small")).eval()
    vocab = model.config.vocab_size
    max_len = args.prompt + args.turns * (args.new + USER_TOKENS) + 16
    engines = {caching: Engine(model, config=EngineConfig(max_batch=args.samples, max_len=max_len,
                                                          prefix_caching=caching)) for caching in (True, False)}
    gen = torch.Generator().manual_seed(1)
    ids = lambda n: torch.randint(1, vocab, (n,), generator=gen).tolist()  # noqa: E731

    # n samples of one prompt vs separate requests without prefix caching
    sampled = SamplingParams(temperature=1.0, max_new_tokens=args.new, seed=0)
    times: dict[str, list[float]] = {"n": [], "separate": []}
    same = []
    for r in range(args.repeats + 1):  # round 0 warms up on a short prompt
        prompt = ids(args.prompt if r else 64)
        t0 = time.perf_counter()
        forked = [x.token_ids for x in engines[True].generate([prompt], sampled.replace(n=args.samples))]
        t1 = time.perf_counter()
        separate = separate_requests(engines[False], prompt, sampled, args.samples)
        t2 = time.perf_counter()
        times["n"].append(t1 - t0)
        times["separate"].append(t2 - t1)
        same.append(forked == separate)
    t_n, t_sep = (statistics.median(times[k][1:]) for k in ("n", "separate"))

    # multi-turn chats sharing a system prompt: time to first token with and without prefix caching
    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.new)
    system = ids(args.prompt)
    chats = [system + ids(USER_TOKENS) for _ in range(args.chats)]
    first_token: dict[bool, list[float]] = {True: [], False: []}
    queried, hits = engines[True].blocks.queried_tokens, engines[True].blocks.hit_tokens
    for _ in range(args.turns):
        for c, prompt in enumerate(chats):
            for caching in (True, False):
                seconds, answer = ttft(engines[caching], prompt, greedy)
                first_token[caching].append(seconds)
            chats[c] = prompt + answer + ids(USER_TOKENS)
    hit_rate = (engines[True].blocks.hit_tokens - hits) / (engines[True].blocks.queried_tokens - queried)
    ttft_on, ttft_off = statistics.median(first_token[True]), statistics.median(first_token[False])

    print(f"machine: {machine()}")
    print_table(f"small preset, fp32: {args.samples} samples of a {args.prompt}-token prompt, {args.new} new tokens "
                f"each, median of {args.repeats}", ["variant", "seconds", "tokens/s"],
                [[f"n={args.samples} (one prefill, forked)", f"{t_n:.2f}", f"{args.samples * args.new / t_n:.1f}"],
                 [f"{args.samples} requests, no prefix cache", f"{t_sep:.2f}",
                  f"{args.samples * args.new / t_sep:.1f}"]])
    print_table(f"{args.chats} chats x {args.turns} turns sharing a {args.prompt}-token system prompt, "
                f"{args.new}-token answers, one request at a time", ["variant", "median TTFT ms", "max TTFT ms"],
                [["prefix caching", f"{ttft_on * 1e3:.0f}", f"{max(first_token[True]) * 1e3:.0f}"],
                 ["no prefix caching", f"{ttft_off * 1e3:.0f}", f"{max(first_token[False]) * 1e3:.0f}"]])
    print(f"\nsamples and separate requests gave the same tokens: {all(same)}")
    print(f"prefix-cache hit rate over the chats: {hit_rate:.1%}")
    print_json({
        "n_samples_seconds": round(t_n, 3), "separate_seconds": round(t_sep, 3),
        "n_samples_speedup": round(t_sep / t_n, 2), "same_tokens": all(same),
        "ttft_ms": {"prefix_caching": round(ttft_on * 1e3, 1), "no_prefix_caching": round(ttft_off * 1e3, 1)},
        "ttft_speedup": round(ttft_off / ttft_on, 2),
        "prefix_hit_rate": round(hit_rate, 3),
    })


if __name__ == "__main__":
    main()
