"""Evaluation throughput: our lm-eval model vs lm-eval's own `hf` backend (transformers), same weights.

Model: the `small` preset with CLA off, random weights from one seed; transformers'
`hunyuan_v1_moe` holds the same weights (decode.hf_twin; it renormalises top-1 routing weights,
which changes its numbers but not its cost).
Workloads, identical token ids for both backends (requests are compared at the token level, the
level both share, so tokenizers play no part):
- log-likelihood: multiple-choice shaped, `--docs` contexts of 64-192 tokens with four
  continuations of 1-4 tokens each, through each backend's `_loglikelihood_tokens`;
- generation: `--prompts` prompts of 64 tokens, `--new` greedy tokens each; ours through the
  engine (continuous batching, `batch_size` slots), theirs through `HFLM._model_generate` in
  batches of `batch_size` (what its `generate_until` runs per batch).
Both use `--batch-size`. Medians of interleaved repeats.

Usage: python benchmarks/eval.py [--docs 32 --prompts 16 --new 32 --batch-size 16 --repeats 3 --threads N]
"""

from __future__ import annotations

import argparse

import torch

from common import add_threads_arg, machine, print_json, print_table, set_up_process, time_interleaved
from decode import hf_twin
from hunyuan_large import HunyuanForCausalLM, ModelConfig
from hunyuan_large.eval.lm import HunyuanLM
from hunyuan_large.infer import SamplingParams
from hunyuan_large.tokenizer import HunyuanTokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=32, help="multiple-choice documents (4 requests each)")
    ap.add_argument("--prompts", type=int, default=16, help="generation prompts")
    ap.add_argument("--new", type=int, default=32, help="new tokens per prompt")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    add_threads_arg(ap)
    args = ap.parse_args()
    set_up_process(args.threads)
    from lm_eval.models.huggingface import HFLM
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = HunyuanForCausalLM(ModelConfig.from_preset("small", use_cla=False)).eval()
    hf = hf_twin(model)  # copies the weights before our engine puts `model` in its decode layout
    V, B = model.config.vocab_size, args.batch_size
    # Our adapter needs a tokenizer object (unused by token-level requests): bytes + specials fit V.
    ours = HunyuanLM(model=model, tokenizer=HunyuanTokenizer({bytes([i]): i for i in range(256)}), batch_size=B,
                     max_length=512)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({f"t{i}": i for i in range(V)},
                                                                                 unk_token="t0")),
                                     pad_token="t0")
    theirs = HFLM(pretrained=hf, tokenizer=hf_tok, batch_size=B, max_length=512)

    gen = torch.Generator().manual_seed(1)
    reqs = []
    for _ in range(args.docs):
        context = torch.randint(3, V, (int(torch.randint(64, 193, (1,), generator=gen)),), generator=gen).tolist()
        reqs += [((None, None), context, torch.randint(3, V, (int(torch.randint(1, 5, (1,), generator=gen)),),
                                                       generator=gen).tolist()) for _ in range(4)]
    prompts = torch.randint(3, V, (args.prompts, 64), generator=gen)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.new)

    def hf_generate():
        with torch.inference_mode():
            for i in range(0, len(prompts), B):
                chunk = prompts[i: i + B]
                out = theirs._model_generate(chunk, max_length=chunk.shape[1] + args.new, stop=[], do_sample=False,
                                             attention_mask=torch.ones_like(chunk))
                assert out.shape[1] == chunk.shape[1] + args.new

    fns = {
        "ours/loglikelihood": lambda: ours._loglikelihood_tokens(reqs, disable_tqdm=True),
        "hf/loglikelihood": lambda: theirs._loglikelihood_tokens(reqs, disable_tqdm=True),
        "ours/generate": lambda: ours.engine.generate(prompts.tolist(), greedy),
        "hf/generate": hf_generate,
    }
    t = time_interleaved(fns, repeats=args.repeats)
    ll = {k: len(reqs) / t[f"{k}/loglikelihood"] for k in ("ours", "hf")}
    tok_s = {k: args.prompts * args.new / t[f"{k}/generate"] for k in ("ours", "hf")}
    print(f"machine: {machine()}")
    print_table(f"small preset (CLA off), fp32, batch size {B}: {len(reqs)} log-likelihood requests "
                f"({args.docs} four-way documents), {args.prompts} prompts x {args.new} greedy tokens; "
                f"median of {args.repeats} interleaved",
                ["backend", "log-likelihood req/s", "generated tok/s"],
                [[k, f"{ll[k]:.1f}", f"{tok_s[k]:.1f}"] for k in ("ours", "hf")])
    print_json({"loglikelihood_req_per_s": {k: round(v, 2) for k, v in ll.items()},
                "generate_tok_per_s": {k: round(v, 2) for k, v in tok_s.items()},
                "vs_hf_loglikelihood": round(ll["ours"] / ll["hf"], 3),
                "vs_hf_generate": round(tok_s["ours"] / tok_s["hf"], 3)})


if __name__ == "__main__":
    main()
