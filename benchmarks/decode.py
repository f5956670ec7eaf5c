"""Prefill and decode throughput of our engine vs Hugging Face transformers' `generate`, same weights.

Variants (the `small` preset, fp32, random weights from one seed):
- ours: the package's Engine with CLA off, so that HF's `hunyuan_v1_moe` (which has no CLA) holds
  exactly the same weights (mapped from our state dict);
- ours+cla: the `small` preset as is (CLA factor 2): half the K/V projections and cache;
- hf: transformers `HunYuanMoEV1ForCausalLM.generate`, greedy, same prompts and lengths. HF
  renormalises top-1 routing weights (the release does not), so its tokens differ from ours;
  irrelevant for speed, as both run one routed expert per token.

Method: t(n) = wall time to generate n new tokens for B prompts of P tokens, prefill included.
Prefill tokens/s = B*P / t(1); decode tokens/s = B*(n-1) / (t(n) - t(1)). Medians of interleaved
repeats. GB/s = bytes one decode step reads (attention, norms, router, shared expert, the distinct
experts the batch selects (counted by hooks), LM head, embedding rows, plus the K/V cache at the
mean context) / decode step time, against the copy bandwidth of a 256 MiB tensor (STREAM
convention: bytes read + written per second).

With --model DIR the same comparison runs on a model folder's weights: ours vs transformers'
LlamaForCausalLM for a dense folder (e.g. one made by `hunyuan import`), or vs hunyuan_v1_moe for a
MoE folder without CLA.

Usage: python benchmarks/decode.py [--model DIR] [--prompt 128 --new 64 --batches 1,8 --repeats 5 --threads N]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from common import add_threads_arg, machine, print_json, print_table, set_up_process, time_interleaved
from hunyuan_large import HunyuanForCausalLM, ModelConfig, load_pretrained
from hunyuan_large.accounting import kv_cache_bytes_per_token
from hunyuan_large.infer import Engine, EngineConfig, SamplingParams
from hunyuan_large.model.moe import MoE


def llama_twin(model: HunyuanForCausalLM) -> nn.Module:
    """transformers' LlamaForCausalLM with a dense model's weights (an imported Llama); names coincide."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.config
    rope = dict(cfg.rope_scaling or {})
    assert not cfg.use_cla and not cfg.use_qk_norm and "rope_type" in rope, "not a Llama-shaped folder"
    lc = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings, pad_token_id=None,
        bos_token_id=None, eos_token_id=None, rope_parameters={**rope, "rope_theta": cfg.rope_theta},
    )
    hf = LlamaForCausalLM(lc).eval()
    hf.load_state_dict(model.state_dict(), strict=True)
    return hf


def hf_twin(model: HunyuanForCausalLM) -> nn.Module:
    """transformers' model with our model's weights: Llama for a dense model, else hunyuan_v1_moe (CLA off)."""
    from transformers import HunYuanMoEV1Config, HunYuanMoEV1ForCausalLM

    cfg = model.config
    if not cfg.is_moe:
        return llama_twin(model)
    assert not cfg.use_cla and cfg.rope_base == cfg.rope_theta
    hc = HunYuanMoEV1Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, num_experts=cfg.num_experts,
        moe_topk=cfg.moe_topk, max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
        tie_word_embeddings=cfg.tie_word_embeddings, pad_token_id=0, bos_token_id=None, eos_token_id=None,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
    )
    hf = HunYuanMoEV1ForCausalLM(hc).eval()
    hf.load_state_dict(model.state_dict(), strict=True)
    return hf


def copy_bandwidth(nbytes: int = 256 << 20) -> float:
    """Bytes read + written per second copying one large tensor into another (median of 10)."""
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    t = time_interleaved({"copy": lambda: dst.copy_(src)}, repeats=10, warmup=2)["copy"]
    return 2 * nbytes / t


@torch.inference_mode()
def distinct_experts_per_step(engine: Engine, prompts: list[list[int]], new: int) -> list[float]:
    """Per MoE layer, the mean number of distinct routed experts one decode step runs (hooks on the routers)."""
    routers = [m.gate for m in engine.model.modules() if isinstance(m, MoE)]
    counts: list[list[int]] = [[] for _ in routers]
    k = engine.model.config.moe_topk

    def hook(i):
        def record(module, args, logits):
            if logits.shape[0] == len(prompts):  # decode steps only (one token per row)
                counts[i].append(logits.topk(k, dim=-1).indices.unique().numel())
        return record

    handles = [r.register_forward_hook(hook(i)) for i, r in enumerate(routers)]
    try:
        engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=new))
    finally:
        for h in handles:
            h.remove()
    return [statistics.mean(c) for c in counts]


