"""One DPO step of the `small` preset: tokens/s and MFU, and the online sampler's tokens/s.

A step is what `hunyuan dpo` runs per micro-batch: one forward of the chosen and rejected rows
(right-padded prompt + response), the DPO + NLL loss against precomputed reference log-probs,
backward, AdamW and the EMA update. MFU = FLOPs per token (accounting.py, training, at this
length) x tokens/s / the measured peak GEMM (fp32 on CPU, bf16 on CUDA, where the step runs under
bf16 autocast). Sampling: the engine decodes `--samples` responses of `--new-tokens` for each
prompt of the batch in one batch, from a copy of the policy (as online rounds do).

Usage: python benchmarks/dpo_step.py [--pairs 4 --prompt-len 128 --response-len 128 --repeats 3 --device auto]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time

import torch

from common import machine, print_json, print_table, time_interleaved
from hunyuan_large import HunyuanForCausalLM, ModelConfig
from hunyuan_large.accounting import flops_per_token
from hunyuan_large.infer.engine import Engine, EngineConfig
from hunyuan_large.infer.sampling import SamplingParams
from hunyuan_large.posttrain.config import PostTrainSection
from hunyuan_large.posttrain.dpo import pair_logps
from hunyuan_large.posttrain.dpo_loss import dpo_terms
from hunyuan_large.posttrain.ema import PolicyWithEMA
from hunyuan_large.posttrain.packing import Example, pad_rows
from hunyuan_large.runtime import resolve_device, tune_cpu_allocator
from hunyuan_large.train.mfu import measure_peak_flops
from hunyuan_large.train.optim import build_optimizer


def random_side(cfg: ModelConfig, prompt: int, response: int, gen: torch.Generator) -> Example:
    ids = torch.randint(3, cfg.vocab_size, (prompt + response,), generator=gen).tolist()
    return Example(ids[:-1], [-100] * (prompt - 1) + ids[prompt:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--response-len", type=int, default=128)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    tune_cpu_allocator()
    device = resolve_device(args.device)
    cfg = ModelConfig.from_preset("small", torch_dtype="float32")
    cfg.set_routing_policy("dropless")
    torch.manual_seed(0)
    policy = HunyuanForCausalLM(cfg).to(device).train()
    both = PolicyWithEMA(policy, 0.99)
    opt = build_optimizer(policy, PostTrainSection(lr=1e-6), 1.0)
    gen = torch.Generator().manual_seed(0)
    sides = [random_side(cfg, args.prompt_len, args.response_len, gen) for _ in range(2 * args.pairs)]
    rows = pad_rows(sides, 0).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        ref = pair_logps(policy, rows)[0].float()
    rc, rr = ref.chunk(2)

    def step() -> None:
        with autocast:
            logps, counts, aux = pair_logps(policy, rows)
        (pc, pr), (nc, nr) = logps.chunk(2), counts.chunk(2)
        loss = dpo_terms(pc, pr, rc, rr, nc, nr, 0.1, 0.2).loss + 0.01 * aux
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        both.update()
        if device.type == "cuda":
            torch.cuda.synchronize()

    peak = measure_peak_flops(device, seconds=1.0)
    sec = time_interleaved({"dpo": step}, args.repeats, warmup=2)["dpo"]
    seq = args.prompt_len + args.response_len - 1
    tokens = 2 * args.pairs * seq
    fpt = flops_per_token(cfg, seq)
    tps = tokens / sec
    mfu = tps * fpt / peak

    engine = Engine(copy.deepcopy(policy), None, config=EngineConfig(max_batch=args.pairs * args.samples,
                                                                     max_len=args.prompt_len + args.new_tokens))
    prompts = [s.inputs[: args.prompt_len] for s in sides[: args.pairs]]
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, seed=0)
    engine.generate(prompts[:1], params.replace(max_new_tokens=2))  # warm up
    t0 = time.perf_counter()
    results = engine.generate([p for p in prompts for _ in range(args.samples)], params)
    sample_s = time.perf_counter() - t0
    sampled = sum(len(r.token_ids) for r in results)
    print(f"machine: {machine()}")
    print(f"model: small preset, {fpt / 1e6:.1f} MFLOP/token (training, seq {seq}); peak {peak / 1e9:.1f} GFLOP/s")
    print_table(f"DPO step (fwd + bwd of {2 * args.pairs} rows x {seq}, AdamW, EMA), median of {args.repeats}",
                ["ms/step", "tokens/s", "MFU", "sampled tokens/s"],
                [[f"{sec * 1e3:.0f}", f"{tps:,.0f}", f"{mfu:.1%}", f"{sampled / sample_s:,.0f}"]])
    print_json({"tokens_per_s": round(tps, 1), "mfu": round(mfu, 4), "sample_tokens_per_s": round(sampled / sample_s, 1),
                "sampled_tokens": sampled, "peak_gflops": round(peak / 1e9, 1), "device": str(device)})


if __name__ == "__main__":
    main()