def decode_step_bytes(model: HunyuanForCausalLM, batch: int, context: float, experts: list[float]) -> float:
    """Bytes one decode step must read: the weights it uses and the K/V cache of `batch` rows."""
    cfg = model.config
    size = lambda p: p.numel() * p.element_size()  # noqa: E731
    total = 0.0
    moe_layers = iter(experts)
    for layer in model.model.layers:
        total += sum(size(p) for p in layer.self_attn.parameters())
        total += size(layer.input_layernorm.weight) + size(layer.post_attention_layernorm.weight)
        mlp = layer.mlp
        if isinstance(mlp, MoE):
            total += size(mlp.gate.wg.weight) + sum(size(p) for p in mlp.shared_mlp.parameters())
            per_expert = (size(mlp.experts.gate_up_proj) + size(mlp.experts.down_proj)) / cfg.num_experts
            total += next(moe_layers) * per_expert
        else:
            total += sum(size(p) for p in mlp.parameters())
    total += size(model.model.norm.weight) + size(model.lm_head.weight)
    total += batch * cfg.hidden_size * model.lm_head.weight.element_size()  # embedding rows
    total += batch * context * kv_cache_bytes_per_token(cfg, model.lm_head.weight.element_size())["as_built"]
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a model folder to measure instead of the random `small` preset")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens per sequence")
    ap.add_argument("--new", type=int, default=64, help="new tokens per sequence")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    add_threads_arg(ap)
    args = ap.parse_args()
    set_up_process(args.threads)
    torch.manual_seed(0)
    if args.model:
        base, cla = load_pretrained(args.model, device="cpu"), None
    else:
        base = HunyuanForCausalLM(ModelConfig.from_preset("small", use_cla=False)).eval()
        torch.manual_seed(0)
        cla = HunyuanForCausalLM(ModelConfig.from_preset("small")).eval()
    hf = hf_twin(base)  # before the engine puts `base` in its decode layout
    batches = [int(b) for b in args.batches.split(",")]
    max_len = args.prompt + args.new
    # Prefix caching off: the repeats send the same prompts, whose prefill this measures.
    engines = {name: Engine(m, config=EngineConfig(max_batch=max(batches), max_len=max_len, prefix_caching=False))
               for name, m in (("ours", base), ("ours+cla", cla)) if m is not None}
    copy_bw = copy_bandwidth()
    gen = torch.Generator().manual_seed(1)
    results: dict[str, dict[str, float]] = {name: {} for name in (*engines, "hf")}
    rows = []
    for B in batches:
        prompts = torch.randint(1, base.config.vocab_size, (B, args.prompt), generator=gen)
        lists = prompts.tolist()

        def ours(engine, n):
            return lambda: engine.generate(lists, SamplingParams(temperature=0.0, max_new_tokens=n))

        def theirs(n):
            def run():
                with torch.inference_mode():
                    hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n,
                                min_new_tokens=n, do_sample=False)
            return run

        fns = {}
        for n in (1, args.new):
            fns |= {f"{name}/{n}": ours(e, n) for name, e in engines.items()}
            fns[f"hf/{n}"] = theirs(n)
        t = time_interleaved(fns, repeats=args.repeats)
        # HF runs our (CLA-off) weights; its routing differs only by renormalised top-1 weights.
        experts = {name: distinct_experts_per_step(e, lists, 8) for name, e in engines.items()}
        experts["hf"] = experts["ours"]
        for name in results:
            t1, tn = t[f"{name}/1"], t[f"{name}/{args.new}"]
            step = (tn - t1) / (args.new - 1)
            model = cla if name == "ours+cla" else base
            gbps = decode_step_bytes(model, B, args.prompt + args.new / 2, experts[name]) / step / 1e9
            results[name] |= {f"prefill_b{B}": B * args.prompt / t1, f"decode_b{B}": B / step, f"gbps_b{B}": gbps}
            rows.append([name, B, f"{B * args.prompt / t1:.0f}", f"{B / step:.1f}", f"{step * 1e3:.2f}",
                         f"{gbps:.1f}", f"{100 * gbps * 1e9 / copy_bw:.0f}%"])
    print(f"machine: {machine()}")
    print(f"copy bandwidth (read + write): {copy_bw / 1e9:.1f} GB/s")
    print_table(f"{args.model or 'small preset'}, fp32: prompt {args.prompt} tokens, {args.new} new tokens, greedy, "
                f"median of {args.repeats} interleaved", ["variant", "batch", "prefill tok/s", "decode tok/s",
                                                           "ms/step", "GB/s", "of copy BW"], rows)
    b0 = batches[0]
    ratio = results["ours"][f"decode_b{b0}"] / results["hf"][f"decode_b{b0}"]
    print(f"\ndecode at batch {b0}: ours / hf = {ratio:.2f}x")
    print_json({
        "tokens_per_s": {k: {m: round(v, 1) for m, v in r.items() if not m.startswith("gbps")}
                         for k, r in results.items()},
        "gbps": {k: {m: round(v, 2) for m, v in r.items() if m.startswith("gbps")} for k, r in results.items()},
        "copy_gbps": round(copy_bw / 1e9, 2),
        "vs_hf": round(ratio, 3),
        "roofline_share_b1": round(results["ours"][f"gbps_b{b0}"] * 1e9 / copy_bw, 3),
    })


if __name__ == "__main__":
    main()
